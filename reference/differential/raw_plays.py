"""Plays for the raw engine adapter: the raw machine's event sequences as scripts and predictions.

The same scripted engine and client play them (the objects a raw engine
yields are the scripted engine's chunk dicts: any JSON object will do), so
the only new thing is the prediction, which the raw machine in
:mod:`dynamo_backend_protocol.model.raw_engine` makes.  A client can stop
(before sending, or after some objects) or leave (a kill, heard when the
worker next sends: RUNTIME-DISCONNECT-KILLS).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.model.raw_engine import RAW_TABLE, RawAction, RawEvent, RawMachine, RawPhase, RawTransition
from dynamo_backend_protocol.reference.differential.plays import (
    AFTER_TERMINAL,
    ClientEnd,
    ClientStep,
    Ending,
    EngineStep,
    Item,
    Outcome,
    Play,
)

ClientMove = Literal["stop", "leave"]
RawScript = Sequence[RawEvent | ClientMove]

RAW_SCENARIOS: dict[str, tuple[RawEvent | ClientMove, ...]] = {
    "raw-clean": (RawEvent.SETUP, RawEvent.OBJECT, RawEvent.OBJECT, RawEvent.END),
    "raw-nothing-yielded": (RawEvent.SETUP, RawEvent.END),
    "raw-stop": (RawEvent.SETUP, RawEvent.OBJECT, "stop", RawEvent.OBJECT, RawEvent.END),
    "raw-stop-before-send": ("stop", RawEvent.SETUP, RawEvent.OBJECT, RawEvent.END),
    "raw-client-leaves": (RawEvent.SETUP, RawEvent.OBJECT, "leave", RawEvent.END),
    "raw-mid-stream-error": (RawEvent.SETUP, RawEvent.OBJECT, RawEvent.ERROR),
    "raw-setup-failure": (RawEvent.SETUP_FAILED,),
}
"""Each rule of section 15.2 in one play: RAW-FORWARD, RAW-END-IS-TERMINAL, RAW-ABORT-IMMEDIATE
(a stop, a stop before sending, a client that leaves), RAW-SETUP-FAILURE, and an error item."""


def make_raw_play(name: str, script: RawScript, table: tuple[RawTransition, ...] = RAW_TABLE) -> Play:
    """The play of ``script`` through the raw adapter, with the outcome ``table`` predicts."""
    machine = RawMachine(table)
    setup: list[EngineStep] = []
    stream: list[EngineStep] = []
    client: list[ClientStep] = []
    forwarded: list[Item] = []
    aborts: list[bool] = []
    visible: int | None = None
    yielded = False
    killed = False
    next_object = 1
    for move in script:
        set_up = machine.state.phase is not RawPhase.IDLE
        if move == "stop":
            client.append(ClientStep("stop", len(forwarded) if set_up else -1))
            visible = len(forwarded)
            if set_up:
                stream.append(EngineStep("await_cancel"))
            ev = RawEvent.STOP
        elif move == "leave":
            client.append(ClientStep("disconnect", len(forwarded)))
            visible = len(forwarded)
            # The worker hears the client left when a send fails: objects until the kill shows.
            stream.append(EngineStep("probe", (next_object,)))
            next_object += 1
            yielded = True
            killed = True
            ev = RawEvent.KILL
        else:
            ev = move
            if ev is RawEvent.SETUP_FAILED:
                setup.append(EngineStep("fail_setup"))
            elif ev is RawEvent.OBJECT:
                stream.append(EngineStep("yield", (next_object,)))
                next_object += 1
            elif ev is RawEvent.ERROR:
                stream.append(EngineStep("raise"))
            elif ev is RawEvent.END:
                stream.append(EngineStep("end"))
        actions = machine.fire(ev)
        for action in actions:
            if action is RawAction.CALL_ABORT:
                aborts.append(yielded)
                # The engine goes on only once the abort reached it, so the play's order is fixed.
                stream.append(EngineStep("await_abort"))
            elif action is RawAction.FORWARD_OBJECT:
                forwarded.append(Item(stream[-1].tokens))
                yielded = True
            elif action is RawAction.FORWARD_ERROR:
                forwarded.append(Item(error="InvalidArgument"))
    state = machine.state
    ending: frozenset[Ending]
    client_end: ClientEnd
    last = machine.history[-1].event if machine.history else None
    if last is RawEvent.SETUP_FAILED:
        client_end, ending = "setup_error", frozenset({"none"})
    elif last is RawEvent.ERROR:
        client_end, ending = "error", frozenset({"raised"})
    else:
        client_end, ending = "no_terminal", frozenset({"completed"})
    if visible is not None:
        client_end = "left" if client[-1].op == "disconnect" else "no_terminal"
        # The client's stream is gone: the worker's next send fails and may close the generator.
        ending = ending | AFTER_TERMINAL
    shown = tuple(forwarded if visible is None else forwarded[:visible])
    predicted = Outcome(shown, client_end, tuple(aborts), ending, state.cancelled, killed)
    rules = tuple(step.rule for step in machine.history)
    return Play(name, Mode.AGGREGATED, (), tuple(setup), tuple(stream), tuple(client), (predicted,), rules,
                tuple(forwarded))


def raw_plays(table: tuple[RawTransition, ...] = RAW_TABLE) -> list[Play]:
    return [make_raw_play(name, script, table) for name, script in RAW_SCENARIOS.items()]
