"""From a model event sequence to a play: the engine's script, the client's script, the model's prediction.

The ordering of a play is fixed by gates, never by sleeps: the client acts
only after it has received the items the model says were forwarded before
its action, and the engine, at the point where the client acts, waits until
its context shows the stop or kill, then (when the model's step called
abort) until abort has reached it.  So the outcome the model predicts is the
only one the scenario allows; a gate that times out is itself a divergence.

A client of the real runtime can only stop its request or go away, so the
scenarios' ``kill`` and ``drop`` are played as the client going away, the
model's ``disconnect`` event (rule RUNTIME-DISCONNECT-KILLS).  A scenario
that leaves the engine's stream open gets the ending an engine gives a
cancelled request (a token-less ``cancelled`` terminal), since a stream in
the real runtime lasts until the engine ends it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from dynamo_backend_protocol.model import (
    DEFAULT_TABLE,
    ActionKind,
    CompiledTable,
    Event,
    EventKind,
    FinishReason,
    Mode,
    RequestMachine,
    StreamEnd,
    event,
)
from dynamo_backend_protocol.model.exceptions import ProtocolError

EngineOp = Literal["notify", "fail_setup", "yield", "probe", "raise", "end", "await_cancel", "await_abort"]
"""``probe`` yields a token chunk, again and again (bounded), until the context shows a kill."""
ClientOp = Literal["stop", "disconnect"]
Ending = Literal["closed", "completed", "raised", "none"]
"""How the engine's generator ended: closed by the adapter, ran off its end,
raised its planned error, or never existed (setup failed)."""
ClientEnd = Literal["terminal", "error", "setup_error", "no_terminal", "left"]

PLANNED_ERROR = "differential: planned mid-stream error"
PLANNED_SETUP_ERROR = "differential: planned setup failure"

_CLIENT_LEAVES = frozenset({EventKind.KILL, EventKind.DROP, EventKind.DISCONNECT})
_DISCONNECT = event(EventKind.DISCONNECT)
_CANCELLED_TERMINAL = event(EventKind.TERMINAL, FinishReason.CANCELLED)


@dataclass(frozen=True)
class EngineStep:
    op: EngineOp
    tokens: tuple[int, ...] = ()
    finish: str | None = None
    killed: bool = False
    """For ``await_cancel``: wait for a kill, not just a stop."""

    def as_json(self) -> dict[str, Any]:
        return {"op": self.op, "tokens": list(self.tokens), "finish": self.finish, "killed": self.killed}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EngineStep:
        return cls(data["op"], tuple(data["tokens"]), data["finish"], data["killed"])


@dataclass(frozen=True)
class ClientStep:
    op: ClientOp
    after_items: int
    """Act once this many items have arrived; -1 (a stop only) means before the request is sent."""


@dataclass(frozen=True)
class Item:
    """One item as a client sees it: a chunk's tokens and finish reason, or an error's kind."""

    tokens: tuple[int, ...] = ()
    finish: str | None = None
    error: str | None = None

    def text(self) -> str:
        if self.error is not None:
            return f"error:{self.error}"
        return f"{list(self.tokens)}{'/' + self.finish if self.finish else ''}"


@dataclass(frozen=True)
class Outcome:
    """What one side produced (or the model predicts), in the terms both sides can observe."""

    items: tuple[Item, ...]
    client_end: ClientEnd
    aborts: tuple[bool, ...]
    """One entry per engine.abort call: whether first-token had reached the adapter."""
    ending: frozenset[Ending]
    """The generator endings allowed (a prediction) or seen (one, for a side)."""
    stopped: bool
    killed: bool
    gate_timeouts: tuple[str, ...] = ()

    def brief(self) -> str:
        """One line: what the client got, the aborts, the generator's end, the context flags."""
        aborts = ", ".join("after first-token" if after else "before first-token" for after in self.aborts)
        return (
            f"client {' '.join(item.text() for item in self.items) or '(nothing)'} then {self.client_end}; "
            f"abort {aborts or 'never'}; generator {'/'.join(sorted(self.ending))}; "
            f"stopped={self.stopped} killed={self.killed}"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "items": [item.text() for item in self.items],
            "client_end": self.client_end,
            "aborts": ["after first-token" if after else "before first-token" for after in self.aborts],
            "generator": sorted(self.ending),
            "stopped": self.stopped,
            "killed": self.killed,
            "gate_timeouts": list(self.gate_timeouts),
        }


