"""The adapter's verdict on a chunk does not depend on how the chunk reaches its validation.

The model's reader (``model.reading``) settles the common one-token chunk with
its compiled check, for speed, and sends every other item to the model's full
classifier (``model.chunks``).  A plain ``dict`` can take the compiled check; a
``dict`` subclass with the same contents always takes the classifier.  If the
two ever disagreed (the compiled check forwarding a chunk the classifier would
refuse, or the reverse), a backend's stream would be judged differently by an
accident of its chunk type.
"""

from __future__ import annotations

from typing import Any

from adapter_helpers import REQUEST, ListEngine, async_test, collect
from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.reference import Annotated, Context, EngineAdapter
from hypothesis import example, given, settings
from hypothesis import strategies as st


class OtherMapping(dict[str, Any]):
    """Same contents as a plain dict, never taken by the compiled check."""


# Edge values near each of the compiled check's conditions, most often as a single token.
token_values = st.one_of(st.sampled_from([-1, 0, 1, 2**64, True, False, "7", 1.0]), st.integers())
token_ids = st.one_of(
    st.lists(token_values, min_size=1, max_size=1),
    st.lists(token_values, max_size=3),
    st.sampled_from([None, "1", (1,)]),
)
chunks = st.fixed_dictionaries(
    {"token_ids": token_ids},
    optional={
        "index": st.sampled_from([-1, 0, 1, True, False, 0.0, None, "0"]),
        "finish_reason": st.sampled_from([None, "bogus"]),
        "completion_usage": st.sampled_from([{"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}, 5]),
        "log_probs": st.just([0.5]),
    },
)


def outcome(items: list[Annotated]) -> list[tuple[dict[str, Any] | None, str | None]]:
    return [(None if item.data is None else dict(item.data), None if item.error is None else str(item.error))
            for item in items]


async def run(mode: Mode, stream: list[dict[str, Any]]) -> list[tuple[dict[str, Any] | None, str | None]]:
    adapter = EngineAdapter(ListEngine(stream), mode)
    return outcome(await collect(await adapter.generate(REQUEST, Context())))


@settings(max_examples=80, deadline=None, database=None, derandomize=True)
# One chunk just past each of the compiled check's conditions, whatever the draw finds.
@example(drawn=[{"token_ids": [-1]}], mode=Mode.AGGREGATED)
@example(drawn=[{"token_ids": [True]}], mode=Mode.AGGREGATED)
@example(drawn=[{"token_ids": [1], "index": -1}], mode=Mode.AGGREGATED)
@example(drawn=[{"token_ids": [1], "index": True}], mode=Mode.DECODE)
@example(drawn=[{"token_ids": [1], "index": False}], mode=Mode.AGGREGATED)
@example(drawn=[{"token_ids": [1], "index": 0.0}], mode=Mode.AGGREGATED)
@example(drawn=[{"token_ids": [1], "finish_reason": "bogus"}], mode=Mode.AGGREGATED)
@example(drawn=[{"token_ids": [1], "completion_usage": 5}], mode=Mode.AGGREGATED)
# Two keys with no index of 0 among them: the key count alone must not settle it.
@example(drawn=[{"token_ids": [1], "finish_reason": None}], mode=Mode.AGGREGATED)
@example(drawn=[{"token_ids": [1], "index": 0, "finish_reason": "bogus"}], mode=Mode.AGGREGATED)
@example(drawn=[{"token_ids": [1], "index": 0, "completion_usage": 5}], mode=Mode.DECODE)
@example(drawn=[{"token_ids": [1], "index": 1}, {"token_ids": [1], "log_probs": [0.5]}], mode=Mode.AGGREGATED)
@example(drawn=[{"token_ids": [1], "completion_usage": {"prompt_tokens": 1}}], mode=Mode.DECODE)
# After a list of another size the compiled check measures lists instead of unpacking them.
@example(drawn=[{"token_ids": [1, 2]}, {"token_ids": [3, -1]}], mode=Mode.AGGREGATED)
@example(drawn=[{"token_ids": [1, 2]}, {"token_ids": [True]}], mode=Mode.AGGREGATED)
@example(drawn=[{"token_ids": []}, {"token_ids": [1], "index": False}], mode=Mode.DECODE)
@example(drawn=[{"index": 0}, {"token_ids": [1.0]}], mode=Mode.AGGREGATED)
@given(drawn=st.lists(chunks, min_size=1, max_size=4), mode=st.sampled_from([Mode.AGGREGATED, Mode.DECODE]))
def test_a_chunk_is_judged_alike_whether_or_not_it_takes_the_inline_check(
    drawn: list[dict[str, Any]], mode: Mode
) -> None:
    # Two valid tokens first, so the drawn chunks arrive when the adapter's fast token step is armed.
    lead = [{"token_ids": [5]}, {"token_ids": [6]}]
    end = {"token_ids": [], "finish_reason": "stop"}

    @async_test
    async def compare() -> None:
        plain = await run(mode, [*lead, *drawn, end])
        general = await run(mode, [OtherMapping(chunk) for chunk in [*lead, *drawn, end]])
        assert plain == general

    compare()
