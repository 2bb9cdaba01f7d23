"""A stopped stream under Dynamo's real Worker is classified from the engine's side of the recording as the
default run classifies one: the verdicts here are what the kit-verdicts mapping says of each behaviour.

No Dynamo needed: the lines are the recorder's, written out as a run under the Worker produces them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest
from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.model.stopped import AfterStop
from dynamo_backend_protocol.reference.runtime.engine_side import by_request
from dynamo_backend_protocol.reference.runtime.probes import ClientRun
from dynamo_backend_protocol.reference.runtime.stops import after_stop

MAX_TOKENS = 1000
OPENED: list[Mapping[str, object]] = [{"obs": "engine.generate", "mode": "agg"}, {"obs": "engine.setup"},
                                      {"obs": "engine.item", "item": "token_chunk", "n": 1}]


def _classified(*after_open: Mapping[str, object], mode: Mode = Mode.AGGREGATED) -> AfterStop | None:
    lines = [json.dumps({"request": "r", "t": float(t), **line}) for t, line in enumerate([*OPENED, *after_open])]
    return after_stop(by_request(lines)["r"], ClientRun("r", [{"token_ids": [1]}]), mode, MAX_TOKENS)


Line = Mapping[str, object]
STOP: Line = {"obs": "context.stop"}
STOP_WHILE_READING: Line = {"obs": "context.stop", "reading": True}
ABORT: Line = {"obs": "engine.abort"}
READ: Line = {"obs": "engine.read"}
END: Line = {"obs": "engine.end"}
RAISE: Line = {"obs": "engine.raise", "error": "RuntimeError"}


def _item(name: str, n: int) -> Line:
    return {"obs": "engine.item", "item": name, "n": n}


@pytest.mark.parametrize(("lines", "expected"), [
    # The item being made when the stop came, then a 'cancelled' terminal for the runtime's next read.
    ((STOP, ABORT, _item("token_chunk", 2), READ, _item("terminal:cancelled", 3), READ, END),
     AfterStop.CANCELLED),
    # The runtime's read after the stop answered with a token: Dynamo reads no more, the engine went on.
    ((STOP, ABORT, _item("token_chunk", 2), READ, _item("token_chunk", 3)), AfterStop.KEPT_STREAMING),
    # The read under way when the stop showed was never answered: silent after abort().
    ((STOP_WHILE_READING, ABORT), AfterStop.STRANDED),
    # Asked again after the stop and never answered.
    ((STOP, ABORT, _item("token_chunk", 2), READ), AfterStop.STRANDED),
    # Ended with 'length' three items after the stop: as if nobody had stopped it.
    ((STOP, ABORT, _item("token_chunk", 2), READ, _item("token_chunk", 3), READ, _item("terminal:length", 4)),
     AfterStop.FINISHED_AS_IF_NOT_STOPPED),
    # Raised once stopped: ended otherwise (neither ignored nor stranded).
    ((STOP, ABORT, READ, RAISE), AfterStop.OTHER),
    # The item being made when the stop came, and no read since: what the engine does once stopped is not shown.
    ((STOP, ABORT, _item("token_chunk", 2)), None),
], ids=["cancelled", "kept-streaming", "silent-at-the-stop", "silent-when-asked", "finished-anyway", "raised",
        "not-shown"])
def test_a_stopped_stream_is_classified_from_what_the_engine_did_once_stopped(
    lines: tuple[Line, ...], expected: AfterStop | None
) -> None:
    assert _classified(*lines) == expected


def test_a_one_chunk_stream_finishing_on_the_stop_finished_first_which_is_allowed() -> None:
    finished = _classified(STOP, _item("terminal:length+tokens", 2), END, mode=Mode.PREFILL)
    assert finished is AfterStop.FINISHED_FIRST and finished.honoured


def test_a_stream_that_ended_before_its_stop_showed_was_not_ignoring_it() -> None:
    assert _classified(_item("terminal:length", 2), END, STOP, ABORT) is AfterStop.FINISHED_FIRST


def test_a_stop_racing_the_last_token_is_judged_by_the_tokens_the_engine_yielded_not_those_the_client_got() -> None:
    """Dynamo stops forwarding a stopped stream, so the client of a short request may lack its last token; the
    finish that came as the very next item was due (the engine's items reached max_tokens) and is allowed,
    where the same finish short of the limit is the stop ignored."""
    def classified(max_tokens: int) -> AfterStop | None:
        lines: list[Line] = [{"obs": "engine.generate", "mode": "agg"}, {"obs": "engine.setup"},
                 {"obs": "engine.item", "item": "token_chunk", "n": 1, "tokens": 1}, STOP, ABORT,
                 {"obs": "engine.item", "item": "terminal:length+tokens", "n": 2, "tokens": 1}, READ, END]
        recorded = [json.dumps({"request": "r", "t": float(t), **line}) for t, line in enumerate(lines)]
        return after_stop(by_request(recorded)["r"], ClientRun("r", [{"token_ids": [1]}]), Mode.AGGREGATED,
                          max_tokens)

    assert classified(max_tokens=2) is AfterStop.FINISHED_FIRST
    assert classified(max_tokens=3) is AfterStop.FINISHED_AS_IF_NOT_STOPPED
