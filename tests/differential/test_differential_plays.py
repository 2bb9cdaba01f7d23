"""The plays and our adapter's side of ``differential``: no Dynamo needed.

These hold the harness to the model and to the runtime rules it plays by,
so the comparison against Dynamo's adapter means something.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dynamo_backend_protocol.model import Mode, parse_event
from dynamo_backend_protocol.model.teach.scenarios import scenario
from dynamo_backend_protocol.reference.differential.compare import differences
from dynamo_backend_protocol.reference.differential.plays import NotPlayable, make_play
from dynamo_backend_protocol.reference.differential.reference_side import ReferenceSide
from dynamo_backend_protocol.reference.differential.run import plays_for
from dynamo_backend_protocol.reference.differential.schedules import drawn_schedules


def test_a_client_leaving_is_played_as_a_disconnect_that_aborts() -> None:
    """RUNTIME-DISCONNECT-KILLS: the silent-drop scenario, acted out by a real client,
    is a kill on the worker, so the model predicts one abort after first-token."""
    play = make_play("silent-drop", scenario("silent-drop").parsed_events(), Mode.AGGREGATED)
    assert "disconnect" in [ev.name for ev in play.events]
    assert play.predicted.aborts == (True,)
    assert play.predicted.killed


def test_a_decode_stop_allows_the_stream_to_go_away_before_first_token() -> None:
    """A client's stop ends its stream, so the worker's next send may fail and drop the
    request before its first token: the model then allows no abort (DECODE-DROP) as well."""
    play = make_play("tokenless", scenario("tokenless-bootstrap-chunk").parsed_events(), Mode.DECODE)
    assert play.predicted.aborts == (True,)
    assert any(outcome.aborts == () for outcome in play.allowed[1:])


def test_an_aggregated_stop_allows_only_the_immediate_abort() -> None:
    """Outside decode the abort fires at the stop, before any later send can fail: no race."""
    play = make_play("cancel", scenario("aggregated-cancel").parsed_events(), Mode.AGGREGATED)
    assert {outcome.aborts for outcome in play.allowed} == {(False,)}


def test_the_client_sees_nothing_after_its_stop() -> None:
    """A client that stops receives nothing more, so the model's client view ends at the stop."""
    events = [parse_event(name) for name in ("setup", "token_chunk", "stop", "token_chunk", "terminal:cancelled")]
    play = make_play("stop-after-one", events, Mode.AGGREGATED)
    assert [item.tokens for item in play.predicted.items] == [(1,)]
    assert play.predicted.client_end == "no_terminal"


def test_drawn_schedules_are_the_same_for_the_same_seed() -> None:
    """A reported divergence must be reproducible from its seed."""
    assert drawn_schedules(Mode.DECODE, 5, 3) == drawn_schedules(Mode.DECODE, 5, 3)
    assert len(drawn_schedules(Mode.DECODE, 5, 3)) == 5


@pytest.mark.parametrize("mode", list(Mode), ids=str)
def test_our_adapter_agrees_with_the_model_on_every_play(mode: Mode) -> None:
    """Our adapter, driven by the same scripted engine and client, must produce an outcome
    the model allows for every teaching scenario and drawn schedule."""

    async def play_all() -> list[tuple[str, list[str]]]:
        side = ReferenceSide(mode)
        found = []
        for play in plays_for(mode, 8, 0):
            found.append((play.name, differences(play.allowed, await side.play(play))))
        return found

    assert [(name, found) for name, found in asyncio.run(play_all()) if found] == []


def test_without_dynamo_the_command_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    """A backend author without Dynamo's wheels gets one line naming what to install, exit 2,
    and no traceback (here an empty ``dynamo`` package hides the real one)."""
    (tmp_path / "dynamo").mkdir()
    (tmp_path / "dynamo" / "__init__.py").write_text("")
    run = subprocess.run(
        [sys.executable, "-m", "dynamo_backend_protocol", "differential", "--mode", "agg"],
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    [line] = run.stderr.strip().splitlines()
    assert "Dynamo's packages are not installed" in line
    assert "ai-dynamo-runtime==1.6.1" in line


def test_a_sequence_no_client_can_act_out_is_refused_with_its_name() -> None:
    """A client cannot leave a request it has not sent; such a schedule must be refused by
    name rather than played as something else."""
    events = [parse_event(name) for name in ("drop", "setup", "terminal:stop")]
    with pytest.raises(NotPlayable, match="early-leave"):
        make_play("early-leave", events, Mode.AGGREGATED)
