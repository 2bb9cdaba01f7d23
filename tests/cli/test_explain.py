"""``explain`` and the canonical scenarios: what a newcomer reads must be true.

The expected outcomes below come from the protocol notes and the upstream
adapter's tests (when abort fires, what is forwarded), not from running the
narrator.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dynamo_backend_protocol.model import ActionKind, ControlState, Mode, parse_event
from dynamo_backend_protocol.model.teach.narrate import NarratedStep, Narration, narrate
from dynamo_backend_protocol.model.teach.scenarios import SCENARIOS, scenario
from dynamo_backend_protocol.reference.cli import main

ABORT = ActionKind.CALL_ABORT


def told(name: str, mode: Mode) -> Narration:
    return narrate(scenario(name).parsed_events(), mode)


def step_of(narration: Narration, event_name: str) -> NarratedStep:
    """The first narrated step whose event has this slug."""
    return next(step for step in narration.steps if step.event.name == event_name)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["explain", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_names_every_required_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    """The issue asks for these teaching cases by name; a reader looks for them in --list."""
    code, out, _ = run_cli(capsys, "--list")
    assert code == 0
    listed = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert {
        "clean-completion",
        "aggregated-cancel",
        "decode-deferred-abort",
        "decode-drop-before-first-token",
        "side-channel-first-token",
        "tokenless-bootstrap-chunk",
        "typed-mid-stream-error",
        "setup-failure",
        "kill",
        "first-token-and-drop-same-step",
    } <= listed


SCENARIO_MODES = [(item.name, mode) for item in SCENARIOS for mode in item.modes]


@pytest.mark.parametrize(("name", "mode"), SCENARIO_MODES, ids=[f"{n}-{m.value}" for n, m in SCENARIO_MODES])
def test_every_scenario_ends_as_the_protocol_requires(name: str, mode: Mode) -> None:
    """Every scenario, in every mode it applies to, is allowed step by step, ends
    in Done with the watch released (WATCH-RELEASED) and calls abort exactly as
    often as the scenario says the protocol requires."""
    narration = told(name, mode)
    assert not narration.forbidden_steps
    assert narration.final.control is ControlState.DONE
    assert not narration.final.watching
    assert len(narration.abort_steps()) == scenario(name).aborts[mode]


@pytest.mark.parametrize(("name", "mode"), SCENARIO_MODES, ids=[f"{n}-{m.value}" for n, m in SCENARIO_MODES])
def test_cli_narrates_every_scenario_in_every_mode_it_applies_to(
    capsys: pytest.CaptureFixture[str], name: str, mode: Mode
) -> None:
    """`explain NAME --mode M` prints one numbered paragraph per event and the rule of each."""
    code, out, err = run_cli(capsys, name, "--mode", mode.value)
    assert code == 0, err
    for number, step in enumerate(told(name, mode).steps, start=1):
        assert f"\n{number}. {step.event.name}\n" in out
        assert f"Decided by {step.rule}:" in out


def test_clean_completion_narrates_every_step_and_never_aborts() -> None:
    """The baseline a newcomer starts from: setup starts the watch (STREAM-SETUP),
    each chunk is forwarded and the terminal ends the request without abort."""
    narration = told("clean-completion", Mode.AGGREGATED)
    setup = narration.steps[0]
    assert setup.rule == "STREAM-SETUP"
    assert "From now on the adapter watches the request for stop and kill." in setup.sentences
    assert [step.actions.count(ActionKind.FORWARD_DATA) for step in narration.steps] == [0, 1, 1, 1]
    assert narration.abort_steps() == ()
    assert "engine.abort was never called." in narration.text()


def test_narration_names_state_before_and_after_and_the_actions() -> None:
    """A step must say where the request was, where it went and what the adapter did."""
    narration = told("decode-deferred-abort", Mode.DECODE)
    text = narration.text()
    assert "The request moves from Streaming to CancelPending" in text
    assert "The adapter calls engine.abort, then forwards the chunk to the client." in text


def test_aggregated_cancel_aborts_at_the_stop_and_forwards_the_cancelled_terminal() -> None:
    """Outside decode, abort fires in the step that sees the stop (ABORT-IMMEDIATE) and
    the engine's cancelled terminal still reaches the client (STREAM-CANCELLED-TERMINAL)."""
    for mode in (Mode.AGGREGATED, Mode.PREFILL, Mode.ENCODE):
        narration = told("aggregated-cancel", mode)
        stop = step_of(narration, "stop")
        assert stop.rule == "ABORT-IMMEDIATE"
        assert stop.actions == (ABORT,)
        terminal = step_of(narration, "terminal:cancelled")
        assert ActionKind.FORWARD_DATA in terminal.actions
        assert "STREAM-CANCELLED-TERMINAL" in terminal.rules


