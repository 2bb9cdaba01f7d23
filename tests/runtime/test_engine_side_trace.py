"""``trace`` on requests recorded at the engine's side only (the deployment recorder's format).

No Dynamo needed: the lines are written here as the recorder writes them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dynamo_backend_protocol.model.traces.check import check_lines
from dynamo_backend_protocol.reference.cli import main


def _request(name: str, mode: str, *observations: str, notices: bool = False) -> list[str]:
    """Lines of one request: ``obs`` or ``obs=item`` (an engine item, numbered in order)."""
    lines = [json.dumps({"request": name, "obs": "engine.generate", "mode": mode, "notices": notices})]
    position = 0
    for observation in observations:
        obs, _, item = observation.partition("=")
        line: dict[str, object] = {"request": name, "obs": obs}
        if item:
            position += 1
            line.update(item=item, n=position)
        lines.append(json.dumps(line))
    return lines


STOPPED_AGG = ("engine.setup", "engine.item=token_chunk", "context.stop", "engine.abort", "engine.read",
               "engine.item=terminal:cancelled", "engine.end")
"""A stopped agg request as the recorder writes it (after the stop, each read of the stream is noted)."""


def _divergence(lines: list[str]) -> tuple[str | None, int | None]:
    report = check_lines(lines)
    (summary,) = report.requests
    found = summary.divergence
    return (None, None) if found is None else (found.rule, found.line)


def test_a_stopped_agg_request_with_its_abort_conforms_and_says_what_it_could_not_judge() -> None:
    report = check_lines(_request("r", "agg", *STOPPED_AGG))
    (summary,) = report.requests
    assert report.ok
    assert any("reached it, in order" in what for what in summary.not_judged)


def test_an_abort_owed_but_never_made_is_named_at_the_line_that_owed_it() -> None:
    """ABORT-IMMEDIATE: the stop on line 4 owed an abort the engine never got."""
    lines = _request("r", "agg", *(obs for obs in STOPPED_AGG if obs != "engine.abort"))
    assert _divergence(lines) == ("ABORT-IMMEDIATE", 4)


def test_a_second_abort_breaks_abort_once() -> None:
    lines = _request("r", "agg", "engine.setup", "context.stop", "engine.abort", "engine.abort",
                     "engine.item=terminal:cancelled")
    assert _divergence(lines) == ("ABORT-ONCE", 5)


def test_an_abort_nobody_asked_for_breaks_abort_needs_cancel() -> None:
    lines = _request("r", "agg", "engine.setup", "engine.item=token_chunk", "engine.abort")
    assert _divergence(lines) == ("ABORT-NEEDS-CANCEL", 4)


def test_a_decode_abort_before_first_token_breaks_decode_defer_when_notices_are_recorded() -> None:
    lines = _request("r", "decode", "engine.setup", "context.stop", "engine.abort", notices=True)
    assert _divergence(lines) == ("DECODE-DEFER", 4)


def test_a_decode_abort_before_any_token_chunk_is_not_judged_when_notices_were_not_recorded() -> None:
    lines = _request("r", "decode", "engine.setup", "context.stop", "engine.abort",
                     "engine.item=terminal:cancelled")
    report = check_lines(lines)
    (summary,) = report.requests
    assert summary.divergence is None
    assert any("side-channel first-token notice" in what for what in summary.not_judged)


def test_a_decode_stop_released_by_the_first_token_owes_the_abort() -> None:
    """DECODE-DEFER: stop, then a token chunk releases the deferred abort; it must come."""
    lines = _request("r", "decode", "engine.setup", "context.stop", "engine.item=token_chunk",
                     "engine.item=terminal:cancelled")
    assert _divergence(lines) == ("DECODE-DEFER", 4)
    assert check_lines(_request("r", "decode", "engine.setup", "context.stop", "engine.item=token_chunk",
                                "engine.abort", "engine.item=terminal:cancelled")).ok


def test_an_item_after_the_terminal_breaks_stream_terminal_last_but_the_generators_own_end_does_not() -> None:
    assert check_lines(_request("r", "agg", "engine.setup", "engine.item=terminal:length+tokens",
                                "engine.end")).ok
    lines = _request("r", "agg", "engine.setup", "engine.item=terminal:length+tokens", "engine.item=token_chunk")
    assert _divergence(lines) == ("STREAM-TERMINAL-LAST", 4)


def test_an_abort_after_a_stop_seen_only_after_the_terminal_is_not_judged() -> None:
    lines = _request("r", "agg", "engine.setup", "engine.item=terminal:length+tokens", "context.stop",
                     "engine.abort")
    report = check_lines(lines)
    assert report.ok
    assert any("after the engine's terminal" in what for what in report.requests[0].not_judged)


def test_a_client_line_in_an_engine_side_request_is_a_divergence() -> None:
    lines = _request("r", "agg", "engine.setup", "client.end")
    assert _divergence(lines)[1] == 3


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_trace_exits_1_naming_the_request_and_line_and_says_what_it_did_not_judge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], as_json: bool
) -> None:
    good = _request("kept", "agg", *STOPPED_AGG)
    broken = _request("lost-abort", "agg", *(obs for obs in STOPPED_AGG if obs != "engine.abort"))
    path = tmp_path / "recorded.jsonl"
    path.write_text("\n".join(good + broken) + "\n", encoding="utf-8")
    assert main(["trace", str(path), *(["--json"] if as_json else [])]) == 1
    out = capsys.readouterr().out
    if as_json:
        requests = {entry["request"]: entry for entry in json.loads(out)["requests"]}
        assert requests["kept"]["verdict"] == "conforms" and requests["kept"]["engine_side"] is True
        assert requests["kept"]["not_judged"]
        assert requests["lost-abort"]["divergence"]["line"] == len(good) + 4
        assert requests["lost-abort"]["divergence"]["rule"] == "ABORT-IMMEDIATE"
    else:
        assert "request kept [agg]: conforms on the engine's side" in out
        assert "not judged, the client's side not being observed" in out
        assert "request lost-abort [agg]: DIVERGES" in out
        assert f"line {len(good) + 4}: engine.abort" in out
