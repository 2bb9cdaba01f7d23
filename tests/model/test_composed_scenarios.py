"""The composed scenarios end as their stated expectations say, and a planted fault shows.

Each scenario's expected end (aborts, refusals, final phases, broken rules) is
written from the protocol notes and the bugs it teaches, not from running the
model; these tests hold the narrated model to it, and check that the
expectations have teeth: the model without the decode deferral, or a Worker
whose cleanup does not wait, fails the scenario the missing rule protects.
"""

from __future__ import annotations

import pytest
from dynamo_backend_protocol.model import ControlState, Mode, parse_event
from dynamo_backend_protocol.model.disagg import NO_ORPHANED_TRANSFER, DisaggEvent, TransferEvent, TransferPhase
from dynamo_backend_protocol.model.engine import CLEANUP_WAITS, NO_LIVE_AFTER_CLEANUP, Composition, RequestMove
from dynamo_backend_protocol.model.lifecycle import START_FIRST, LifecycleEvent
from dynamo_backend_protocol.model.machine import DEFAULT_TABLE
from dynamo_backend_protocol.model.rules import RULES
from dynamo_backend_protocol.model.teach.composed_events import (
    BadComposedEvent,
    parse_disagg_event,
    parse_engine_event,
)
from dynamo_backend_protocol.model.teach.composed_run import tell, unmet, without_decode_deferral
from dynamo_backend_protocol.model.teach.composed_scenarios import COMPOSED_SCENARIOS, ComposedScenario, Machine
from dynamo_backend_protocol.model.teach.narrate_disagg import narrate_disagg
from dynamo_backend_protocol.model.teach.narrate_engine import narrate_engine


def named(name: str) -> ComposedScenario:
    [found] = [item for item in COMPOSED_SCENARIOS if item.name == name]
    return found


def no_wait(scenario: ComposedScenario) -> Composition:
    return Composition(scenario.requests, scenario.mode, cleanup_waits_for_requests=False)


@pytest.mark.parametrize("scenario", COMPOSED_SCENARIOS, ids=lambda item: item.name)
def test_every_composed_scenario_ends_as_stated(scenario: ComposedScenario) -> None:
    """Aborts at the stated steps, refusals with the stated rules, the stated final
    phases and exactly the stated broken rules (none but in a counter-example)."""
    assert unmet(scenario, tell(scenario)) == []


def test_the_issue_asks_for_these_teaching_cases() -> None:
    """Happy path, stop during the transfer, transfer failure; two interleaved requests,
    shutdown waiting, an abort racing a shutdown, generate refused: each has a scenario."""
    names = {item.name for item in COMPOSED_SCENARIOS}
    assert {
        "disagg-happy-path", "disagg-stop-during-transfer", "disagg-transfer-failed", "engine-two-requests",
        "engine-shutdown-waits", "engine-abort-during-shutdown", "engine-generate-before-start",
    } <= names
    assert {item.machine for item in COMPOSED_SCENARIOS} == set(Machine)


def test_expectations_name_only_rules_the_spec_states() -> None:
    """A refusal or broken rule that names no rule would teach nothing a reader can look up."""
    for item in COMPOSED_SCENARIOS:
        assert set(item.expected.refused.values()) | item.expected.broken <= set(RULES), item.name


def test_without_the_deferral_the_stop_during_the_transfer_orphans_it() -> None:
    """DISAGG-NO-ORPHANED-TRANSFER: the planted fault makes the stop abort at once, so the
    scenario's expectation (abort only at the first token, transfer completed) fails."""
    scenario = named("disagg-stop-during-transfer")
    differences = unmet(scenario, tell(scenario, table=without_decode_deferral()))
    assert "transfer: expected completed, narrated orphaned" in differences
    assert "abort steps: expected (5,), narrated (3,)" in differences


def test_cleanup_that_does_not_wait_fails_the_shutdown_scenario() -> None:
    """ENGINE-CLEANUP-WAITS: with Composition(cleanup_waits_for_requests=False) the
    cleanup under r1 is no longer refused and it breaks the cleanup invariants."""
    scenario = named("engine-shutdown-waits")
    told = tell(scenario, composition=no_wait(scenario))
    differences = unmet(scenario, told)
    assert any(difference.startswith("broken rules:") and CLEANUP_WAITS in difference for difference in differences)
    assert not told.steps[6].refused


