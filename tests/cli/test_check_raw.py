"""``check --machine raw``: the raw engine adapter's machine explored, each rule with the release it holds from."""

from __future__ import annotations

import json

import pytest
from dynamo_backend_protocol.model.raw_engine import RAW_ABORT_IMMEDIATE, RAW_RULES
from dynamo_backend_protocol.reference.cli import main


def test_check_explores_the_raw_machine_and_says_each_rule_holds_from_1_3_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every RAW-* rule is checked by an invariant and printed with "from 1.3.1"; exit 0."""
    assert main(["check", "--machine", "raw"]) == 0
    out = capsys.readouterr().out
    for rule in RAW_RULES:
        assert f"holds    {rule}" in out
    assert f"{RAW_ABORT_IMMEDIATE}    raw_abort_in_the_cancelling_step" in out
    assert "(from 1.3.1)" in out and "all invariants hold" in out


def test_check_raw_as_json_carries_the_release_of_each_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--machine", "raw", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] and data["done_reachable"]
    assert {item["id"] for item in data["invariants"]} == set(RAW_RULES)
    assert {item["since"] for item in data["invariants"]} == {"from 1.3.1"}


def test_check_raw_refuses_a_mode_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """The raw adapter has no per-mode behaviour to choose: a --mode is a usage error, exit 2."""
    assert main(["check", "--machine", "raw", "--mode", "decode"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "--machine raw is one machine for every mode" in line
