"""SPIN from the command line: ``check --checker spin`` and ``export --format promela``."""

from __future__ import annotations

import json

import pytest
from dynamo_backend_protocol.model import CompiledTable, Mode
from dynamo_backend_protocol.model.engine import Composition
from dynamo_backend_protocol.model.explore.promela import REQUEST_STATE_INVARIANTS, claims, export_promela
from dynamo_backend_protocol.model.explore.promela_engine import engine_claims
from dynamo_backend_protocol.model.explore.promela_parts import ALL_SAFETY
from dynamo_backend_protocol.model.invariants import STEP_INVARIANTS
from dynamo_backend_protocol.model.lifecycle import LIFECYCLE_STATE_INVARIANTS
from dynamo_backend_protocol.model.liveness import LIVENESS_PROPERTIES
from dynamo_backend_protocol.reference.cli import main
from dynamo_backend_protocol.reference.spin import spin_search
from optional_tools import require_commands

SPIN_INSTALL = "apt-get install -y spin gcc"


def test_check_engine_spin_outside_decode_with_disagg_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """The composed model is decode only, whichever engine checks it: one line, exit 2."""
    assert main(["check", "--machine", "disagg", "--engine", "spin", "--mode", "agg"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_check_engine_spin_reports_every_property_and_what_it_cannot_check(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """check --checker spin prints SPIN's verdict per property in the check table's
    form (step invariants among them), names the two it cannot check and why, and
    exits 0 on the shipped table."""
    require_commands("spin", "cc", install=SPIN_INSTALL)
    assert main(["check", "--engine", "spin", "--mode", "decode"]) == 0
    out = capsys.readouterr().out
    assert "DECODE-WAIT-ENDS" in out and "holds" in out
    assert all(inv.name in out for inv in STEP_INVARIANTS)
    [not_checked] = [line for line in out.splitlines() if line.startswith("not checked by SPIN:")]
    assert "TABLE-WELL-FORMED" in not_checked and "DONE-REACHABLE" in not_checked
    assert "step invariants" not in not_checked


def test_export_is_generated_with_one_claim_per_property(capsys: pytest.CaptureFixture[str]) -> None:
    """The export names its mode and has an ltl claim per state invariant, step invariant
    and liveness property, plus the conjunction of the safety claims."""
    assert main(["export", "--format", "promela", "--mode", "decode"]) == 0
    out = capsys.readouterr().out
    assert out == export_promela(Mode.DECODE, CompiledTable())
    found = [line.split()[1] for line in out.splitlines() if line.startswith("ltl ")]
    assert sorted(found) == sorted([claim for _, _, claim in claims()] + [ALL_SAFETY])
    assert len(found) == len(REQUEST_STATE_INVARIANTS) + len(STEP_INVARIANTS) + len(LIVENESS_PROPERTIES) + 1


def test_export_requests_is_the_composed_model(capsys: pytest.CaptureFixture[str]) -> None:
    """export --requests N writes the N-request composition, with a claim per request and
    lifecycle invariant, each ENGINE-* rule (ENGINE-NO-ABORT-AFTER-CLEANUP among them) and,
    for two requests, each liveness rule (ENGINE-CLEANUP-EVENTUALLY among them)."""
    assert main(["export", "--format", "promela", "--mode", "agg", "--requests", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 agg request(s) sharing one engine" in out.splitlines()[0]
    found = [line.split()[1] for line in out.splitlines() if line.startswith("ltl ")]
    assert set(found) == {claim for _, _, claim in engine_claims(Composition(2, Mode.AGGREGATED))} | {ALL_SAFETY}
    assert "no_abort_once_cleanup_begins" in found and "started_engine_cleanup_begins" in found
    assert any(inv.name in found for inv in LIFECYCLE_STATE_INVARIANTS)


def test_check_engine_spin_swarm_reports_each_verifier_and_its_coverage(capsys: pytest.CaptureFixture[str]) -> None:
    """A small swarm: two bitstate verifiers, each with its own seed, hash functions and search
    order, each reporting what it stored, SPIN's hash factor and the chance it missed a state;
    no invariant is violated on the shipped table, and the JSON says the same per verifier."""
    require_commands("spin", "cc", install=SPIN_INSTALL)
    argv = ["check", "--engine", "spin", "--requests", "1", "--mode", "agg", "--swarm", "2", "--time-limit", "1",
            "--max-memory", "64M"]
    assert main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    report = data["modes"]["agg"]
    assert data["search"] == "bitstate" and report["violated"] is False and report["complete"] is True
    first, second = report["verifiers"]
    assert first["options"] != second["options"] and "-RS1" in first["options"]
    assert first["states_stored"] > 100 and first["hash_factor"] > 100
    assert 0.99 < report["estimated_coverage"] <= 1.0 and 0 <= report["miss_chance"] < 0.01


def test_a_bitstate_search_finds_the_shutdown_race() -> None:
    """Without ENGINE-CLEANUP-WAITS one request can be in flight under cleanup: SPIN's bitstate
    search finds it, as its exact search and the explorer do."""
    require_commands("spin", "cc", install=SPIN_INSTALL)
    racing = Composition(1, Mode.AGGREGATED, cleanup_waits_for_requests=False)
    report = spin_search(racing, verifiers=1, minutes=1, memory=64 * 1024**2)
    assert report.violated and report.runs[0].errors >= 1


@pytest.mark.parametrize(
    "argv",
    [["--swarm"], ["--engine", "spin", "--swarm"], ["--engine", "spin", "--requests", "2", "--swarm", "0"],
     ["--engine", "spin", "--requests", "2", "--swarm", "--search", "hashcompact"]],
    ids=["without-spin", "without-requests", "no-verifiers", "hashcompact-swarm"],
)
def test_check_swarm_refuses_what_does_not_combine(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert main(["check", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
