"""The plays and our adapter's side of ``differential``: no Dynamo needed.

These hold the harness to the model and to the runtime rules it plays by,
so the comparison against Dynamo's adapter means something.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from dynamo_backend_protocol.model import Mode, parse_event
from dynamo_backend_protocol.model.releases import Release
from dynamo_backend_protocol.model.teach.scenarios import scenario
from dynamo_backend_protocol.reference.differential.compare import differences
from dynamo_backend_protocol.reference.differential.findings import explaining
from dynamo_backend_protocol.reference.differential.plays import NotPlayable, Outcome, make_play
from dynamo_backend_protocol.reference.differential.raw_plays import RAW_SCENARIOS, make_raw_play
from dynamo_backend_protocol.reference.differential.reference_side import ReferenceSide
from dynamo_backend_protocol.reference.differential.released import as_released
from dynamo_backend_protocol.reference.differential.run import plays_for
from dynamo_backend_protocol.reference.differential.schedules import drawn_schedules
from dynamo_backend_protocol.reference.differential.surface import ReleaseMismatch, surface


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


def test_an_older_release_expects_the_untyped_mid_stream_error() -> None:
    """Up to 1.5.1 a typed InvalidArgument raised mid-stream reaches the client as ValueError
    (mid-stream-error-kind); from 1.6.1 as the model says.  Only the client's view changes."""
    play = make_play("typed", scenario("typed-mid-stream-error").parsed_events(), Mode.AGGREGATED)
    older, applied = as_released(play, Release.parse("1.5.1"))
    assert [difference.name for difference in applied] == ["mid-stream-error-kind"]
    assert [item.text() for item in older[0].items] == ["[1]", "error:ValueError"]
    assert replace(older[0], items=play.predicted.items) == play.predicted
    assert as_released(play, Release.parse("1.6.1")) == (play.allowed, ())


def test_an_older_release_gives_a_decode_client_its_cancelled_terminal_after_a_stop_before_send() -> None:
    """decode-stop-before-send-terminal: up to 1.5.1 the client that stopped before sending still
    receives the engine's cancelled terminal; agg is not touched."""
    events = scenario("cancel-before-setup").parsed_events()
    decode = make_play("early-stop", events, Mode.DECODE)
    older, applied = as_released(decode, Release.parse("1.2.1"))
    assert [difference.name for difference in applied] == ["decode-stop-before-send-terminal"]
    assert [item.text() for item in older[0].items] == ["[]/cancelled"]
    assert older[0].client_end == "terminal"
    assert as_released(decode, Release.parse("1.6.1"))[1] == ()
    agg = make_play("early-stop", events, Mode.AGGREGATED)
    assert as_released(agg, Release.parse("1.2.1"))[1] == ()


def test_a_release_older_than_the_seed_or_unparsable_is_refused() -> None:
    """Nothing was measured before 1.2.1, and a version that is not X.Y.Z is named."""
    with pytest.raises(ReleaseMismatch, match="older than the seed"):
        surface(Release.parse("1.1.0"))
    with pytest.raises(ValueError, match=r"'1\.x' is not a release number"):
        Release.parse("1.x")


def test_each_release_surface_adapts_the_client_and_worker() -> None:
    """1.2.1: no enable_kv_routing, requests need model/eos_token_ids/annotations, no encode
    worker; up to 1.5.1 a setup error drops the worker; 1.6.1 needs none of it."""
    seed, latest = surface(Release.parse("1.2.1")), surface(Release.parse("1.6.1"))
    assert not seed.worker_config_has_kv_routing and latest.worker_config_has_kv_routing
    assert set(seed.request_fields("m")) == {"model", "eos_token_ids", "annotations"}
    assert latest.request_fields("m") == {}
    assert seed.unserved(Mode.ENCODE) is not None and latest.unserved(Mode.ENCODE) is None
    assert surface(Release.parse("1.5.1")).setup_error_drops_worker and not latest.setup_error_drops_worker
    assert surface(Release.parse("1.4.9")).measured_as == Release.parse("1.4.2")


def test_a_raw_stop_aborts_once_at_the_stop_and_the_client_sees_nothing_after() -> None:
    """RAW-ABORT-IMMEDIATE as a play: one abort after the first object, no deferral; the
    client's view ends at its stop; the generator may be closed by the failed send."""
    play = make_raw_play("raw-stop", RAW_SCENARIOS["raw-stop"])
    assert play.predicted.aborts == (True,)
    assert [item.text() for item in play.predicted.items] == ["[1]"]
    assert play.predicted.ending == {"closed", "completed"}
    assert [step.op for step in play.stream] == ["yield", "await_cancel", "await_abort", "yield", "end"]


def test_a_raw_client_that_leaves_is_a_kill_and_a_clean_raw_run_ends_with_its_generator() -> None:
    """RUNTIME-DISCONNECT-KILLS holds for the raw adapter too; RAW-END-IS-TERMINAL: no terminal item."""
    left = make_raw_play("leave", RAW_SCENARIOS["raw-client-leaves"])
    assert left.predicted.killed and left.predicted.aborts == (True,) and left.predicted.client_end == "left"
    clean = make_raw_play("clean", RAW_SCENARIOS["raw-clean"])
    assert [item.text() for item in clean.predicted.items] == ["[1]", "[2]"]
    assert clean.predicted.client_end == "no_terminal" and clean.predicted.aborts == ()


def test_a_stop_sent_before_the_request_may_abort_late_after_the_first_item() -> None:
    """stop-before-send-lost: Dynamo may deliver a stop given before the request so late that the engine
    had yielded its first item before the abort came; that late abort is the finding, not a divergence.
    An abort after the first item with no stop before sending stays unexplained."""
    play = make_raw_play("raw-stop-before-send", RAW_SCENARIOS["raw-stop-before-send"])
    assert play.predicted.aborts == (False,)
    late = replace(play.predicted, aborts=(True,))

    def matches(allowed: tuple[Outcome, ...], seen: Outcome) -> bool:
        return not differences(allowed, seen)

    assert differences(play.allowed, late) != []
    assert explaining(play, late, matches) == "stop-before-send-lost"
    mid_stream = make_raw_play("raw-stop", RAW_SCENARIOS["raw-stop"])
    assert explaining(mid_stream, replace(mid_stream.predicted, aborts=(False,)), matches) is None