def test_decode_deferred_abort_fires_at_the_first_token_chunk() -> None:
    """DECODE-DEFER: the stop moves the request to CancelPending without abort, and the
    first token chunk fires the abort before the chunk is forwarded."""
    narration = told("decode-deferred-abort", Mode.DECODE)
    stop = step_of(narration, "stop")
    assert (stop.after.control, stop.actions, stop.rule) == (ControlState.CANCEL_PENDING, (), "DECODE-DEFER")
    chunk = step_of(narration, "token_chunk")
    assert chunk.actions == (ABORT, ActionKind.FORWARD_DATA)
    assert chunk.rule == "DECODE-DEFER"
    assert any("KV transfer" in sentence for sentence in stop.sentences)


def test_side_channel_notice_releases_the_deferred_abort() -> None:
    """DECODE-DEFER: a notify_first_token() call releases the abort without any chunk."""
    notice = step_of(told("side-channel-first-token", Mode.DECODE), "first_token")
    assert notice.before.control is ControlState.CANCEL_PENDING
    assert notice.actions == (ABORT,)
    assert notice.rule == "DECODE-DEFER"


def test_notice_before_cancellation_makes_the_later_stop_abort_at_once() -> None:
    """The upstream side-channel test: first-token known early means a decode stop
    aborts immediately (ABORT-IMMEDIATE), with no CancelPending detour."""
    stop = step_of(told("side-channel-before-cancel", Mode.DECODE), "stop")
    assert (stop.after.control, stop.actions, stop.rule) == (ControlState.ABORTED, (ABORT,), "ABORT-IMMEDIATE")


def test_tokenless_bootstrap_chunk_does_not_release_the_abort() -> None:
    """DECODE-FIRST-TOKEN: SGLang's token-less bootstrap chunk is forwarded but leaves the
    abort deferred; the next chunk, with tokens, releases it."""
    narration = told("tokenless-bootstrap-chunk", Mode.DECODE)
    empty = step_of(narration, "empty_chunk")
    assert empty.after.control is ControlState.CANCEL_PENDING
    assert empty.actions == (ActionKind.FORWARD_DATA,)
    assert empty.rule == "DECODE-FIRST-TOKEN"
    assert "A chunk without token ids does not count as first-token." in empty.sentences
    assert ABORT in step_of(narration, "token_chunk").actions


def test_decode_drop_before_first_token_never_aborts() -> None:
    """DECODE-DROP: a drop while the abort is deferred ends the request with no abort."""
    drop = step_of(told("decode-drop-before-first-token", Mode.DECODE), "drop")
    assert (drop.after.control, drop.rule) == (ControlState.DONE, "DECODE-DROP")
    assert ABORT not in drop.actions


def test_first_token_and_stream_end_in_one_step_abort_once() -> None:
    """DECODE-TIE: a terminal carrying tokens while the abort is deferred is both
    first-token and the end; first-token wins, so abort fires once in that step."""
    narration = told("first-token-and-drop-same-step", Mode.DECODE)
    tie = narration.steps[-1]
    assert tie.rule == "DECODE-TIE"
    assert tie.actions.count(ABORT) == 1
    assert tie.after.control is ControlState.DONE


