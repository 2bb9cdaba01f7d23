"""The model's reader, which the adapter asks about every item, raise and end of a stream.

Its answers are checked against the model's parts it stands for (``classify_item``
and the machine's own steps) and against the fault rules (FAULT-ENGINE-RAISES,
FAULT-INTERRUPT), without the adapter around it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from dynamo_backend_protocol.model import (
    ActionKind,
    BackendError,
    DynamoError,
    EventKind,
    Mode,
    RequestMachine,
    event,
)
from dynamo_backend_protocol.model.chunks import classify_item
from dynamo_backend_protocol.model.faults import FAULT_ENGINE_RAISES, FAULT_INTERRUPT, setup_fault
from dynamo_backend_protocol.model.reading import StreamReader

SETUP = event(EventKind.SETUP)


def reader_for(mode: Mode, heard: list[str] | None = None) -> StreamReader:
    machine = RequestMachine(mode)
    machine.fire(SETUP)
    notes = heard if heard is not None else []
    return StreamReader(machine, validate=True, cancellation=asyncio.CancelledError,
                        hear_signals=lambda: notes.append("heard"))


STREAM: list[Any] = [
    {"token_ids": [1], "index": 0},
    {"token_ids": [2]},
    {"token_ids": [3], "index": 0},
    {"token_ids": [4, 5]},
    {"token_ids": [6], "index": 1},
    {"token_ids": []},
    {"token_ids": [7], "index": 0},
    {"token_ids": [8], "finish_reason": "stop"},
]


@pytest.mark.parametrize("mode", [Mode.AGGREGATED, Mode.DECODE], ids=lambda mode: mode.value)
def test_the_reader_steps_as_the_classifier_and_the_machine_would(mode: Mode) -> None:
    """The common case included: every item's event, step and actions are the ones
    ``classify_item`` and a plain machine give for it."""
    reader = reader_for(mode)
    expected = RequestMachine(mode)
    expected.fire(SETUP)
    for position, item in enumerate(STREAM, start=1):
        verdict = classify_item(item, position, mode)
        assert not isinstance(verdict, DynamoError)
        assert reader.read(item) == expected.fire(verdict)
    assert reader.machine.history == expected.history
    assert reader.machine.over


def test_a_malformed_item_is_named_by_its_position_and_ends_the_stream() -> None:
    reader = reader_for(Mode.AGGREGATED)
    reader.read({"token_ids": [1]})
    actions = reader.read({"token_ids": [-2]})
    assert actions == (ActionKind.FORWARD_ERROR, ActionKind.STOP_READING, ActionKind.RELEASE_WATCH)
    assert reader.error is not None and "engine item #2" in reader.error.message


def test_signals_are_heard_before_an_item_that_ends_the_stream_and_not_before_others() -> None:
    heard: list[str] = []
    reader = reader_for(Mode.AGGREGATED, heard)
    reader.read({"token_ids": [1]})
    reader.read({"token_ids": [2]})
    assert heard == []
    reader.read({"token_ids": [], "finish_reason": "stop"})
    assert heard == ["heard"]


def test_an_item_read_after_the_request_is_over_is_neither_fired_nor_forwarded() -> None:
    """The consumer dropped the request while a read was pending: reading stops there."""
    reader = reader_for(Mode.AGGREGATED)
    reader.read({"token_ids": [1]})
    reader.read({"token_ids": [2]})
    reader.machine.fire(event(EventKind.DROP))
    steps = len(reader.machine.history)
    assert reader.read({"token_ids": [3]}) == (ActionKind.STOP_READING,)
    assert len(reader.machine.history) == steps


class Interrupt(BaseException):
    pass


@pytest.mark.parametrize(
    ("raised", "consumer_cancelling", "kind"),
    [
        (ValueError("boom"), False, BackendError.UNKNOWN),
        (DynamoError(BackendError.ENGINE_SHUTDOWN, "gone"), False, BackendError.ENGINE_SHUTDOWN),
        (asyncio.CancelledError(), False, BackendError.CANCELLED),
        (GeneratorExit(), False, BackendError.UNKNOWN),
        (asyncio.CancelledError(), True, None),
        (KeyboardInterrupt(), False, None),
        (Interrupt(), False, None),
    ],
    ids=["exception", "typed", "engine-cancelled", "generator-exit", "consumer-cancelled", "keyboard", "other"],
)
def test_what_the_engines_stream_raising_ends_the_request_with(
    raised: BaseException, consumer_cancelling: bool, kind: BackendError | None
) -> None:
    """FAULT-ENGINE-RAISES: one typed error, then the end. FAULT-INTERRUPT and the consumer's own
    cancellation: nothing is forwarded, the exception goes on (None)."""
    reader = reader_for(Mode.AGGREGATED)
    reader.read({"token_ids": [1]})
    actions = reader.raised(raised, consumer_cancelling)
    if kind is None:
        assert actions is None
        return
    assert actions == (ActionKind.FORWARD_ERROR, ActionKind.STOP_READING, ActionKind.RELEASE_WATCH)
    assert reader.error is not None and reader.error.kind is kind


@pytest.mark.parametrize(
    ("raised", "rule", "propagates"),
    [(ValueError("no"), FAULT_ENGINE_RAISES, False), (KeyboardInterrupt(), FAULT_INTERRUPT, True),
     (asyncio.CancelledError(), FAULT_INTERRUPT, True)],
    ids=["exception", "keyboard", "cancelled"],
)
def test_what_setup_raising_is(raised: BaseException, rule: str, propagates: bool) -> None:
    response = setup_fault(raised)
    assert (response.rule, response.propagates, response.at_setup) == (rule, propagates, True)
