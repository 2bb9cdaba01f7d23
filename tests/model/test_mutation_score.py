"""The mutation score of ``check``: every single change to the request table
is either caught by exploration alone or shown to change nothing a run can see.

Computed once per session (a few seconds): the figure is the point, so it is
measured whole, never sampled.
"""

from __future__ import annotations

import pytest
from dynamo_backend_protocol.model import FORBIDDEN, ControlState, EventKind, Mode
from dynamo_backend_protocol.model.explore import explore, request
from dynamo_backend_protocol.model.explore.mutants import (
    Mutant,
    first_difference,
    judge,
    table_mutants,
)
from dynamo_backend_protocol.model.invariants import STEP_INVARIANTS
from dynamo_backend_protocol.model.rules import RULES
from model_helpers import ABORT
from shipped_score import shipped_score
from test_model_mutations import mutate

KINDS = {
    "delete-row", "retarget", "drop-action", "add-action", "reverse-actions", "drop-effect",
    "guard-complement", "guard-always", "delete-forbidden", "forbidden-ignored",
}


score = shipped_score


def reachable_states() -> int:
    return sum(explore(mode).states for mode in Mode)


def test_check_alone_leaves_no_blind_spot_in_the_request_table() -> None:
    """Every mutant is killed by check or equivalent to the shipped table; a
    survivor that some run tells apart would be a rule nothing enforces."""
    blind = [(verdict.mutant.name, verdict.difference) for verdict in score().blind_spots]
    assert blind == []
    assert len(score().killed) + len(score().equivalent) == len(score().verdicts)


def test_every_kind_of_mutant_is_planted_and_all_but_retargets_are_killed() -> None:
    """The score covers each kind of change the issue names, and the only
    survivors are retargets (of rows whose target the machine never uses)."""
    by_kind = score().by_kind()
    assert set(by_kind) == KINDS
    for kind, (total, killed, equivalent) in by_kind.items():
        assert total > 0
        if kind != "retarget":
            assert killed == total, kind
        assert killed + equivalent == total


def test_every_kill_names_the_rule_check_reports() -> None:
    """A kill is a report a user could act on: it names rule IDs from the spec."""
    assert all(verdict.killed_by and set(verdict.killed_by) <= set(RULES) for verdict in score().killed)


def test_equivalence_is_checked_over_every_reachable_pair_of_states() -> None:
    """An ignored row's target is never used, so retargeting it is equivalent:
    the comparison walks every state of every mode and finds nothing."""
    [mutant] = [m for m in table_mutants() if m.name == "Done stop (DONE-ABSORBING): target Streaming"]
    difference, pairs = first_difference(mutant)
    assert difference is None
    assert pairs == reachable_states()


def test_a_changed_action_is_a_difference_with_its_run() -> None:
    """The same comparison tells a real change apart and says where: an abort
    on the late stop shows after setup, stop."""
    rows = mutate(ControlState.ABORTED, EventKind.STOP, actions=(ABORT,))
    difference, _ = first_difference(Mutant("add-action", "late stop aborts", rows, FORBIDDEN))
    assert difference is not None
    assert difference.mode is Mode.AGGREGATED
    assert difference.events == ["setup", "stop", "stop"]
    assert difference.mutant == ("call_abort",)


def test_a_survivor_that_acts_differently_is_reported_as_a_blind_spot(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the invariants that judge ignored rows and counted aborts taken
    away, an ignored late stop that aborts survives check, and the score says
    it is a blind spot instead of counting it as equivalent."""
    blind_to_it = {"ignored_event_changes_nothing", "aborts_counted_from_actions_at_most_one"}
    monkeypatch.setattr(request, "STEP_INVARIANTS", [inv for inv in STEP_INVARIANTS if inv.name not in blind_to_it])
    rows = mutate(ControlState.ABORTED, EventKind.STOP, actions=(ABORT,))
    verdict = judge(Mutant("add-action", "ignored late stop aborts", rows, FORBIDDEN))
    assert not verdict.killed
    assert not verdict.equivalent
    assert verdict.difference is not None and "call_abort" in verdict.difference.describe()