@dataclass(frozen=True)
class Play:
    name: str
    mode: Mode
    events: tuple[Event, ...]
    """The model events as played (after the runtime's translation)."""
    setup: tuple[EngineStep, ...]
    stream: tuple[EngineStep, ...]
    client: tuple[ClientStep, ...]
    allowed: tuple[Outcome, ...]
    """The outcomes the model allows, the race-free one first."""
    rules: tuple[str, ...] = field(default=())
    """The rules the model applied, in order."""
    forwarded: tuple[Item, ...] = field(default=())
    """Every item the model forwards, including those after the client's stop or leave
    that the client no longer sees."""

    @property
    def predicted(self) -> Outcome:
        return self.allowed[0]

    def script(self) -> dict[str, Any]:
        """The engine's script as JSON, carried in the request's ``extra_args``."""
        return {
            "play": self.name,
            "setup": [step.as_json() for step in self.setup],
            "stream": [step.as_json() for step in self.stream],
        }


class NotPlayable(ProtocolError, ValueError):
    """An event sequence that a client and an engine cannot act out in the real runtime."""


def played_events(events: Sequence[Event]) -> tuple[Event | None, ...]:
    """The events as the real runtime lets them happen; ``None`` marks where the client leaves.

    A client that leaves is heard by the worker only when the worker next
    sends it an item (RUNTIME-DISCONNECT-KILLS), so the engine yields one
    token chunk, which is never delivered, and the ``disconnect`` follows it.
    A client that already stopped has no stream left to drop.  Nothing the
    client does after leaving reaches the worker, and a stream still open at
    the end is ended by the engine's cancelled terminal.
    """
    played: list[Event | None] = []
    left = stopped = False
    rest = list(events)
    while rest:
        ev = rest.pop(0)
        if ev.kind in _CLIENT_LEAVES:
            if left or stopped:
                # Gone already, or its stream already ended at its stop: dropping it tells the worker nothing.
                continue
            left = True
            played += [None, _UNDELIVERED, _DISCONNECT]
        elif ev.kind is EventKind.STOP and left:
            continue
        else:
            stopped = stopped or ev.kind is EventKind.STOP
            played.append(ev)
    kinds = {ev.kind for ev in played if ev is not None}
    if EventKind.SETUP_FAILED not in kinds and not kinds & _ENGINE_ENDINGS:
        played.append(_CANCELLED_TERMINAL)
    return tuple(played)


_ENGINE_ENDINGS = frozenset({EventKind.TERMINAL, EventKind.ERROR, EventKind.END})
AFTER_TERMINAL: frozenset[Ending] = frozenset({"closed", "completed"})
"""After a terminal the protocol forwards nothing more (STREAM-TERMINAL-LAST); whether the engine's
generator is then closed (our adapter) or resumed to its end (Dynamo's Python bridge) is not the
protocol's to say, so both are allowed."""
_ENDINGS: dict[StreamEnd, frozenset[Ending]] = {
    StreamEnd.TERMINAL: AFTER_TERMINAL,
    StreamEnd.DROPPED: AFTER_TERMINAL,
    StreamEnd.ERROR: frozenset({"raised"}),
    StreamEnd.EXHAUSTED: frozenset({"completed"}),
}
_UNDELIVERED = event(EventKind.TOKEN_CHUNK)


