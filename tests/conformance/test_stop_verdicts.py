"""How the kit reads what an engine did after a stop: the runtime kit's verdicts, on hand-made runs.

A stop that races the stream's own finish is no failure when that finish was due anyway (a one-step prefill
or encode, or the request's token limit); the same finish well before the limit is a stop ignored; a stream
silent since abort() returned was left waiting; one still yielding kept streaming.
"""

from __future__ import annotations

from typing import Any

import pytest
from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.model.stopped import AfterStop, Ending
from dynamo_backend_protocol.reference.annotated import Annotated
from dynamo_backend_protocol.reference.conformance.drive import Action, RequestPlan, RequestRun
from dynamo_backend_protocol.reference.conformance.recording import AbortCall, ItemSeen, RequestLog
from dynamo_backend_protocol.reference.conformance.rules import after_stop, describe_after_stop


def stopped_run(items_before: list[dict[str, Any]], items_after: list[dict[str, Any]], ending: Ending,
                max_tokens: int = 1000, abort_returned: bool = True) -> RequestRun:
    """A request stopped after ``items_before``, whose engine then yielded ``items_after``; abort() was
    called at the stop and returned at once (unless ``abort_returned`` is off)."""
    log = RequestLog("r", opened=0)
    seq = 1
    for item in items_before:
        log.items.append(ItemSeen(seq, item))
        seq += 1
    log.signals.append((seq, "stop"))
    log.aborts.append(AbortCall(seq + 1, "runtime", returned_seq=seq + 2 if abort_returned else None,
                                seconds=0.0001 if abort_returned else None))
    seq += 3
    for item in items_after:
        log.items.append(ItemSeen(seq, item))
        seq += 1
    received = [Annotated.from_data(item) for item in [*items_before, *items_after]]
    return RequestRun("r", RequestPlan(Action.STOP, len(items_before), max_tokens), received, ending,
                      cancelled_by_client=True, acted_after=len(items_before), log=log)


def token(n: int, finish: str | None = None) -> dict[str, Any]:
    chunk: dict[str, Any] = {"token_ids": [n], "index": 0}
    if finish is not None:
        chunk["finish_reason"] = finish
    return chunk


HANDOFF = {"token_ids": [], "index": 0, "disaggregated_params": {"bootstrap_room": 7}}


@pytest.mark.parametrize("mode", [Mode.PREFILL, Mode.ENCODE])
def test_a_one_step_stream_finishing_right_after_the_stop_raced_it(mode: Mode) -> None:
    run = stopped_run([HANDOFF], [token(1, "length")], Ending.TERMINAL)
    assert after_stop(run, mode) is AfterStop.FINISHED_FIRST


def test_a_finish_at_the_token_limit_right_after_the_stop_raced_it() -> None:
    run = stopped_run([token(1)], [token(2, "length")], Ending.TERMINAL, max_tokens=2)
    assert after_stop(run, Mode.AGGREGATED) is AfterStop.FINISHED_FIRST


def test_a_normal_finish_long_before_the_limit_is_a_stop_ignored() -> None:
    """What a library that 'finishes normally after abort' gives: the very next item, but 'stop' at token 2
    of 1000."""
    run = stopped_run([token(1)], [token(2, "stop")], Ending.TERMINAL)
    assert after_stop(run, Mode.AGGREGATED) is AfterStop.FINISHED_AS_IF_NOT_STOPPED
    assert after_stop(run, Mode.DECODE) is AfterStop.FINISHED_AS_IF_NOT_STOPPED


def test_silence_since_abort_returned_is_stranded_and_tokens_after_it_kept_streaming() -> None:
    silent = stopped_run([token(1)], [], Ending.TIMED_OUT)
    assert after_stop(silent, Mode.AGGREGATED) is AfterStop.STRANDED
    streaming = stopped_run([token(1)], [token(n) for n in range(2, 40)], Ending.TIMED_OUT)
    assert after_stop(streaming, Mode.AGGREGATED) is AfterStop.KEPT_STREAMING
    hung_abort = stopped_run([token(1)], [token(2)], Ending.TIMED_OUT, abort_returned=False)
    assert after_stop(hung_abort, Mode.AGGREGATED) is AfterStop.STRANDED


def test_the_reason_says_what_the_engine_did_after_the_stop() -> None:
    """Items after the stop, what abort() did, and how (or whether) the stream ended."""
    said = describe_after_stop(stopped_run([token(1)], [token(n) for n in range(2, 40)], Ending.TIMED_OUT), 2.0)
    assert "abort() was called once and returned after 0.1 ms" in said
    assert "the engine yielded 38 more item(s)" in said and "had not ended 2 s after the stop" in said
    cancelled = stopped_run([token(1)], [token(2, "cancelled")], Ending.TERMINAL)
    assert after_stop(cancelled, Mode.AGGREGATED) is AfterStop.CANCELLED
