"""What became of a stream after its stop (model/stopped.py): the one classification both the kit's default
run and ``conform --runtime dynamo`` use, so an engine's stop handling gets the same verdict under either.

Each test gives :func:`classify_stopped` what a reader saw of one stopped stream and checks the answer an
engine author would be told (honoured, ignored, stranded, or something else).
"""

from __future__ import annotations

import pytest
from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.model.stopped import AfterStop, Ending, StoppedStream, classify_stopped

STREAMING_MODES = (Mode.AGGREGATED, Mode.DECODE)


@pytest.mark.parametrize("reason", ["cancelled", "abort"])
def test_a_cancelled_terminal_honours_the_stop(reason: str) -> None:
    """'cancelled' is what a stopped stream owes; Dynamo reads vLLM's 'abort' as the same finish."""
    stream = StoppedStream(Ending.TERMINAL, reason, items_after_stop=5)
    assert classify_stopped(stream, Mode.AGGREGATED) is AfterStop.CANCELLED


def test_an_error_terminal_after_the_stop_is_neither_honoured_nor_ignored() -> None:
    """A stream that failed after its stop is the error checks' to name, not a stop verdict."""
    outcome = classify_stopped(StoppedStream(Ending.TERMINAL, "error: out of memory", 1), Mode.AGGREGATED)
    assert outcome is AfterStop.OTHER
    assert not outcome.honoured and not outcome.ignored


@pytest.mark.parametrize("mode", [Mode.PREFILL, Mode.ENCODE])
def test_a_one_step_stream_finishing_right_after_the_stop_finished_first(mode: Mode) -> None:
    """A prefill clamped to one token or an encode hand-off may be done before the stop can act."""
    assert classify_stopped(StoppedStream(Ending.TERMINAL, "length", 1), mode) is AfterStop.FINISHED_FIRST


def test_a_finish_at_the_token_limit_right_after_the_stop_finished_first() -> None:
    """The request had nothing left to say: its last token and the stop crossed."""
    stream = StoppedStream(Ending.TERMINAL, "length", 1, at_token_limit=True)
    assert classify_stopped(stream, Mode.AGGREGATED) is AfterStop.FINISHED_FIRST


@pytest.mark.parametrize("mode", STREAMING_MODES, ids=str)
def test_a_normal_finish_before_the_limit_is_a_stop_ignored(mode: Mode) -> None:
    """An engine that 'finishes normally after abort' at token 2 of 1000 never looked at the stop."""
    outcome = classify_stopped(StoppedStream(Ending.TERMINAL, "stop", 1), mode)
    assert outcome is AfterStop.FINISHED_AS_IF_NOT_STOPPED and outcome.ignored


def test_a_due_finish_that_came_after_more_tokens_is_a_stop_ignored() -> None:
    """The race excuse covers only the very next item: tokens yielded after the stop mean it streamed on."""
    stream = StoppedStream(Ending.TERMINAL, "length", items_after_stop=3, at_token_limit=True)
    assert classify_stopped(stream, Mode.AGGREGATED) is AfterStop.FINISHED_AS_IF_NOT_STOPPED


def test_silence_since_abort_returned_strands_the_stream() -> None:
    """Dynamo reads a stopped stream on with no timeout: an engine silent after abort() hangs it for ever."""
    stream = StoppedStream(Ending.TIMED_OUT, items_after_stop=0, yielded_since_abort=0)
    assert classify_stopped(stream, Mode.AGGREGATED) is AfterStop.STRANDED


def test_items_since_abort_returned_kept_streaming() -> None:
    """Still yielding after abort() returned, and never ending, is a stop ignored, not a stream left silent."""
    stream = StoppedStream(Ending.TIMED_OUT, items_after_stop=38, yielded_since_abort=38)
    outcome = classify_stopped(stream, Mode.AGGREGATED)
    assert outcome is AfterStop.KEPT_STREAMING and outcome.ignored


def test_an_abort_that_never_returned_strands_the_stream_whatever_came_before() -> None:
    """Items yielded while abort() hangs show nothing about the stop: the stream still never ends."""
    stream = StoppedStream(Ending.TIMED_OUT, items_after_stop=1, yielded_since_abort=1, abort_hung=True)
    assert classify_stopped(stream, Mode.AGGREGATED) is AfterStop.STRANDED


def test_a_stream_that_never_reached_the_engine_and_never_ended_is_stranded() -> None:
    """Nothing of the request reached the engine, yet the client still waits: left silent."""
    stream = StoppedStream(Ending.TIMED_OUT, yielded_since_abort=None)
    assert classify_stopped(stream, Mode.AGGREGATED) is AfterStop.STRANDED


@pytest.mark.parametrize("ending", [Ending.ERROR_ITEM, Ending.EXHAUSTED, Ending.DROPPED, Ending.SETUP_FAILED])
def test_any_other_ending_is_for_the_other_checks(ending: Ending) -> None:
    """An error item, a missing terminal, a drop or a failed setup each has its own check and message."""
    assert classify_stopped(StoppedStream(ending, items_after_stop=1), Mode.AGGREGATED) is AfterStop.OTHER


def test_a_stream_ended_whole_before_the_stop_showed_finished_first() -> None:
    """A stop that reached the engine only after its terminal came too late to owe a 'cancelled'."""
    stream = StoppedStream(Ending.TERMINAL, "stop", stop_showed=False)
    assert classify_stopped(stream, Mode.AGGREGATED) is AfterStop.FINISHED_FIRST


def test_a_stream_that_ended_broken_before_the_stop_showed_is_for_the_other_checks() -> None:
    """An engine that raised before the stop showed did not finish: that is no stop verdict either way."""
    stream = StoppedStream(Ending.ERROR_ITEM, stop_showed=False)
    assert classify_stopped(stream, Mode.AGGREGATED) is AfterStop.OTHER


def test_honoured_and_ignored_split_the_verdicts_and_stranded_is_neither() -> None:
    """The kit reports an ignored stop (MidStreamCancellationIgnored) and a stranded stream
    (AbortedStreamNotEnded) as different bugs; a verdict in both would be named twice."""
    assert {outcome for outcome in AfterStop if outcome.honoured} == {AfterStop.CANCELLED, AfterStop.FINISHED_FIRST}
    assert {outcome for outcome in AfterStop if outcome.ignored} == {
        AfterStop.KEPT_STREAMING, AfterStop.FINISHED_AS_IF_NOT_STOPPED}
    assert not AfterStop.STRANDED.honoured and not AfterStop.STRANDED.ignored
