"""The protocol's invariants, each a named predicate tagged with its rule ID.

State invariants look at one reachable state; step invariants look at one
transition (state before, event, actions, state after).  They judge from the
event and the actions, never from the row that produced them, so they catch a
faulty table instead of repeating it.  ``DONE-REACHABLE`` is a property of the
whole reachable graph and is checked by the explorer; the liveness properties
(runs that never end) are in :mod:`.liveness`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Generic, TypeAlias, TypeVar

from dynamo_backend_protocol.model.machine import Step
from dynamo_backend_protocol.model.state import RequestState
from dynamo_backend_protocol.model.vocabulary import (
    ENGINE_STREAM_KINDS,
    FORWARDS,
    ActionKind,
    ControlState,
    EventKind,
    FinishReason,
    Mode,
    StreamEnd,
)

X = TypeVar("X")


@dataclass(frozen=True)
class Invariant(Generic[X]):
    """A named predicate on states or steps, tagged with the rule it enforces."""

    rule: str
    name: str
    holds: Callable[[X], bool]


LIVE = frozenset({ControlState.STREAMING, ControlState.CANCEL_PENDING, ControlState.ABORTED})
_CHUNK_KINDS = frozenset({EventKind.TOKEN_CHUNK, EventKind.EMPTY_CHUNK, EventKind.TERMINAL})
_SETUP_KINDS = frozenset({EventKind.SETUP, EventKind.SETUP_FAILED})

SPEC_ACTION_ORDER: tuple[ActionKind, ...] = (
    ActionKind.CALL_ABORT,
    ActionKind.FORWARD_DATA,
    ActionKind.FORWARD_ERROR,
    ActionKind.RETURN_SETUP_ERROR,
    ActionKind.STOP_READING,
    ActionKind.RELEASE_WATCH,
)
"""The order of section 5 of the spec, in which one step's actions are performed."""

_STREAM_END_OF: dict[EventKind, StreamEnd] = {
    EventKind.TERMINAL: StreamEnd.TERMINAL,
    EventKind.ERROR: StreamEnd.ERROR,
    EventKind.END: StreamEnd.EXHAUSTED,
    EventKind.DROP: StreamEnd.DROPPED,
    EventKind.SETUP_FAILED: StreamEnd.SETUP_FAILED,
}
"""How the stream ended, by the kind of event that ended it."""


StateInvariant: TypeAlias = Invariant[RequestState]
StepInvariant: TypeAlias = Invariant[Step]


STATE_INVARIANTS: list[StateInvariant] = []
STEP_INVARIANTS: list[StepInvariant] = []


def state_invariant(rule: str) -> Callable[[Callable[[RequestState], bool]], Callable[[RequestState], bool]]:
    def register(fn: Callable[[RequestState], bool]) -> Callable[[RequestState], bool]:
        STATE_INVARIANTS.append(StateInvariant(rule, fn.__name__, fn))
        return fn

    return register


def step_invariant(rule: str) -> Callable[[Callable[[Step], bool]], Callable[[Step], bool]]:
    def register(fn: Callable[[Step], bool]) -> Callable[[Step], bool]:
        STEP_INVARIANTS.append(StepInvariant(rule, fn.__name__, fn))
        return fn

    return register


def _deferred(state: RequestState) -> bool:
    """Decode, live, cancellation observed, first-token not yet seen, no abort yet."""
    return (
        state.mode is Mode.DECODE
        and state.control in LIVE
        and state.cancel is not None
        and not state.first_token
        and state.aborts == 0
    )


@state_invariant("ABORT-ONCE")
def abort_at_most_once(state: RequestState) -> bool:
    return state.aborts <= 1


@step_invariant("ABORT-ONCE")
def aborts_counted_from_actions_at_most_one(step: Step) -> bool:
    """Counted from the actions themselves, so a step whose abort the state does not record is still seen."""
    performed = step.actions.count(ActionKind.CALL_ABORT)
    return step.after.aborts == step.before.aborts + performed and step.after.aborts <= 1


@step_invariant("ABORT-NEEDS-CANCEL")
def abort_only_after_cancellation(step: Step) -> bool:
    if ActionKind.CALL_ABORT not in step.actions:
        return True
    return step.after.cancel is not None and step.before.ended is None


@state_invariant("ABORT-IMMEDIATE")
def abort_at_once_unless_deferred(state: RequestState) -> bool:
    """A live, cancelled request has been aborted unless decode mode is still waiting for first-token."""
    if state.cancel is None or state.control not in LIVE:
        return True
    return state.aborts >= 1 or (state.mode is Mode.DECODE and not state.first_token)


@step_invariant("DECODE-DEFER")
def decode_no_abort_before_first_token(step: Step) -> bool:
    if step.before.mode is not Mode.DECODE or ActionKind.CALL_ABORT not in step.actions:
        return True
    return step.before.first_token or step.event.signals_first_token