def test_typed_mid_stream_error_is_forwarded_and_ends_the_request() -> None:
    """STREAM-TERMINAL-LAST: a typed error is forwarded as an error item, reading stops
    and the request is over; a chunk after it is refused."""
    narration = told("typed-mid-stream-error", Mode.AGGREGATED)
    error = narration.steps[-1]
    assert error.actions[:2] == (ActionKind.FORWARD_ERROR, ActionKind.STOP_READING)
    assert error.rule == "STREAM-TERMINAL-LAST"
    after = narrate([*scenario("typed-mid-stream-error").parsed_events(), parse_event("token_chunk")], Mode.AGGREGATED)
    assert after.steps[-1].forbidden and after.steps[-1].rule == "STREAM-TERMINAL-LAST"


def test_setup_failure_only_returns_the_error() -> None:
    """STREAM-SETUP-FAILURE: the only thing done is returning the error; no watch, no abort."""
    narration = told("setup-failure", Mode.DECODE)
    [failure] = narration.steps
    assert failure.actions == (ActionKind.RETURN_SETUP_ERROR,)
    assert failure.rule == "STREAM-SETUP-FAILURE"
    assert not failure.after.watching


def test_kill_aborts_once_and_a_later_stop_changes_nothing() -> None:
    """ABORT-ONCE and CANCEL-OBSERVED: the kill aborts; the stop after it is ignored."""
    for mode in Mode:
        narration = told("kill", mode)
        assert step_of(narration, "kill").actions == (ABORT,)
        late_stop = step_of(narration, "stop")
        assert late_stop.ignored and late_stop.actions == ()
        assert late_stop.rule == "CANCEL-OBSERVED"
        assert "ABORT-ONCE" in step_of(narration, "kill").rules


def test_silent_drop_never_aborts() -> None:
    """ABORT-NEEDS-CANCEL: the client going away without stop or kill is not a cancellation."""
    for mode in Mode:
        drop = step_of(told("silent-drop", mode), "drop")
        assert drop.rule == "ABORT-NEEDS-CANCEL"
        assert ABORT not in drop.actions


def test_cancel_before_setup_aborts_at_setup_except_in_decode() -> None:
    """A stop before the stream exists is remembered; setup then aborts at once
    (ABORT-IMMEDIATE) except in decode, where the abort is deferred and, with no
    token ever arriving, dropped."""
    for mode in (Mode.AGGREGATED, Mode.PREFILL, Mode.ENCODE):
        setup = step_of(told("cancel-before-setup", mode), "setup")
        assert (setup.after.control, setup.actions, setup.rule) == (ControlState.ABORTED, (ABORT,), "ABORT-IMMEDIATE")
    decode = told("cancel-before-setup", Mode.DECODE)
    assert step_of(decode, "setup").after.control is ControlState.CANCEL_PENDING
    assert decode.abort_steps() == ()


def test_stream_end_without_terminal_forwards_nothing_more() -> None:
    """STREAM-END-WITHOUT-TERMINAL: the request ends and no terminal is invented."""
    end = step_of(told("stream-ends-without-terminal", Mode.AGGREGATED), "end")
    assert end.rule == "STREAM-END-WITHOUT-TERMINAL"
    assert end.actions == (ActionKind.RELEASE_WATCH,)


