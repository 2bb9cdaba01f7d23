"""The engine lifecycle machine: what a Worker may call on an engine, and when.

Expectations come from PROTOCOL-NOTES.md ("Engine lifecycle") and
spec/protocol.md section 12, not from running the table.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import replace

import pytest
from dynamo_backend_protocol.model.exceptions import ProtocolViolation
from dynamo_backend_protocol.model.explore.lifecycle import explore_lifecycle
from dynamo_backend_protocol.model.lifecycle import (
    LIFECYCLE_FORBIDDEN,
    LIFECYCLE_TABLE,
    LifecycleEvent,
    LifecycleMachine,
    LifecycleTransition,
    Phase,
    Prohibition,
    lifecycle_step,
)
from dynamo_backend_protocol.model.rules import RULES
from dynamo_backend_protocol.reference import cli
from dynamo_backend_protocol.reference.cli import check as cli_check

E = LifecycleEvent


def machine_after(events: Iterable[LifecycleEvent]) -> LifecycleMachine:
    machine = LifecycleMachine()
    for event in events:
        machine.fire(event)
    return machine


def violated_rule(events: list[LifecycleEvent]) -> str:
    """The rule named when the last event is fired after the others."""
    machine = machine_after(events[:-1])
    with pytest.raises(ProtocolViolation) as caught:
        machine.fire(events[-1])
    return caught.value.rule


STARTED = [E.START_CALLED, E.START_OK]
FAILED_START = [E.START_CALLED, E.START_RAISED]


def test_every_lifecycle_rule_id_is_a_known_rule() -> None:
    """Each row and prohibition names a rule that rules.py can summarise."""
    rules = {row.rule for row in LIFECYCLE_TABLE} | {p.rule for p in LIFECYCLE_FORBIDDEN}
    assert rules <= set(RULES)


def test_shipped_lifecycle_breaks_no_invariant() -> None:
    """Exploring every reachable lifecycle state finds no violation."""
    report = explore_lifecycle()
    assert report.ok, [r.name for r in report.violations()]


def test_a_normal_life_ends_cleaned_up() -> None:
    """start, generate, abort, drain, cleanup is the Worker's ordinary path."""
    machine = machine_after([*STARTED, E.GENERATE, E.ABORT, E.DRAIN, E.CLEANUP_CALLED, E.CLEANUP_OK])
    assert machine.state.phase is Phase.CLEANED_UP


def test_generate_before_start_is_forbidden_by_start_first() -> None:
    """An engine is never asked to generate before start succeeded."""
    assert violated_rule([E.GENERATE]) == "LIFECYCLE-START-FIRST"


def test_generate_after_a_failed_start_is_forbidden() -> None:
    """A start that raised leaves nothing to serve requests with."""
    assert violated_rule([*FAILED_START, E.GENERATE]) == "LIFECYCLE-START-FIRST"


def test_start_is_called_only_once() -> None:
    """A second start on a running engine breaks LIFECYCLE-START-FIRST."""
    assert violated_rule([*STARTED, E.START_CALLED]) == "LIFECYCLE-START-FIRST"


def test_generate_after_cleanup_is_forbidden() -> None:
    """Once cleaned up, the engine serves nothing (e.g. abort tearing the engine down)."""
    assert violated_rule([*STARTED, E.CLEANUP_CALLED, E.CLEANUP_OK, E.GENERATE]) == "LIFECYCLE-START-FIRST"


def test_abort_is_still_served_while_draining_but_generate_is_not() -> None:
    """Draining finishes in-flight requests (which may be cancelled) and takes no new ones."""
    draining = machine_after([*STARTED, E.DRAIN])
    draining.fire(E.ABORT)
    assert draining.state.phase is Phase.DRAINING
    assert violated_rule([*STARTED, E.DRAIN, E.GENERATE]) == "LIFECYCLE-START-FIRST"


def test_cleanup_runs_after_a_start_that_raised() -> None:
    """A failed start still gets its cleanup, which must succeed on partial state."""
    machine = machine_after([*FAILED_START, E.CLEANUP_CALLED, E.CLEANUP_OK])
    assert machine.state.phase is Phase.CLEANED_UP


def test_cleanup_raising_after_a_failed_start_breaks_cleanup_after_start() -> None:
    """A cleanup that is not null-safe after a failed start is a violation."""
    assert violated_rule([*FAILED_START, E.CLEANUP_CALLED, E.CLEANUP_RAISED]) == "LIFECYCLE-CLEANUP-AFTER-START"


def test_cleanup_while_start_is_running_is_forbidden() -> None:
    """cleanup never runs concurrently with start."""
    assert violated_rule([E.START_CALLED, E.CLEANUP_CALLED]) == "LIFECYCLE-CLEANUP-AFTER-START"


def test_cleanup_while_cleanup_is_running_is_forbidden() -> None:
    """cleanup never runs concurrently with itself."""
    assert violated_rule([*STARTED, E.CLEANUP_CALLED, E.CLEANUP_CALLED]) == "LIFECYCLE-CLEANUP-AFTER-START"


def test_second_cleanup_succeeds_and_changes_nothing() -> None:
    """Idempotent: after a second cleanup the engine is exactly where the first left it."""
    once = machine_after([*STARTED, E.CLEANUP_CALLED, E.CLEANUP_OK])
    after_first = once.state
    once.fire(E.CLEANUP_CALLED)
    once.fire(E.CLEANUP_OK)
    assert once.state == after_first