def test_cleanup_that_does_not_wait_begins_under_the_stopped_requests() -> None:
    """ENGINE-NO-LIVE-AFTER-CLEANUP (#13993): without the wait, cleanup begins while the
    aborted requests' streams are still open, so the abort-during-shutdown scenario
    no longer ends cleanly."""
    scenario = named("engine-abort-during-shutdown")
    told = tell(scenario, composition=no_wait(scenario))
    assert {broken.rule for broken in told.steps[8].broken} == {CLEANUP_WAITS, NO_LIVE_AFTER_CLEANUP}
    assert unmet(scenario, told) != []


def test_counter_examples_need_their_fault() -> None:
    """Told with the shipped model, a counter-example's expected violation does not happen."""
    orphaning = named("disagg-without-deferral")
    assert "transfer: expected orphaned, narrated in_flight" in unmet(orphaning, tell(orphaning, table=DEFAULT_TABLE))
    racing = named("engine-shutdown-race")
    shipped = Composition(racing.requests, racing.mode)
    assert f"refused steps: expected {{}}, narrated {{4: '{CLEANUP_WAITS}'}}" in unmet(
        racing, tell(racing, composition=shipped)
    )


def test_a_token_before_the_transfer_completed_is_refused_and_the_story_goes_on() -> None:
    """The first token is computed from the transferred cache: a token chunk while the
    transfer is in flight is not offered, names its rule, changes nothing, and the
    events after it are still told."""
    events: list[DisaggEvent] = [
        parse_event("setup"), TransferEvent.STARTED, parse_event("token_chunk"), TransferEvent.COMPLETED
    ]
    told = narrate_disagg(events)
    refused = told.steps[2]
    assert refused.refused and refused.rule == NO_ORPHANED_TRANSFER
    assert refused.before == refused.after == "request Streaming, transfer in_flight"
    assert any(sentence.startswith("NOT OFFERED") for sentence in refused.sentences)
    assert told.final.transfer is TransferPhase.COMPLETED


def test_a_generate_before_start_names_the_lifecycle_rule() -> None:
    """LIFECYCLE-START-FIRST: a request's first step is the engine's generate, which a
    constructed engine does not serve; the narration says so instead of failing."""
    composition = Composition(1, Mode.AGGREGATED)
    told = narrate_engine([RequestMove(0, parse_event("setup")), LifecycleEvent.START_CALLED], composition)
    [refused, started] = told.steps
    assert (refused.refused, refused.rule, refused.actor) == (True, START_FIRST, "request r1")
    assert "generate" in refused.sentences[1]
    assert not started.refused and told.final.requests[0].control is ControlState.IDLE


def test_engine_events_are_addressed_to_a_request_or_the_engine() -> None:
    """rK:EVENT is request K's (1-based); engine:EVENT and a bare lifecycle slug, as
    check prints its counterexamples, are the engine's."""
    assert parse_engine_event("r2:terminal:stop+tokens", 2) == RequestMove(1, parse_event("terminal:stop+tokens"))
    assert parse_engine_event("engine:drain", 2) is parse_engine_event("drain", 2) is LifecycleEvent.DRAIN
    assert parse_disagg_event("transfer_failed") is TransferEvent.FAILED


@pytest.mark.parametrize(
    ("token", "complaint"),
    [("r3:setup", "there is no request r3"), ("setup", "write r1:setup"), ("engine:abort", "come from the requests"),
     ("engine:setup", "not an engine event"), ("r1:tokens", "unknown event 'tokens'")],
)
def test_a_badly_addressed_engine_event_says_what_is_wrong(token: str, complaint: str) -> None:
    """A reader who mistypes an address learns the fix, not just that it failed."""
    with pytest.raises(BadComposedEvent) as raised:
        parse_engine_event(token, 2)
    assert complaint in str(raised.value)
