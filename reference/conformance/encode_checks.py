"""Upstream's encode suite: an encode worker answers with one hand-off chunk, and nothing else.

Judged on the plain request's raw stream, as upstream's ``validate_encode_items``
does, except that each check gets its own verdict: the count on the whole
stream, the rest on its terminal chunk.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dynamo_backend_protocol.model import FinishReason
from dynamo_backend_protocol.model.chunks import finish_reason_meaning
from dynamo_backend_protocol.reference.conformance.checks import Failure, Verdicts

F = Failure


def encode_verdicts(items: Sequence[object], terminal: Mapping[str, object] | None, prompt_tokens: int) -> Verdicts:
    """The encode checks on one stream: all its ``items`` and its ``terminal`` (None if it had none)."""
    count = len(items)
    verdicts: Verdicts = {
        F.ENCODE_CHUNK_COUNT: None
        if count == 1
        else f"an encode request got {count} items; an encode worker yields exactly one, the terminal hand-off "
        "(encoder_terminal_chunk), with no progress chunks before it",
    }
    if terminal is None:
        return verdicts
    reason = terminal.get("finish_reason")
    verdicts[F.ENCODE_TERMINAL_EXPECTED] = (
        None
        if finish_reason_meaning(reason) is FinishReason.STOP
        else f"the encode terminal's finish_reason is {reason!r}; a hand-off ends with 'stop'"
    )
    tokens = terminal.get("token_ids")
    verdicts[F.ENCODE_TOKENS_NOT_EMPTY] = (
        None
        if not tokens
        else f"the encode terminal carries {len(tokens) if isinstance(tokens, list) else tokens!r} token id(s); "
        "an encode worker hands off encoder output, not generated tokens: token_ids must be []"
    )
    result = terminal.get("encoder_result")
    verdicts[F.ENCODER_RESULT_EXPECTED_OBJECT] = (
        None
        if isinstance(result, dict)
        else f"the encode terminal's encoder_result is {type(result).__name__}, not an object; "
        "put the hand-off in a dict (encoder_terminal_chunk)"
    )
    verdicts[F.ENCODE_USAGE_MISMATCH] = _usage_problem(terminal.get("completion_usage"), prompt_tokens)
    return verdicts


def _usage_problem(usage: object, prompt_tokens: int) -> str | None:
    if usage is None:
        return None
    expected = {"prompt_tokens": prompt_tokens, "completion_tokens": 0, "total_tokens": prompt_tokens}
    got = {key: usage.get(key) for key in expected} if isinstance(usage, Mapping) else usage
    if got == expected:
        return None
    return (
        f"the encode terminal's completion_usage is {got!r}; an encode hand-off reports prompt={prompt_tokens}, "
        f"completion=0, total={prompt_tokens} (or no usage at all)"
    )
