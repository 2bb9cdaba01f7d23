"""The first-token notifier's publish of prefill completion (from Dynamo 1.5.1).

Up to 1.4.2 the first-token signal of a request (its first chunk with tokens,
or the engine's side-channel ``context.notify_first_token()``) only released a
decode worker's deferred ``engine.abort`` (DECODE-DEFER).  From 1.5.1 the same
signal fires a shared, one-shot notifier that also *publishes prefill
completion* for the request on the event plane (an active-sequence event
naming the request id, the worker and the request's DP rank), so the KV
router can move the request's load from prefill to decode as soon as the
worker has its first token rather than when the response reaches the router.

Who publishes, as Dynamo's compiled worker decides it: only an aggregated or
decode worker whose endpoint has a prefill-completion publisher, and only for
a request whose routing carries a DP rank; a prefill or encode worker never
does, and the raw engine adapter has no first token at all.  A publisher that
cannot be set up leaves the worker serving without it (the router's
response-side bookkeeping stays authoritative), so the publish is advisory:
nothing in the request protocol waits for it.

Modelled here as a small machine riding on the request machine's events:
the state is whether the request has published and whether its stream has
ended.  Which events count as the first-token signal is the request model's
own classification (``Event.signals_first_token``); nothing is copied.  The
release a rule holds from is in ``model/releases.py``.  Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import product
from typing import TypeAlias

from dynamo_backend_protocol.model.invariants import Invariant
from dynamo_backend_protocol.model.vocabulary import ALL_EVENTS, Event, Mode

FIRST_TOKEN_PUBLISH = "FIRST-TOKEN-PUBLISH"
FIRST_TOKEN_PUBLISH_WHERE = "FIRST-TOKEN-PUBLISH-WHERE"
FIRST_TOKEN_PUBLISH_NEEDS_TOKEN = "FIRST-TOKEN-PUBLISH-NEEDS-TOKEN"

PUBLISH_RULES: tuple[str, ...] = (FIRST_TOKEN_PUBLISH, FIRST_TOKEN_PUBLISH_WHERE, FIRST_TOKEN_PUBLISH_NEEDS_TOKEN)

PUBLISHING_MODES = frozenset({Mode.AGGREGATED, Mode.DECODE})
"""Worker roles whose endpoint gets a prefill-completion publisher; prefill and encode get none."""


@dataclass(frozen=True)
class PublishSetup:
    """What decides whether a request's first token is published."""

    mode: Mode
    notifier_publishes: bool = True
    """The release's notifier publishes at all (from 1.5.1: ``releases.notifier_publishes``)."""
    publisher: bool = True
    """The worker's endpoint has a prefill-completion publisher (its setup succeeded)."""
    dp_rank: bool = True
    """The request's routing carries a DP rank (the event names it; without one nothing is published)."""

    @property
    def publishes(self) -> bool:
        """Whether a first token of this request is published at all."""
        return self.notifier_publishes and self.mode in PUBLISHING_MODES and self.publisher and self.dp_rank


@dataclass(frozen=True)
class PublishState:
    published: int = 0
    """Prefill-completion events published for this request so far."""
    ended: bool = False
    """The engine's stream has ended (terminal, error, end, drop or a failed setup)."""


@dataclass(frozen=True)
class PublishStep:
    setup: PublishSetup
    before: PublishState
    event: Event
    after: PublishState
    publish: bool
    """The step publishes prefill completion (before forwarding the chunk that caused it)."""


def publish_step(setup: PublishSetup, state: PublishState, event: Event) -> PublishStep:
    """One event on a request: whether it publishes, and the state after it.

    The notifier is one-shot and fires on the first first-token signal, whatever the
    request's cancellation: a stopped decode request that still gets its first token
    publishes, because its prefill is complete all the same.  Nothing is read after
    the stream ended (the model's Done is absorbing).
    """
    publish = setup.publishes and state.published == 0 and not state.ended and event.signals_first_token
    after = PublishState(state.published + int(publish), state.ended or event.ends_stream)
    return PublishStep(setup, state, event, after, publish)


def publish_run(setup: PublishSetup, events: tuple[Event, ...] | list[Event]) -> list[PublishStep]:
    """The steps of one request's events, from a fresh request."""
    state, steps = PublishState(), []
    for event in events:
        step = publish_step(setup, state, event)
        steps.append(step)
        state = step.after
    return steps


