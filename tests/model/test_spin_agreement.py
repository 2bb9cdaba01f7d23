"""SPIN, an independent model checker, agrees with our explorer.

SPIN reads the generated Promela export and explores it itself; our explorer
walks the tables.  On the shipped tables (every mode, the decode request with
its KV transfer, two requests sharing one engine) and on table mutants, both
must give the same verdict on every property SPIN checks: state invariants,
step invariants (as monitor flags) and liveness under fairness.  For the
comparison our explorer expands states past a violation, as SPIN does, so
both look at the same runs.  Each SPIN run generates and compiles a
verifier (seconds), and verifiers are cached by model text, so modes whose
exports are identical cost one.
"""

from __future__ import annotations

import pytest
from dynamo_backend_protocol.model import CompiledTable, Mode
from dynamo_backend_protocol.model.engine import Composition
from dynamo_backend_protocol.model.explore import explore
from dynamo_backend_protocol.model.explore.compiled import explore_compiled
from dynamo_backend_protocol.model.explore.compiled_liveness import check_compiled_liveness
from dynamo_backend_protocol.model.explore.disagg import explore_disagg
from dynamo_backend_protocol.model.explore.mutants import Mutant, table_mutants
from dynamo_backend_protocol.model.explore.promela import claims
from dynamo_backend_protocol.model.explore.promela_engine import engine_claims, engine_promela_body
from dynamo_backend_protocol.reference.spin import spin_check, spin_check_engine
from optional_tools import require_commands
from test_disagg import without_decode_deferral

SPIN_INSTALL = "apt-get install -y spin gcc"
MUTANTS = (
    "Streaming stop [not decode or first-token seen] (ABORT-IMMEDIATE): without call_abort",
    "Idle setup [not cancelled] (STREAM-SETUP): target Idle",
    "Aborted terminal (STREAM-TERMINAL-LAST): target Aborted",
    "Idle setup [not cancelled] (STREAM-SETUP): with forward_data",
)
"""Mutants each of which some kind of property kills: state invariants, liveness, step invariants only."""


@pytest.fixture(autouse=True)
def spin_installed() -> None:
    require_commands("spin", "cc", install=SPIN_INSTALL)


def explorer_verdicts(mode: Mode, table: CompiledTable) -> dict[str, bool]:
    checked = {name for _, name, _ in claims()}
    report = explore(mode, table, explore_past_violations=True)
    verdicts = {result.name: result.holds for result in report.invariants if result.name in checked}
    verdicts.update({result.name: result.holds for result in report.liveness})
    return verdicts


def spin_verdicts(mode: Mode, table: CompiledTable) -> dict[str, bool]:
    return {verdict.name: verdict.holds for verdict in spin_check(mode, table)}


@pytest.mark.parametrize("mode", list(Mode), ids=str)
def test_spin_and_the_explorer_agree_on_the_shipped_table(mode: Mode) -> None:
    """Every state invariant, step invariant and liveness property holds, for both checkers."""
    ours = explorer_verdicts(mode, CompiledTable())
    assert spin_verdicts(mode, CompiledTable()) == ours
    assert len(ours) == len(claims()) and all(ours.values())


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


def test_the_mutant_sample_kills_with_every_kind_of_property() -> None:
    """The sample is not all of one kind: some mutant breaks a state invariant, some a
    step invariant, some a liveness property (so SPIN's verdicts on each kind are compared)."""
    from dynamo_backend_protocol.model.explore.promela import REQUEST_STATE_INVARIANTS
    from dynamo_backend_protocol.model.invariants import STEP_INVARIANTS
    from dynamo_backend_protocol.model.liveness import LIVENESS_PROPERTIES

    broken = {name for mutant in MUTANTS for name, holds in
              explorer_verdicts(Mode.AGGREGATED, _mutant(mutant).table()).items() if not holds}
    assert broken & {inv.name for inv in REQUEST_STATE_INVARIANTS}
    assert broken & {inv.name for inv in STEP_INVARIANTS}
    assert broken & {prop.name for prop in LIVENESS_PROPERTIES}


@pytest.mark.parametrize("deferral", [True, False], ids=["shipped", "without-deferral"])
def test_spin_and_the_explorer_agree_on_the_decode_request_with_its_transfer(deferral: bool) -> None:
    """The composed model (check --machine disagg), every property including its liveness: with
    the deferral nothing is orphaned for either checker; without it both find the orphaned transfer."""
    table = CompiledTable(CompiledTable().table if deferral else without_decode_deferral())
    checked = {name for _, name, _ in claims(with_transfer=True)}
    report = explore_disagg(table, explore_past_violations=True)
    ours = {result.name: result.holds for result in report.invariants if result.name in checked}
    ours.update({result.name: result.holds for result in report.liveness})
    theirs = {v.name: v.holds for v in spin_check(Mode.DECODE, table, with_transfer=True)}
    assert theirs == ours
    assert len(ours) == len(checked)
    assert ours["no_transfer_orphaned_by_an_abort"] is deferral


def _engine_verdicts(composition: Composition) -> dict[str, bool]:
    """The explorer's verdicts: invariants without symmetry and past violations (the runs SPIN
    sees); liveness on the same graph by the compiled search (held to the generic walk in
    test_compiled_liveness.py, at a fraction of its cost)."""
    checked = {name for _, name, _ in engine_claims(composition)}
    report = explore_compiled(composition, symmetry=False, explore_past_violations=True, keep_graph=True)
    ours = {result.name: result.holds for result in report.invariants if result.name in checked}
    assert report.graph is not None
    ours.update({result.name: result.holds for result in check_compiled_liveness(report.graph)})
    assert len(ours) == len(checked)
    return ours


@pytest.mark.parametrize("mode", [Mode.AGGREGATED, Mode.DECODE], ids=str)
def test_spin_and_the_explorer_agree_on_two_requests_sharing_one_engine(mode: Mode) -> None:
    """The composed model of check --requests 2: every invariant and liveness property
    holds for both checkers (prefill and encode export agg's very model: see below)."""
    composition = Composition(2, mode)
    ours = _engine_verdicts(composition)
    assert {v.name: v.holds for v in spin_check_engine(composition)} == ours
    assert all(ours.values())


def test_prefill_and_encode_compose_exactly_as_agg_does() -> None:
    """Why the test above needs only agg and decode: the other modes' two-request exports
    are the same text, so SPIN's verdicts on agg's are theirs."""
    table = CompiledTable()
    agg = engine_promela_body(Composition(2, Mode.AGGREGATED), table)
    assert engine_promela_body(Composition(2, Mode.PREFILL), table) == agg
    assert engine_promela_body(Composition(2, Mode.ENCODE), table) == agg


def test_spin_and_the_explorer_agree_on_a_shutdown_racing_a_request() -> None:
    """Without ENGINE-CLEANUP-WAITS (one request is enough for the race) both checkers find
    a request in flight under cleanup and an abort after cleanup (ENGINE-NO-ABORT-AFTER-CLEANUP),
    and agree on the rest."""
    composition = Composition(1, Mode.AGGREGATED, cleanup_waits_for_requests=False)
    ours = _engine_verdicts(composition)
    assert {v.name: v.holds for v in spin_check_engine(composition)} == ours
    assert not ours["no_abort_once_cleanup_begins"]
