"""What a client of an older release sees instead of what the model predicts.

The release differences themselves are data in
:mod:`dynamo_backend_protocol.model.releases`.  Two of them change what a
client observes of a play; here each is paired with the plays it touches and
the outcome it turns the model's prediction into, so ``differential`` can
report a run on an older release as "as released" rather than as a
divergence.  The engine-side observables (aborts, the generator's end, the
context's flags) are never changed here: those are the same on every release.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.model.releases import (
    DECODE_STOP_BEFORE_SEND,
    MID_STREAM_ERROR_KIND,
    Release,
    ReleaseDifference,
)
from dynamo_backend_protocol.reference.differential.plays import ClientEnd, Item, Outcome, Play

TYPED_ERROR_KIND = "InvalidArgument"
"""The kind the scripted engine raises mid-stream, as the model names the error item."""
UNTYPED_ERROR_KIND = "ValueError"
"""What the client receives instead, up to 1.5.1."""


@dataclass(frozen=True)
class ReleasedEffect:
    difference: ReleaseDifference
    applies: Callable[[Play], bool]
    outcome: Callable[[Play, Outcome], Outcome]
    """The outcome an older release gives where the model predicts ``Outcome``."""


def stops_before_sending(play: Play) -> bool:
    return any(step.after_items < 0 and step.op == "stop" for step in play.client)


def _has_error_item(play: Play) -> bool:
    return any(item.error == TYPED_ERROR_KIND for item in play.forwarded)


def _untyped_error(play: Play, outcome: Outcome) -> Outcome:
    items = tuple(Item(error=UNTYPED_ERROR_KIND) if item.error == TYPED_ERROR_KIND else item for item in outcome.items)
    return replace(outcome, items=items)


def _decode_stop_before_send(play: Play) -> bool:
    return play.mode is Mode.DECODE and stops_before_sending(play)


def _client_receives_everything(play: Play, outcome: Outcome) -> Outcome:
    """The stop did not end the client's stream: it receives every forwarded item."""
    items = play.forwarded
    end: ClientEnd = "no_terminal"
    if items and items[-1].finish is not None:
        end = "terminal"
    elif items and items[-1].error is not None:
        end = "error"
    return replace(outcome, items=items, client_end=end)


EFFECTS: tuple[ReleasedEffect, ...] = (
    ReleasedEffect(MID_STREAM_ERROR_KIND, _has_error_item, _untyped_error),
    ReleasedEffect(DECODE_STOP_BEFORE_SEND, _decode_stop_before_send, _client_receives_everything),
)


def as_released(play: Play, release: Release) -> tuple[tuple[Outcome, ...], tuple[ReleaseDifference, ...]]:
    """The outcomes ``release`` gives for ``play``, and the release differences that changed them
    (none: the model's own outcomes)."""
    allowed = play.allowed
    applied: list[ReleaseDifference] = []
    for effect in EFFECTS:
        if effect.difference.applies_before(release) and effect.applies(play):
            allowed = tuple(effect.outcome(play, outcome) for outcome in allowed)
            applied.append(effect.difference)
    return allowed, tuple(applied)
