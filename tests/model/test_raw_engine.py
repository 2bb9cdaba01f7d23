"""The raw engine adapter's machine (from Dynamo 1.3.1) and which release each rule holds from."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from dynamo_backend_protocol.model.exceptions import ProtocolViolation
from dynamo_backend_protocol.model.explore.raw_engine import explore_raw
from dynamo_backend_protocol.model.invariants import TABLE_WELL_FORMED
from dynamo_backend_protocol.model.raw_engine import (
    RAW_ABORT_IMMEDIATE,
    RAW_DROP,
    RAW_END_IS_TERMINAL,
    RAW_FORWARD,
    RAW_SETUP_FAILURE,
    RAW_TABLE,
    RawAction,
    RawEvent,
    RawMachine,
    RawPhase,
    RawTransition,
)
from dynamo_backend_protocol.model.releases import RELEASES, Release, holds, holds_text
from dynamo_backend_protocol.model.rules import RULES

E = RawEvent


def _run(*events: RawEvent) -> tuple[RawMachine, list[tuple[RawAction, ...]]]:
    machine = RawMachine()
    return machine, [machine.fire(ev) for ev in events]


def test_every_reachable_raw_state_keeps_every_invariant_and_can_finish() -> None:
    """check's exploration of the raw machine: no invariant fails anywhere, Done is reachable from everywhere."""
    found = explore_raw()
    assert found.violations() == []
    assert found.done_reachable
    assert found.states >= 8


def test_the_generator_end_is_the_terminal() -> None:
    """RAW-END-IS-TERMINAL and RAW-FORWARD: objects are forwarded in order; only the generator's end ends it."""
    machine, actions = _run(E.SETUP, E.OBJECT, E.OBJECT, E.END)
    assert actions[1:3] == [(RawAction.FORWARD_OBJECT,)] * 2
    assert machine.state.phase is RawPhase.DONE and machine.state.forwarded == 2
    with pytest.raises(ProtocolViolation, match=RAW_END_IS_TERMINAL):
        machine.fire(E.OBJECT)


@pytest.mark.parametrize("cancel", [E.STOP, E.KILL], ids=str)
def test_a_stop_or_kill_aborts_at_once_and_only_once(cancel: RawEvent) -> None:
    """RAW-ABORT-IMMEDIATE: no first token to wait for; a second cancellation changes nothing; objects
    the engine still yields are forwarded (RAW-FORWARD) until its generator ends."""
    machine, actions = _run(E.SETUP, cancel, E.STOP, E.OBJECT, E.END)
    assert actions[1] == (RawAction.CALL_ABORT,)
    assert actions[2] == ()
    assert actions[3] == (RawAction.FORWARD_OBJECT,)
    assert machine.state.aborts == 1


def test_a_stop_before_setup_aborts_when_the_generator_exists() -> None:
    """RAW-ABORT-IMMEDIATE: cancelled before setup, aborted at setup."""
    _, actions = _run(E.STOP, E.SETUP)
    assert actions == [(), (RawAction.CALL_ABORT,)]


def test_a_drop_ends_without_abort_and_a_setup_failure_returns_its_error() -> None:
    """RAW-DROP and RAW-SETUP-FAILURE."""
    machine, actions = _run(E.SETUP, E.OBJECT, E.DROP)
    assert actions[-1] == (RawAction.STOP_READING,) and machine.state.aborts == 0
    machine, actions = _run(E.SETUP_FAILED)
    assert actions == [(RawAction.RETURN_SETUP_ERROR,)] and machine.state.phase is RawPhase.DONE


def _mutated(trigger: RawEvent, source: RawPhase, **change: Any) -> tuple[RawTransition, ...]:
    rows = tuple(
        replace(row, **change) if row.trigger is trigger and source in row.sources else row for row in RAW_TABLE
    )
    assert rows != RAW_TABLE
    return rows


@pytest.mark.parametrize(
    ("mutant", "rule"),
    [
        (_mutated(E.STOP, RawPhase.STREAMING, actions=()), RAW_ABORT_IMMEDIATE),
        (_mutated(E.DROP, RawPhase.STREAMING, actions=(RawAction.CALL_ABORT, RawAction.STOP_READING)), RAW_DROP),
        (_mutated(E.OBJECT, RawPhase.ABORTED, actions=()), RAW_FORWARD),
        (_mutated(E.END, RawPhase.STREAMING, target=None), RAW_END_IS_TERMINAL),
        (_mutated(E.SETUP_FAILED, RawPhase.IDLE, actions=()), RAW_SETUP_FAILURE),
    ],
    ids=["deferred-abort", "drop-aborts", "object-lost-after-stop", "end-not-terminal", "setup-error-lost"],
)
def test_each_broken_raw_table_is_caught_by_its_rule(mutant: tuple[RawTransition, ...], rule: str) -> None:
    """A model that is wrong in one row must fail the exploration under that row's rule."""
    assert rule in {failed.rule for failed in explore_raw(mutant).violations()}


def test_a_raw_table_with_two_rows_for_one_step_fails_its_well_formedness() -> None:
    """TABLE-WELL-FORMED: the raw machine is checked like every other machine, so a table with two rows
    for a stop while streaming is reported with a shortest path to it, not raised."""
    [stop] = [row for row in RAW_TABLE if row.trigger is E.STOP and RawPhase.STREAMING in row.sources]
    found = explore_raw((*RAW_TABLE, replace(stop, target=RawPhase.DONE)))
    [broken] = found.violations()
    assert broken.rule == TABLE_WELL_FORMED
    assert broken.counterexample == ["setup", "stop"]


def test_which_release_each_rule_holds_from_is_model_data() -> None:
    """The raw adapter's rules hold from 1.3.1, the seed's from 1.2.1, and every rule has a release."""
    assert holds_text(RAW_ABORT_IMMEDIATE) == "from 1.3.1"
    assert holds_text("DECODE-DEFER") == "from 1.2.1"
    assert not holds(RAW_FORWARD).covers(Release.parse("1.2.1"))
    assert all(holds(rule).covers(RELEASES[-1]) for rule in RULES)
    with pytest.raises(KeyError):
        holds("NO-SUCH-RULE")