# --------------------------------------------------------------------------- invariants

PublishStateInvariant: TypeAlias = Invariant[PublishState]
PublishStepInvariant: TypeAlias = Invariant[PublishStep]


def _published_at_most_once(state: PublishState) -> bool:
    return state.published <= 1


def _published_at_the_first_first_token(step: PublishStep) -> bool:
    """Where the setup publishes, the first first-token signal on a live stream publishes;
    nothing else does."""
    first_signal = step.before.published == 0 and not step.before.ended and step.event.signals_first_token
    return step.publish == (first_signal and step.setup.publishes)


def _published_only_where_configured(step: PublishStep) -> bool:
    return not step.publish or (
        step.setup.notifier_publishes
        and step.setup.mode in PUBLISHING_MODES
        and step.setup.publisher
        and step.setup.dp_rank
    )


def _nothing_published_without_a_token(step: PublishStep) -> bool:
    return not step.publish or (step.event.signals_first_token and not step.before.ended)


PUBLISH_STATE_INVARIANTS: tuple[PublishStateInvariant, ...] = (
    PublishStateInvariant(FIRST_TOKEN_PUBLISH, "publish_at_most_once", _published_at_most_once),
)
PUBLISH_STEP_INVARIANTS: tuple[PublishStepInvariant, ...] = (
    PublishStepInvariant(FIRST_TOKEN_PUBLISH, "publish_at_the_first_first_token", _published_at_the_first_first_token),
    PublishStepInvariant(FIRST_TOKEN_PUBLISH_WHERE, "publish_only_where_configured", _published_only_where_configured),
    PublishStepInvariant(
        FIRST_TOKEN_PUBLISH_NEEDS_TOKEN, "publish_never_without_a_first_token", _nothing_published_without_a_token
    ),
)


# --------------------------------------------------------------------------- exploration

PublishStepFunction: TypeAlias = Callable[[PublishSetup, PublishState, Event], PublishStep]


@dataclass(frozen=True)
class PublishViolation:
    rule: str
    name: str
    setup: PublishSetup
    events: tuple[Event, ...]
    """The shortest event sequence from a fresh request that breaks the invariant."""


@dataclass(frozen=True)
class PublishExploration:
    setups: int
    states: int
    """Distinct (setup, state) pairs reached."""
    steps: int
    failures: tuple[PublishViolation, ...]


def every_setup() -> Iterator[PublishSetup]:
    for mode, notifier_publishes, publisher, dp_rank in product(Mode, (False, True), (False, True), (False, True)):
        yield PublishSetup(mode, notifier_publishes, publisher, dp_rank)


def explore_publish(step: PublishStepFunction = publish_step) -> PublishExploration:
    """Every reachable state of every setup, every event from each: each invariant judged
    on every step and every state reached, breadth first so a failure's path is shortest."""
    failures: dict[tuple[str, PublishSetup], PublishViolation] = {}
    states = steps = setups = 0
    for setup in every_setup():
        setups += 1
        seen: dict[PublishState, tuple[Event, ...]] = {PublishState(): ()}
        frontier: list[tuple[PublishState, tuple[Event, ...]]] = [(PublishState(), ())]
        while frontier:
            following: list[tuple[PublishState, tuple[Event, ...]]] = []
            for state, path in frontier:
                for event in ALL_EVENTS:
                    taken = step(setup, state, event)
                    steps += 1
                    reached = (*path, event)
                    broken = [(i.rule, i.name) for i in PUBLISH_STEP_INVARIANTS if not i.holds(taken)]
                    broken += [(i.rule, i.name) for i in PUBLISH_STATE_INVARIANTS if not i.holds(taken.after)]
                    for rule, name in broken:
                        failures.setdefault((name, setup), PublishViolation(rule, name, setup, reached))
                    # A state that already broke an invariant is not explored further: a step
                    # function that publishes on every token would otherwise never run out of states.
                    if taken.after not in seen and not broken:
                        seen[taken.after] = reached
                        following.append((taken.after, reached))
            frontier = following
        states += len(seen)
    return PublishExploration(setups, states, steps, tuple(failures.values()))