@step_invariant("DECODE-DEFER")
def decode_first_token_releases_deferred_abort(step: Step) -> bool:
    if not _deferred(step.before) or step.event.ends_stream or not step.event.signals_first_token:
        return True
    return ActionKind.CALL_ABORT in step.actions


@step_invariant("DECODE-FIRST-TOKEN")
def first_token_only_from_tokens_or_notice(step: Step) -> bool:
    if step.before.first_token or not step.after.first_token:
        return True
    return step.event.signals_first_token


@step_invariant("DECODE-FIRST-TOKEN")
def first_token_noted_on_every_signal(step: Step) -> bool:
    """The converse of the rule above: a first-token signal on a request that is not over is never missed."""
    before, ev = step.before, step.event
    if before.first_token or before.control is ControlState.DONE or not ev.signals_first_token:
        return True
    if ev.kind is EventKind.FIRST_TOKEN_NOTICE:
        # The notice is a decode-mode signal; elsewhere it is ignored.
        return step.after.first_token == (before.mode is Mode.DECODE)
    return step.after.first_token or before.control not in LIVE


@step_invariant("DECODE-DROP")
def deferred_abort_dropped_when_stream_ends_first(step: Step) -> bool:
    if not _deferred(step.before) or not step.event.ends_stream or step.event.signals_first_token:
        return True
    return ActionKind.CALL_ABORT not in step.actions


@step_invariant("DECODE-TIE")
def same_step_first_token_and_end_aborts(step: Step) -> bool:
    if not _deferred(step.before) or not step.event.ends_stream or not step.event.signals_first_token:
        return True
    return step.actions.count(ActionKind.CALL_ABORT) == 1


@step_invariant("STREAM-TERMINAL-LAST")
def nothing_forwarded_after_terminal(step: Step) -> bool:
    if step.before.ended is None:
        return True
    return not any(a in FORWARDS for a in step.actions)


@step_invariant("STREAM-TERMINAL-LAST")
def terminal_stops_reading(step: Step) -> bool:
    if step.before.control not in LIVE or step.event.kind not in (EventKind.TERMINAL, EventKind.ERROR):
        return True
    return ActionKind.STOP_READING in step.actions and step.after.control is ControlState.DONE


@step_invariant("STREAM-TERMINAL-LAST")
def reading_stops_only_at_the_end(step: Step) -> bool:
    """Reading stops when a terminal, an error or a drop ends a live request, and at no other time:
    stopping earlier would lose the items still to come."""
    stops = step.actions.count(ActionKind.STOP_READING)
    ends_reading = (
        step.before.control in LIVE
        and step.event.kind in (EventKind.TERMINAL, EventKind.ERROR, EventKind.DROP)
    )
    return stops == (1 if ends_reading else 0)


@step_invariant("STREAM-FORWARD-ORDER")
def every_item_forwarded_once(step: Step) -> bool:
    data = step.actions.count(ActionKind.FORWARD_DATA)
    errors = step.actions.count(ActionKind.FORWARD_ERROR)
    if step.before.control in LIVE and step.event.kind in _CHUNK_KINDS:
        return data == 1 and errors == 0
    if step.before.control in LIVE and step.event.kind is EventKind.ERROR:
        return data == 0 and errors == 1
    return data == 0 and errors == 0


@step_invariant("STREAM-CANCELLED-TERMINAL")
def cancelled_terminal_forwarded(step: Step) -> bool:
    ev = step.event
    if ev.kind is not EventKind.TERMINAL or ev.finish_reason is not FinishReason.CANCELLED:
        return True
    if step.before.control not in LIVE or step.before.cancel is None:
        return True
    return ActionKind.FORWARD_DATA in step.actions


@step_invariant("STREAM-SETUP-FAILURE")
def setup_failure_returns_error_only(step: Step) -> bool:
    if step.event.kind is not EventKind.SETUP_FAILED:
        return ActionKind.RETURN_SETUP_ERROR not in step.actions
    return step.actions == (ActionKind.RETURN_SETUP_ERROR,)


@state_invariant("STREAM-SETUP-FAILURE")
def setup_failure_leaves_nothing(state: RequestState) -> bool:
    if state.ended is not StreamEnd.SETUP_FAILED:
        return True
    return state.aborts == 0 and not state.forwarded and not state.watching


@state_invariant("WATCH-RELEASED")
def watch_held_exactly_while_live(state: RequestState) -> bool:
    return state.watching == (state.control in LIVE)


@step_invariant("WATCH-RELEASED")
def watch_released_once_as_the_request_ends(step: Step) -> bool:
    """Judged from the action, which a step that does not track the watch could perform unseen."""
    releases = step.actions.count(ActionKind.RELEASE_WATCH)
    ends_live = step.before.control in LIVE and step.after.control is ControlState.DONE
    return releases == (1 if ends_live else 0)


