"""SPIN, an independent model checker, agrees with our explorer.

SPIN reads the generated Promela export and explores it itself; our explorer
walks the table.  On the shipped table in every mode and on a few table
mutants, both must give the same verdict on every property SPIN can check
(state invariants and liveness).  For the comparison our explorer expands
states past a violation, as SPIN does, so both look at the same runs.
Each SPIN run generates and compiles a verifier: seconds, so few mutants.
"""

from __future__ import annotations

import pytest
from dynamo_backend_protocol.model import CompiledTable, Mode
from dynamo_backend_protocol.model.explore import explore
from dynamo_backend_protocol.model.explore.mutants import Mutant, table_mutants
from dynamo_backend_protocol.model.explore.promela import export_promela
from dynamo_backend_protocol.model.invariants import STATE_INVARIANTS
from dynamo_backend_protocol.model.liveness import LIVENESS_PROPERTIES
from dynamo_backend_protocol.reference.cli import main
from dynamo_backend_protocol.reference.spin import spin_check
from optional_tools import require_commands

SPIN_INSTALL = "apt-get install -y spin gcc"
MUTANTS = (
    "Streaming stop [not decode or first-token seen] (ABORT-IMMEDIATE): without call_abort",
    "Idle setup [not cancelled] (STREAM-SETUP): target Idle",
    "Aborted terminal (STREAM-TERMINAL-LAST): target Aborted",
)
"""Mutants that break state invariants or liveness (one of each kind of verdict)."""


@pytest.fixture(autouse=True)
def spin_installed() -> None:
    require_commands("spin", "cc", install=SPIN_INSTALL)


def explorer_verdicts(mode: Mode, table: CompiledTable) -> dict[str, bool]:
    report = explore(mode, table, explore_past_violations=True)
    checked = {inv.name for inv in STATE_INVARIANTS} | {prop.name for prop in LIVENESS_PROPERTIES}
    verdicts = {result.name: result.holds for result in report.invariants if result.name in checked}
    verdicts.update({result.name: result.holds for result in report.liveness})
    return verdicts


def spin_verdicts(mode: Mode, table: CompiledTable) -> dict[str, bool]:
    return {verdict.name: verdict.holds for verdict in spin_check(mode, table)}


@pytest.mark.parametrize("mode", list(Mode), ids=str)
def test_spin_and_the_explorer_agree_on_the_shipped_table(mode: Mode) -> None:
    """Every state invariant and liveness property holds, for both checkers."""
    ours = explorer_verdicts(mode, CompiledTable())
    assert spin_verdicts(mode, CompiledTable()) == ours
    assert all(ours.values())


def _mutant(name: str) -> Mutant:
    [found] = [mutant for mutant in table_mutants() if mutant.name == name]
    return found


@pytest.mark.parametrize("name", MUTANTS)
def test_spin_and_the_explorer_agree_on_a_mutant(name: str) -> None:
    """A planted fault gets the same verdicts from both, property by property,
    and at least one property fails (the mutant is not a no-op)."""
    mutant = _mutant(name)
    ours = explorer_verdicts(Mode.AGGREGATED, mutant.table())
    assert spin_verdicts(Mode.AGGREGATED, mutant.table()) == ours
    assert not all(ours.values())


def test_check_engine_spin_reports_every_property_and_what_it_cannot_check(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """check --engine spin prints SPIN's verdict per property in the check table's
    form, names what SPIN does not check, and exits 0 on the shipped table."""
    assert main(["check", "--engine", "spin", "--mode", "decode"]) == 0
    out = capsys.readouterr().out
    assert "DECODE-WAIT-ENDS" in out and "holds" in out
    assert "not checked by SPIN: step invariants" in out


def test_export_is_generated_with_one_claim_per_property(capsys: pytest.CaptureFixture[str]) -> None:
    """The export names its mode and has an ltl claim per state invariant and liveness property."""
    assert main(["export", "--format", "promela", "--mode", "decode"]) == 0
    out = capsys.readouterr().out
    assert out == export_promela(Mode.DECODE, CompiledTable())
    claims = [line.split()[1] for line in out.splitlines() if line.startswith("ltl ")]
    assert len(claims) == len(STATE_INVARIANTS) + len(LIVENESS_PROPERTIES)
