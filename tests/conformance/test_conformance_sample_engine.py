"""SampleEngine, the bundled example: what each mode's requests get back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from dynamo_backend_protocol.model import BackendError, DynamoError, Mode
from dynamo_backend_protocol.reference import Context, SampleEngine


def collect(engine: SampleEngine, request: dict[str, Any], context: Context | None = None) -> list[dict[str, Any]]:
    async def scenario() -> list[dict[str, Any]]:
        await engine.start(3)
        return [chunk async for chunk in engine.generate(request, context or Context())]

    return asyncio.run(scenario())


def test_it_yields_max_tokens_rotating_tokens_ending_with_length() -> None:
    """The request's max_tokens decides the count; the last chunk is the 'length' terminal with usage."""
    chunks = collect(SampleEngine(vocab_size=3), {"token_ids": [9, 9], "stop_conditions": {"max_tokens": 5}})
    assert [c["token_ids"] for c in chunks] == [[1], [2], [0], [1], [2]]
    assert [c.get("finish_reason") for c in chunks] == [None] * 4 + ["length"]
    assert chunks[-1]["completion_usage"] == {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}


def test_without_max_tokens_it_uses_its_own_default() -> None:
    """The constructor's max_tokens applies when the request sets none."""
    assert len(collect(SampleEngine(max_tokens=3), {"token_ids": [1]})) == 3


def test_a_stopped_request_ends_with_a_cancelled_terminal() -> None:
    """Stopped before it starts, it yields only the 'cancelled' terminal."""
    context = Context()
    context.stop_generating()
    chunks = collect(SampleEngine(), {"token_ids": [1]}, context)
    assert [c["finish_reason"] for c in chunks] == ["cancelled"]


def test_a_prefill_terminal_carries_disaggregated_params() -> None:
    """The hand-off payload names the worker that holds the KV blocks."""
    chunks = collect(SampleEngine(mode=Mode.PREFILL), {"token_ids": [1], "stop_conditions": {"max_tokens": 1}})
    assert chunks[-1]["disaggregated_params"]["prefill_worker"] == 3


def test_an_encode_request_gets_one_stop_terminal_handing_off_an_encoder_result_object() -> None:
    """Dynamo's encode hand-off: one 'stop' terminal, no tokens, an encoder_result dict, zero completion tokens."""
    request = {"token_ids": [1, 2], "multi_modal_data": {"image": []}, "stop_conditions": {"max_tokens": 2}}
    chunks = collect(SampleEngine(mode=Mode.ENCODE), request)
    assert [(c["finish_reason"], c["token_ids"]) for c in chunks] == [("stop", [])]
    assert chunks[0]["encoder_result"]["media"] == ["image"]
    assert chunks[0]["completion_usage"] == {"prompt_tokens": 2, "completion_tokens": 0, "total_tokens": 2}


def test_a_decode_request_without_prefill_result_is_rejected_as_invalid_argument() -> None:
    """Rejected at setup (no stream), with the typed InvalidArgument kind."""
    with pytest.raises(DynamoError) as caught:
        SampleEngine(mode=Mode.DECODE).generate({"token_ids": [1]}, Context())
    assert caught.value.kind is BackendError.INVALID_ARGUMENT
    assert "prefill_result" in caught.value.message


def test_a_decode_request_with_prefill_result_is_served() -> None:
    """With the prefill worker's result, decode generates as usual."""
    request = {"token_ids": [1], "prefill_result": {"disaggregated_params": {}}, "stop_conditions": {"max_tokens": 2}}
    assert collect(SampleEngine(mode=Mode.DECODE), request)[-1]["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("options", "words"),
    [({"max_tokens": 0}, "max_tokens"), ({"delay": -1.0}, "delay"), ({"vocab_size": 0}, "vocab_size")],
    ids=["max_tokens", "delay", "vocab_size"],
)
def test_bad_settings_name_the_setting(options: dict[str, Any], words: str) -> None:
    """A ValueError naming what is wrong, at construction."""
    with pytest.raises(ValueError, match=words):
        SampleEngine(**options)
