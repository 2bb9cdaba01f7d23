"""SPIN from the command line: ``check --engine spin`` and ``export --format promela``."""

from __future__ import annotations

import pytest
from dynamo_backend_protocol.model import CompiledTable, Mode
from dynamo_backend_protocol.model.explore.promela import export_promela
from dynamo_backend_protocol.model.invariants import STATE_INVARIANTS
from dynamo_backend_protocol.model.liveness import LIVENESS_PROPERTIES
from dynamo_backend_protocol.reference.cli import main
from optional_tools import require_commands

SPIN_INSTALL = "apt-get install -y spin gcc"


def test_check_engine_spin_outside_decode_with_disagg_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """The composed model is decode only, whichever engine checks it: one line, exit 2."""
    assert main(["check", "--machine", "disagg", "--engine", "spin", "--mode", "agg"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_check_engine_spin_reports_every_property_and_what_it_cannot_check(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """check --engine spin prints SPIN's verdict per property in the check table's
    form, names what SPIN does not check, and exits 0 on the shipped table."""
    require_commands("spin", "cc", install=SPIN_INSTALL)
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


def test_export_requests_is_the_composed_model(capsys: pytest.CaptureFixture[str]) -> None:
    """export --requests N writes the N-request composition, with a claim per state
    invariant and each ENGINE-* rule (ENGINE-NO-ABORT-AFTER-CLEANUP among them)."""
    assert main(["export", "--format", "promela", "--mode", "agg", "--requests", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 agg request(s) sharing one engine" in out.splitlines()[0]
    claims = [line.split()[1] for line in out.splitlines() if line.startswith("ltl ")]
    assert len(claims) == len(STATE_INVARIANTS) + 3 and "no_abort_once_cleanup_begins" in claims