def test_second_cleanup_raising_breaks_idempotence() -> None:
    """A cleanup that fails the second time names LIFECYCLE-CLEANUP-IDEMPOTENT."""
    events = [*STARTED, E.CLEANUP_CALLED, E.CLEANUP_OK, E.CLEANUP_CALLED, E.CLEANUP_RAISED]
    assert violated_rule(events) == "LIFECYCLE-CLEANUP-IDEMPOTENT"


def test_cleanup_without_start_is_allowed_and_must_succeed() -> None:
    """A worker shut down before starting may call cleanup; it must not fail."""
    machine = machine_after([E.CLEANUP_CALLED, E.CLEANUP_OK])
    assert machine.state.phase is Phase.CLEANED_UP
    assert violated_rule([E.CLEANUP_CALLED, E.CLEANUP_RAISED]) == "LIFECYCLE-NO-CLEANUP-WITHOUT-START"


def test_a_violation_leaves_the_state_unchanged() -> None:
    """After a forbidden event the machine judges the next one from where the engine really is."""
    machine = machine_after(STARTED)
    before = machine.state
    with pytest.raises(ProtocolViolation):
        machine.fire(E.START_OK)
    assert machine.state == before
    machine.fire(E.GENERATE)


def test_a_retry_after_a_raising_cleanup_is_judged_as_a_new_cleanup() -> None:
    """A cleanup that raised has still ended: retrying it is not 'cleanup during cleanup'."""
    machine = machine_after([*STARTED, E.CLEANUP_CALLED])
    with pytest.raises(ProtocolViolation):
        machine.fire(E.CLEANUP_RAISED)
    machine.fire(E.CLEANUP_CALLED)
    machine.fire(E.CLEANUP_OK)
    assert machine.state.phase is Phase.CLEANED_UP


def test_explorer_catches_a_row_that_serves_before_start() -> None:
    """A faulty row letting generate in before start is reported with a shortest counterexample."""
    faulty = (*LIFECYCLE_TABLE, LifecycleTransition((Phase.CONSTRUCTED,), E.GENERATE, LIFECYCLE_TABLE[0].guard,
                                                    None, (), "LIFECYCLE-START-FIRST"))
    report = explore_lifecycle(functools.partial(lifecycle_step, table=faulty))
    broken = {r.name: r for r in report.violations()}
    assert broken["served_only_after_start"].counterexample == ["generate"]


def test_explorer_catches_a_failed_start_that_can_never_be_cleaned_up() -> None:
    """If cleanup were forbidden after a failed start, shutdown would be stuck there."""
    table = tuple(
        replace(row, sources=tuple(s for s in row.sources if s is not Phase.START_FAILED))
        if row.trigger is E.CLEANUP_CALLED else row
        for row in LIFECYCLE_TABLE
    )
    forbidden = (*LIFECYCLE_FORBIDDEN, Prohibition((Phase.START_FAILED,), E.CLEANUP_CALLED,
                                                   "LIFECYCLE-CLEANUP-AFTER-START"))
    report = explore_lifecycle(functools.partial(lifecycle_step, table=table, forbidden=forbidden))
    broken = {r.name: r for r in report.violations()}
    assert broken["cleanup_reachable_from_every_state"].counterexample == ["start_called", "start_raised"]


def test_explorer_reports_an_event_no_row_or_prohibition_covers() -> None:
    """A gap in the table is a table error, not a silent dead end."""
    table = tuple(row for row in LIFECYCLE_TABLE if row.trigger is not E.DRAIN)
    report = explore_lifecycle(functools.partial(lifecycle_step, table=table))
    broken = {r.name: r for r in report.violations()}
    assert broken["lifecycle_table_is_deterministic_and_complete"].counterexample == ["start_called", "start_ok",
                                                                                     "drain"]


def test_check_command_prints_the_lifecycle_section(capsys: pytest.CaptureFixture[str]) -> None:
    """``check`` lists the lifecycle's invariants after the request machine's."""
    assert cli.main(["check", "--mode", "agg"]) == 0
    out = capsys.readouterr().out
    lifecycle_part = out.split("engine lifecycle:", 1)[1]
    assert "LIFECYCLE-CLEANUP-IDEMPOTENT" in lifecycle_part
    assert "and the engine lifecycle" in out.splitlines()[-1]


def test_check_json_adds_lifecycle_and_keeps_ok_and_modes(capsys: pytest.CaptureFixture[str]) -> None:
    """``check --json`` keeps {"ok", "modes"} and adds a "lifecycle" object (and the "fairness" glossary)."""
    assert cli.main(["check", "--json", "--mode", "decode"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"ok", "modes", "lifecycle", "fairness"}
    assert list(data["modes"]) == ["decode"]
    assert data["ok"] is True
    assert {r["id"] for r in data["lifecycle"]["invariants"]} >= {
        "LIFECYCLE-START-FIRST", "LIFECYCLE-CLEANUP-AFTER-START",
        "LIFECYCLE-CLEANUP-IDEMPOTENT", "LIFECYCLE-NO-CLEANUP-WITHOUT-START",
    }


def test_check_fails_when_only_the_lifecycle_is_violated(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ok`` and the exit code cover the lifecycle too."""
    faulty = (*LIFECYCLE_TABLE, LifecycleTransition((Phase.CONSTRUCTED,), E.GENERATE, LIFECYCLE_TABLE[0].guard,
                                                    None, (), "LIFECYCLE-START-FIRST"))
    monkeypatch.setattr(cli_check, "explore_lifecycle",
                        lambda: explore_lifecycle(functools.partial(lifecycle_step, table=faulty)))
    assert cli.main(["check", "--json", "--mode", "agg"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False
    assert all(inv["holds"] for mode in data["modes"].values() for inv in mode["invariants"])
    assert data["lifecycle"]["ok"] is False
