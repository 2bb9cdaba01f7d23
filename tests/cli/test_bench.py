"""The bench command's figures: present, well named, and its storm is correct."""

from __future__ import annotations

import asyncio
import json

import pytest
from dynamo_backend_protocol.reference.bench import cancellation_storm
from dynamo_backend_protocol.reference.cli import main


def test_storm_of_requests_ending_every_way_leaks_nothing_and_matches_the_model() -> None:
    """Thousands of concurrent requests that complete, stop, kill, drop or defer an
    abort must leave no task, call abort exactly as the model predicts, and break no invariant."""
    result = asyncio.run(cancellation_storm(requests=2_000))
    assert result.requests == 2_000
    assert result.leaked_tasks == 0
    assert result.abort_mismatches == 0
    assert result.violations == 0
    assert 0 < result.bytes_per_request < 64 * 1024


def test_bench_json_reports_every_documented_key(capsys: pytest.CaptureFixture[str]) -> None:
    """Scripts read bench --json by key; the keys promised in the README must all be there."""
    assert main(["bench", "--json", "--quick"]) == 0
    figures = json.loads(capsys.readouterr().out)
    for key in ("bare_chunks_per_s", "adapter_chunks_per_s", "ratio_trivial", "ratio_yielding",
                "floor_ratio_trivial", "floor_ratio_yielding", "explore_seconds", "conformance_seconds"):
        assert isinstance(figures[key], int | float) and figures[key] > 0, key
    assert set(figures["storm"]) == {
        "requests", "seconds", "bytes_per_request", "leaked_tasks", "abort_mismatches", "violations"
    }
    assert figures["ratio_trivial"] == pytest.approx(
        figures["bare_chunks_per_s"] / figures["adapter_chunks_per_s"], rel=0.01
    )
