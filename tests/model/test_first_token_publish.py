"""The first-token notifier's publish of prefill completion (from Dynamo 1.5.1), against the model.

Expectations are written from what Dynamo's compiled worker does (spec section 15.4),
one request at a time: which step publishes, and how often."""

from __future__ import annotations

from dataclasses import replace

import pytest
from dynamo_backend_protocol.model.first_token_publish import (
    FIRST_TOKEN_PUBLISH,
    FIRST_TOKEN_PUBLISH_NEEDS_TOKEN,
    FIRST_TOKEN_PUBLISH_WHERE,
    PublishSetup,
    PublishState,
    PublishStep,
    explore_publish,
    publish_run,
    publish_step,
)
from dynamo_backend_protocol.model.releases import Release, holds_text, notifier_publishes
from dynamo_backend_protocol.model.vocabulary import Event, Mode, parse_event


def _published_at(setup: PublishSetup, *names: str) -> list[int]:
    """Positions of the events that publish prefill completion."""
    return [index for index, step in enumerate(publish_run(setup, [parse_event(n) for n in names])) if step.publish]


@pytest.mark.parametrize("mode", [Mode.AGGREGATED, Mode.DECODE])
def test_the_first_token_publishes_once_whatever_follows(mode: Mode) -> None:
    """FIRST-TOKEN-PUBLISH: a bootstrap chunk without tokens does not count; the first token chunk
    publishes, later tokens, a side-channel notice and the terminal do not."""
    setup = PublishSetup(mode)
    events = ("setup", "empty_chunk", "token_chunk", "token_chunk", "first_token", "terminal:stop+tokens")
    assert _published_at(setup, *events) == [2]


def test_a_side_channel_notice_publishes_before_any_token() -> None:
    """FIRST-TOKEN-PUBLISH: the engine's notify_first_token() is the signal too, even before setup returns."""
    setup = PublishSetup(Mode.DECODE)
    assert _published_at(setup, "first_token", "setup", "token_chunk", "terminal:length") == [0]
    assert _published_at(PublishSetup(Mode.AGGREGATED), "setup", "first_token", "token_chunk") == [1]


def test_a_stopped_request_still_publishes_its_first_token() -> None:
    """FIRST-TOKEN-PUBLISH: cancellation does not silence the notifier; a decode request stopped before its
    first token has its abort deferred, and that first token both releases the abort and publishes."""
    setup = PublishSetup(Mode.DECODE)
    assert _published_at(setup, "setup", "stop", "empty_chunk", "token_chunk", "terminal:cancelled") == [3]
    assert _published_at(setup, "setup", "kill", "terminal:cancelled+tokens") == [2]


@pytest.mark.parametrize("mode", [Mode.PREFILL, Mode.ENCODE])
def test_prefill_and_encode_workers_never_publish(mode: Mode) -> None:
    """FIRST-TOKEN-PUBLISH-WHERE: only agg and decode endpoints get a prefill-completion publisher."""
    assert _published_at(PublishSetup(mode), "setup", "token_chunk", "first_token", "terminal:stop+tokens") == []


def test_no_publisher_no_rank_or_an_older_release_publishes_nothing() -> None:
    """FIRST-TOKEN-PUBLISH-WHERE: a failed publisher setup, a request routed without a DP rank, and every
    release before 1.5.1 leave the first token unpublished (a decode abort is still released by it)."""
    events = ("setup", "token_chunk", "terminal:length")
    agg = PublishSetup(Mode.AGGREGATED)
    assert _published_at(agg, *events) == [1]
    assert _published_at(replace(agg, publisher=False), *events) == []
    assert _published_at(replace(agg, dp_rank=False), *events) == []
    assert _published_at(replace(agg, notifier_publishes=False), *events) == []
    assert [notifier_publishes(Release.parse(r)) for r in ("1.2.1", "1.3.1", "1.4.2", "1.5.1", "1.6.1")] == [
        False, False, False, True, True,
    ]


@pytest.mark.parametrize(
    "ending", ["terminal:stop", "terminal:error", "error", "end", "drop", "setup_failed", "terminal:cancelled"]
)
def test_a_stream_that_ends_before_its_first_token_publishes_nothing(ending: str) -> None:
    """FIRST-TOKEN-PUBLISH-NEEDS-TOKEN: nothing is published for a request that never had a token, and a
    notice or chunk arriving after the end is not read."""
    setup = PublishSetup(Mode.DECODE)
    first = () if ending == "setup_failed" else ("setup", "empty_chunk")
    assert _published_at(setup, *first, ending, "token_chunk", "first_token") == []


def test_every_reachable_state_of_every_setup_keeps_the_publish_invariants() -> None:
    """The exploration covers every role, release, publisher and DP-rank case and every event."""
    found = explore_publish()
    assert found.failures == ()
    assert found.setups == len(Mode) * 8
    # Publishing setups reach published and ended in every combination; the others never publish.
    assert found.states == 2 * 4 + (found.setups - 2) * 2


def _publishes_every_token(setup: PublishSetup, state: PublishState, event: Event) -> PublishStep:
    """A notifier that is not one-shot: publishes at every first-token signal."""
    step = publish_step(setup, replace(state, published=0), event)
    return replace(step, before=state, after=replace(step.after, published=state.published + int(step.publish)))


def _publishes_in_prefill(setup: PublishSetup, state: PublishState, event: Event) -> PublishStep:
    """A notifier that ignores the worker's role."""
    as_if = replace(setup, mode=Mode.DECODE) if setup.mode is Mode.PREFILL else setup
    return replace(publish_step(as_if, state, event), setup=setup)


def _publishes_the_end_of_a_tokenless_stream(setup: PublishSetup, state: PublishState, event: Event) -> PublishStep:
    """A notifier that publishes at the end of a stream that never had a token."""
    step = publish_step(setup, state, event)
    if setup.publishes and event.ends_stream and not state.ended and state.published == 0 and not step.publish:
        return replace(step, publish=True, after=replace(step.after, published=1))
    return step


@pytest.mark.parametrize(
    ("broken", "rules"),
    [
        (_publishes_every_token, {FIRST_TOKEN_PUBLISH}),
        (_publishes_in_prefill, {FIRST_TOKEN_PUBLISH, FIRST_TOKEN_PUBLISH_WHERE}),
        (_publishes_the_end_of_a_tokenless_stream, {FIRST_TOKEN_PUBLISH, FIRST_TOKEN_PUBLISH_NEEDS_TOKEN}),
    ],
)
def test_the_exploration_names_the_rule_a_wrong_notifier_breaks(broken: object, rules: set[str]) -> None:
    """Each invariant can fail: a notifier that publishes twice, in the wrong role or without a token
    is caught, with the rule it breaks and a shortest event path."""
    found = explore_publish(broken)  # type: ignore[arg-type]
    assert {failure.rule for failure in found.failures} == rules
    assert min(len(failure.events) for failure in found.failures) <= 3


def test_the_rules_hold_from_1_5_1() -> None:
    """check and explain print the release each rule holds from."""
    for rule in (FIRST_TOKEN_PUBLISH, FIRST_TOKEN_PUBLISH_WHERE, FIRST_TOKEN_PUBLISH_NEEDS_TOKEN):
        assert holds_text(rule) == "from 1.5.1"
