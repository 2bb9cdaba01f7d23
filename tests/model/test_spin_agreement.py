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
from dynamo_backend_protocol.model.engine import Composition
from dynamo_backend_protocol.model.explore import explore
from dynamo_backend_protocol.model.explore.compiled import explore_compiled
from dynamo_backend_protocol.model.explore.disagg import explore_disagg
from dynamo_backend_protocol.model.explore.mutants import Mutant, table_mutants
from dynamo_backend_protocol.model.explore.promela import claims
from dynamo_backend_protocol.model.explore.promela_engine import engine_claims
from dynamo_backend_protocol.model.invariants import STATE_INVARIANTS
from dynamo_backend_protocol.model.liveness import LIVENESS_PROPERTIES
from dynamo_backend_protocol.reference.spin import spin_check, spin_check_engine
from optional_tools import require_commands
from test_disagg import without_decode_deferral

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


@pytest.mark.parametrize("deferral", [True, False], ids=["shipped", "without-deferral"])
def test_spin_and_the_explorer_agree_on_the_decode_request_with_its_transfer(deferral: bool) -> None:
    """The composed model (check --machine disagg): with the deferral nothing is
    orphaned for either checker; without it both find the orphaned transfer."""
    rows = CompiledTable().table if deferral else without_decode_deferral()
    report = explore_disagg(CompiledTable(rows), explore_past_violations=True)
    checked = {name for _, name, _ in claims(with_transfer=True)}
    ours = {result.name: result.holds for result in report.invariants if result.name in checked}
    theirs = {v.name: v.holds for v in spin_check(Mode.DECODE, CompiledTable(rows), with_transfer=True)}
    assert theirs == ours
    assert ours["no_transfer_orphaned_by_an_abort"] is deferral


@pytest.mark.parametrize("waits", [True, False], ids=["shipped", "cleanup-races-requests"])
def test_spin_and_the_explorer_agree_on_requests_sharing_one_engine(waits: bool) -> None:
    """The composed model of check --requests 2: with ENGINE-CLEANUP-WAITS every
    property holds for both checkers; without it both find a request in flight under
    cleanup and an abort after cleanup (ENGINE-NO-ABORT-AFTER-CLEANUP)."""
    composition = Composition(2, Mode.AGGREGATED, cleanup_waits_for_requests=waits)
    report = explore_compiled(composition, symmetry=False, explore_past_violations=True)
    checked = {name for _, name, _ in engine_claims()}
    ours = {result.name: result.holds for result in report.invariants if result.name in checked}
    theirs = {v.name: v.holds for v in spin_check_engine(composition)}
    assert theirs == ours
    assert ours["no_abort_once_cleanup_begins"] is waits
