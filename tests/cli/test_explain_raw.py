"""``explain --machine raw``: the raw engine adapter's steps narrated, each rule with its release."""

from __future__ import annotations

import pytest
from dynamo_backend_protocol.reference.cli import main


def test_a_raw_stop_is_narrated_as_an_immediate_abort_from_1_3_1(capsys: pytest.CaptureFixture[str]) -> None:
    """RAW-ABORT-IMMEDIATE and RAW-END-IS-TERMINAL, told: the stop aborts in its own step, the
    second stop changes nothing, the generator's end ends the request."""
    assert main(["explain", "--machine", "raw", "--events", "setup,object,stop,stop,end"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "call_abort. Decided by RAW-ABORT-IMMEDIATE (from 1.3.1)" in lines[3]
    assert "does nothing. Decided by RAW-ABORT-IMMEDIATE" in lines[4]
    assert "-> Done" in lines[5] and "RAW-END-IS-TERMINAL (from 1.3.1)" in lines[5]


def test_an_object_after_the_end_is_refused_by_its_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--machine", "raw", "--events", "setup,end,object"]) == 0
    assert "object in Done: not allowed (rule RAW-END-IS-TERMINAL" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--events", "setup,bogus"], "unknown raw event 'bogus'"),
        (["--events", "setup,,end"], "event 2 is empty"),
        (["--events", "setup", "--mode", "decode"], "only --events"),
        (["--list"], "it has no scenarios"),
    ],
)
def test_bad_raw_input_is_one_line_and_exit_2(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--machine", "raw", *argv]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert says in line
