"""The soak's oracle: what the model says each planned request goes through.

A plan says how a request's consumer behaves (read to the end; stop, kill or
drop after some chunks; stop or kill before reading anything) against an
engine that yields a fixed number of tokens and, once it sees the request
stopped, a ``cancelled`` terminal, in some plans only after one more token (a
late engine: in decode this is the first token a deferred abort waits for).  :func:`predict` replays that behaviour
through a fresh model machine, step by step: the model alone decides whether
the stream is still read and how many times ``engine.abort`` is called.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from dynamo_backend_protocol.model import (
    ActionKind,
    ControlState,
    Event,
    EventKind,
    FinishReason,
    Mode,
    RequestMachine,
    event,
)

FATES = ("complete", "stop", "kill", "drop", "stop_before_first_token", "kill_before_first_token")
MODES = (Mode.AGGREGATED, Mode.DECODE)
BEFORE_READING = {"stop_before_first_token": "stop", "kill_before_first_token": "kill"}
AFTER_READING = {"stop": "stop", "kill": "kill", "drop": "drop"}

_TOKEN = event(EventKind.TOKEN_CHUNK)
_CANCELLED = event(EventKind.TERMINAL, FinishReason.CANCELLED)
_FINISHED = event(EventKind.TERMINAL, FinishReason.STOP)
_EXHAUSTED = event(EventKind.END)
_CONSUMER_EVENTS = {"stop": event(EventKind.STOP), "kill": event(EventKind.KILL), "drop": event(EventKind.DROP)}


@dataclass(frozen=True, slots=True)
class Plan:
    request: str
    mode: Mode
    fate: str
    after: int
    """Chunks the consumer reads before it stops, kills or drops (fates that do so)."""
    late: int
    """Tokens the engine still yields after it sees the request stopped."""


@dataclass(frozen=True, slots=True)
class Prediction:
    events: tuple[str, ...]
    aborts: int


def plan_requests(count: int, seed: int, tokens: int) -> list[Plan]:
    rng = random.Random(seed)
    return [
        Plan(f"soak-{number}", rng.choice(MODES), rng.choice(FATES), rng.randint(1, tokens), rng.choice((0, 1)))
        for number in range(count)
    ]


def predict(plan: Plan, tokens: int) -> Prediction:
    """The request's events and abort calls, as the model decides them."""
    machine = RequestMachine(plan.mode)
    aborts = 0
    reading = True

    def fire(ev: Event) -> None:
        nonlocal aborts, reading
        actions = machine.fire(ev)
        aborts += actions.count(ActionKind.CALL_ABORT)
        if ActionKind.STOP_READING in actions or machine.state.control is ControlState.DONE:
            reading = False

    fire(event(EventKind.SETUP))
    stopped = plan.fate in BEFORE_READING
    if stopped:
        fire(_CONSUMER_EVENTS[BEFORE_READING[plan.fate]])
    produced = 0
    late = plan.late
    finished = False
    while reading:
        if finished:
            fire(_EXHAUSTED)
        elif produced == tokens or (stopped and not late):
            fire(_FINISHED if produced == tokens else _CANCELLED)
            finished = True
        else:
            if stopped:
                late -= 1
            produced += 1
            fire(_TOKEN)
            if reading and produced == plan.after and plan.fate in AFTER_READING:
                signal = AFTER_READING[plan.fate]
                stopped = signal != "drop"
                fire(_CONSUMER_EVENTS[signal])
    return Prediction(tuple(step.event.name for step in machine.history), aborts)