def make_play(name: str, events: Sequence[Event], mode: Mode, table: CompiledTable = DEFAULT_TABLE) -> Play:
    """The play of ``events`` in ``mode``, with the outcome ``table`` predicts."""
    played = played_events(events)
    machine = RequestMachine(mode, table)
    setup: list[EngineStep] = []
    stream: list[EngineStep] = []
    client: list[ClientStep] = []
    items: list[Item] = []
    aborts: list[bool] = []
    visible: int | None = None
    """Items the client sees: all forwarded, up to its own stop or disconnect."""
    set_up = False
    probing = False
    engine_first_token = False
    """Whether the engine has yielded tokens or sent the notice (what it can know, in any mode)."""
    next_token = 1
    ending: frozenset[Ending] = frozenset({"none"})
    client_end: ClientEnd = "terminal"
    for ev in played:
        steps = stream if set_up else setup
        if ev is None:
            if not set_up:
                raise NotPlayable(f"{name}: a client cannot leave a request it has not sent")
            client.append(ClientStep("disconnect", len(items)))
            visible = len(items)
            probing = True
            continue
        if ev.kind is EventKind.SETUP:
            set_up = True
        elif ev.kind is EventKind.SETUP_FAILED:
            setup.append(EngineStep("fail_setup"))
        elif ev.kind is EventKind.FIRST_TOKEN_NOTICE:
            steps.append(EngineStep("notify"))
        elif ev.kind is EventKind.STOP:
            if visible is not None:
                raise NotPlayable(f"{name}: the client acts again after it stopped or left")
            client.append(ClientStep("stop", len(items) if set_up else -1))
            visible = len(items)
            if set_up:
                stream.append(EngineStep("await_cancel"))
        elif ev.kind is EventKind.DISCONNECT:
            pass  # the probe before it waited until the kill was visible
        elif probing:
            # The token chunks the worker sends until it hears that the client left.
            probing = False
            stream.append(EngineStep("probe", (next_token,)))
            next_token += 1
        elif ev.kind in (EventKind.TOKEN_CHUNK, EventKind.EMPTY_CHUNK, EventKind.TERMINAL):
            if not set_up:
                raise NotPlayable(f"{name}: an engine item before setup")
            tokens: tuple[int, ...] = ()
            if ev.kind is EventKind.TOKEN_CHUNK or ev.with_tokens:
                tokens = (next_token,)
                next_token += 1
            finish = None if ev.finish_reason is None else ev.finish_reason.value
            stream.append(EngineStep("yield", tokens, finish))
        elif ev.kind is EventKind.ERROR:
            stream.append(EngineStep("raise"))
        elif ev.kind is EventKind.END:
            stream.append(EngineStep("end"))
        else:
            raise NotPlayable(f"{name}: event {ev.name} has no player")
        engine_first_token = engine_first_token or ev.signals_first_token
        step_actions = machine.fire(ev)
        for action in step_actions:
            if action is ActionKind.CALL_ABORT:
                aborts.append(engine_first_token)
            elif action is ActionKind.FORWARD_DATA:
                last = stream[-1]
                items.append(Item(last.tokens, last.finish))
            elif action is ActionKind.FORWARD_ERROR:
                items.append(Item(error="InvalidArgument"))
        owes_gate = ActionKind.CALL_ABORT in step_actions and not ev.ends_stream
        if owes_gate and (set_up or ev.kind is EventKind.SETUP):
            stream.append(EngineStep("await_abort"))
    state = machine.state
    ended = state.ended
    if ended is StreamEnd.SETUP_FAILED:
        client_end = "setup_error"
    else:
        ending = _ENDINGS[ended] if ended is not None else AFTER_TERMINAL
        if visible is not None:
            client_end = "left" if client and client[-1].op == "disconnect" else "no_terminal"
        elif ended is StreamEnd.ERROR:
            client_end = "error"
        elif ended is StreamEnd.EXHAUSTED:
            client_end = "no_terminal"
    shown = items if visible is None else items[:visible]
    predicted = Outcome(
        items=tuple(shown),
        client_end=client_end,
        aborts=tuple(aborts),
        ending=ending,
        stopped=state.cancel is not None,
        killed=state.cancel is not None and state.cancel.value == "kill",
    )
    rules = tuple(step.rule for step in machine.history)
    model_events = tuple(ev for ev in played if ev is not None)
    allowed = (predicted, *_dropped_after_stop(predicted, model_events, mode, table))
    return Play(name, mode, model_events, tuple(setup), tuple(stream), tuple(client), allowed, rules, tuple(items))


def _dropped_after_stop(
    predicted: Outcome, events: tuple[Event, ...], mode: Mode, table: CompiledTable
) -> list[Outcome]:
    """The outcomes where the worker's response stream goes away after a client stop or leave.

    A client that stops receives nothing more: its stream ends at once, so
    the worker's next send to it fails and the worker's response stream goes
    away, a ``drop`` at a moment the worker does not choose; a client that
    left is gone the same way once its kill was heard.  Each item after that
    may be the one whose send fails.  What the adapter then does is
    the request table's (in decode before first-token, DECODE-DROP: no abort);
    Dynamo's Python bridge still drives the engine's generator to its end.
    """
    stops = [index for index, ev in enumerate(events) if ev.kind in (EventKind.STOP, EventKind.DISCONNECT)]
    setups = [index for index, ev in enumerate(events) if ev.kind is EventKind.SETUP]
    if not stops or not setups:
        return []
    first = max(stops[0], setups[0]) + 1
    variants = []
    for cut in range(first, len(events)):
        if events[cut].kind not in _ENGINE_ITEMS:
            continue
        machine = RequestMachine(mode, table)
        aborts: list[bool] = []
        first_token = False
        for ev in (*events[:cut], _DROP):
            first_token = first_token or ev.signals_first_token
            aborts += [first_token] * machine.fire(ev).count(ActionKind.CALL_ABORT)
        variant = replace(predicted, aborts=tuple(aborts), ending=predicted.ending | AFTER_TERMINAL)
        if variant not in variants and variant != predicted:
            variants.append(variant)
    return variants


_DROP = event(EventKind.DROP)
_ENGINE_ITEMS = frozenset({EventKind.TOKEN_CHUNK, EventKind.EMPTY_CHUNK, EventKind.TERMINAL, EventKind.ERROR,
                           EventKind.END, EventKind.FIRST_TOKEN_NOTICE})