def test_forbidden_event_is_explained_with_its_rule_and_the_allowed_events(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """STREAM-EVENT-ORDER: a chunk before setup is refused, not crashed on; the reader
    learns which rule forbids it and what Idle accepts, and the narration goes on."""
    code, out, _ = run_cli(capsys, "--events", "token_chunk,setup,terminal:stop")
    assert code == 0
    assert "NOT ALLOWED" in out
    assert "rule STREAM-EVENT-ORDER" in out
    assert "Allowed in Idle: setup, setup_failed, stop, kill, first_token, disconnect." in out
    assert "\n3. terminal:stop\n" in out
    assert "The request ends in Done." in out


def test_sequence_that_does_not_finish_says_the_request_is_not_over() -> None:
    """An open-ended sequence must not read as if the request were complete."""
    narration = narrate([parse_event("setup"), parse_event("token_chunk")], Mode.AGGREGATED)
    assert "still in Streaming" in narration.conclusion()


def test_scenario_in_a_mode_where_it_does_not_apply_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    """Deferral exists only in decode; asking for it in agg is a usage error naming the right mode."""
    code, out, err = run_cli(capsys, "decode-deferred-abort", "--mode", "agg")
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "does not apply in mode agg" in err and "applies in: decode" in err


def test_mode_all_narrates_each_applicable_mode(capsys: pytest.CaptureFixture[str]) -> None:
    """`--mode all` tells the story once per mode the scenario applies to, and no other."""
    code, out, _ = run_cli(capsys, "aggregated-cancel", "--mode", "all")
    assert code == 0
    assert [line for line in out.splitlines() if line.startswith("Mode ")] == [
        line
        for mode in ("agg", "prefill", "encode")
        for line in out.splitlines()
        if line.startswith(f"Mode {mode}.")
    ]
    assert "Mode decode." not in out


def test_unknown_event_is_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A typo in --events names the item and lists the real events instead of a traceback."""
    code, _, err = run_cli(capsys, "--events", "setup,tokenchunk")
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "item 2" in err and "token_chunk" in err


def test_unknown_scenario_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "no-such-scenario")
    assert code == 2
    assert "clean-completion" in err


def test_frames_write_one_diagram_per_step_with_the_fired_edge_highlighted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--frames draws the start plus one frame per step; each step's frame shows the
    step's target state filled and the line of the row that fired in bold."""
    code, _, _ = run_cli(capsys, "decode-deferred-abort", "--frames", str(tmp_path), "--format", "dot")
    assert code == 0
    frames = sorted(tmp_path.iterdir())
    assert [frame.name for frame in frames] == [f"decode-deferred-abort-decode-{n:02d}.dot" for n in range(5)]
    third = frames[3].read_text()
    assert "<B>token_chunk / call_abort, forward_data" in third
    # One edge, drawn in two halves through its label: both are thick.
    thick = [line.split(" [")[0].strip() for line in third.splitlines() if "penwidth=2.5" in line]
    label = '"edge-CancelPending-Aborted-label"'
    assert thick == [f"CancelPending -> {label}", f"{label} -> Aborted"]
    [aborted] = [line for line in third.splitlines() if line.strip().startswith("Aborted [")]
    assert "filled" in aborted
    assert "penwidth=2.5" not in frames[0].read_text()


def test_list_with_a_mode_shows_only_the_scenarios_of_that_mode(capsys: pytest.CaptureFixture[str]) -> None:
    """A decode author asking for decode's scenarios should not be offered agg-only ones."""
    code, out, _ = run_cli(capsys, "--list", "--mode", "decode")
    assert code == 0
    listed = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert listed == [item.name for item in SCENARIOS if item.applies_to(Mode.DECODE)]
    assert "aggregated-cancel" not in listed and "decode-deferred-abort" in listed


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--list", "--mode", "bogus"], "unknown mode 'bogus'"),
        (["clean-completion", "--mode", "bogus"], "unknown mode 'bogus'"),
        (["--events", "setup", "--mode", "bogus"], "unknown mode 'bogus'"),
        (["--events", ""], "--events needs at least one event"),
        (["--events", " , "], "--events needs at least one event"),
        (["--events", "setup,,stop"], "--events item 2: empty"),
        (["clean-completion", "--format", "dot"], "give --frames DIR too"),
        (["--list", "--frames", "somewhere"], "--list narrates nothing"),
    ],
    ids=["list-bad-mode", "scenario-bad-mode", "events-bad-mode", "empty-events", "blank-events",
         "empty-event-item", "format-without-frames", "frames-with-list"],
)
def test_bad_options_are_one_specific_line(capsys: pytest.CaptureFixture[str], argv: list[str], complaint: str) -> None:
    """Each mistake is named for what it is, in one line, before anything is printed."""
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert complaint in err


def test_an_unusable_frames_path_is_refused_before_any_narration(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Reading a whole narration and then learning the frames could not be written
    wastes the reader's time; the path is checked first."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    code, out, err = run_cli(capsys, "decode-deferred-abort", "--frames", str(blocker), "--format", "dot")
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "is not a directory" in err