@step_invariant("DONE-ABSORBING")
def done_is_absorbing(step: Step) -> bool:
    if step.before.control is not ControlState.DONE:
        return True
    return step.after is step.before and not step.actions


@step_invariant("STREAM-SETUP")
def setup_starts_the_watch(step: Step) -> bool:
    if step.event.kind is not EventKind.SETUP:
        return True
    return step.before.control is ControlState.IDLE and step.after.watching


@step_invariant("STREAM-EVENT-ORDER")
def engine_items_only_on_a_live_stream(step: Step) -> bool:
    """Refused, not ignored: a step for an engine item before the stream exists must not exist at all."""
    return step.event.kind not in ENGINE_STREAM_KINDS or step.before.control is not ControlState.IDLE


@step_invariant("STREAM-EVENT-ORDER")
def setup_only_first(step: Step) -> bool:
    return step.event.kind not in _SETUP_KINDS or step.before.control is ControlState.IDLE


@step_invariant("STREAM-EVENT-ORDER")
def drop_only_once_the_stream_exists(step: Step) -> bool:
    return step.event.kind is not EventKind.DROP or step.before.control is not ControlState.IDLE


@step_invariant("STREAM-TERMINAL-LAST")
def engine_items_refused_after_done(step: Step) -> bool:
    return step.event.kind not in ENGINE_STREAM_KINDS or step.before.control is not ControlState.DONE


@step_invariant("STREAM-END-WITHOUT-TERMINAL")
def stream_end_invents_nothing(step: Step) -> bool:
    if step.event.kind is not EventKind.END or step.before.control not in LIVE:
        return True
    return step.after.control is ControlState.DONE and not any(a in FORWARDS for a in step.actions)


@step_invariant("CANCEL-OBSERVED")
def cancellation_recorded_once(step: Step) -> bool:
    if step.before.cancel is not None:
        return step.after.cancel is step.before.cancel
    if step.event.kind in (EventKind.STOP, EventKind.KILL) and step.before.control is not ControlState.DONE:
        return step.after.cancel is not None and step.after.cancel.value == step.event.kind.value
    if step.event.kind is EventKind.DISCONNECT:
        return True  # a kill by another name: see disconnect_is_a_kill
    return step.after.cancel is None


@step_invariant("STREAM-DROP")
def drop_stops_reading(step: Step) -> bool:
    if step.event.kind is not EventKind.DROP or step.before.control not in LIVE:
        return True
    return ActionKind.STOP_READING in step.actions and step.after.control is ControlState.DONE


@state_invariant("DONE-WHEN-ENDED")
def done_exactly_when_the_stream_ended(state: RequestState) -> bool:
    return (state.control is ControlState.DONE) == (state.ended is not None)


@step_invariant("DONE-WHEN-ENDED")
def request_ends_on_the_event_that_ends_its_stream(step: Step) -> bool:
    """Judged from the event, not from what the row says it ended with."""
    if step.before.control is ControlState.DONE:
        return True
    if step.after.control is not ControlState.DONE:
        return not step.event.ends_stream
    ended = _STREAM_END_OF.get(step.event.kind)
    return step.event.ends_stream and (ended is None or step.after.ended is ended)


@step_invariant("IGNORED-CHANGES-NOTHING")
def ignored_event_changes_nothing(step: Step) -> bool:
    return not step.ignored or (step.after is step.before and not step.actions)


@step_invariant("ACTIONS-IN-ORDER")
def actions_in_the_spec_order(step: Step) -> bool:
    """Each action at most once per step, in the order of the spec's section 5."""
    positions = [SPEC_ACTION_ORDER.index(action) for action in step.actions]
    return all(earlier < later for earlier, later in pairwise(positions))


@step_invariant("RUNTIME-DISCONNECT-KILLS")
def disconnect_is_a_kill(step: Step) -> bool:
    """A client that went away is recorded as a kill and aborts exactly as a kill
    would: at once, or (decode, before first-token) not yet."""
    if step.event.kind is not EventKind.DISCONNECT or step.before.control is ControlState.DONE:
        return True
    if step.before.cancel is not None:
        return step.after.cancel is step.before.cancel and ActionKind.CALL_ABORT not in step.actions
    if step.after.cancel is None or step.after.cancel.value != "kill":
        return False
    aborted = ActionKind.CALL_ABORT in step.actions
    if step.before.control is ControlState.IDLE:
        return not aborted
    deferred = step.before.mode is Mode.DECODE and not step.before.first_token
    return aborted != deferred


DONE_REACHABLE = "DONE-REACHABLE"
TABLE_WELL_FORMED = "TABLE-WELL-FORMED"


def all_invariants() -> list[StateInvariant | StepInvariant]:
    return [*STATE_INVARIANTS, *STEP_INVARIANTS]
