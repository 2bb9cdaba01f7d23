"""What an engine item means to the protocol: which event it is, or why it is malformed.

The model's reader (:mod:`.reading`) hands every item it does not settle as
the common token chunk to :func:`classify_item`; the answer is the event to
fire, or a :class:`ChunkProblem` that the adapter forwards as a typed error
item.  Deciding what an item *is* is a protocol decision, so it lives here,
not in the adapter.
"""

from __future__ import annotations

from dynamo_backend_protocol.model.errors import BackendError, DynamoError
from dynamo_backend_protocol.model.exceptions import ProtocolError
from dynamo_backend_protocol.model.vocabulary import Event, EventKind, FinishReason, Mode, event

TOKEN_CHUNK = event(EventKind.TOKEN_CHUNK)
EMPTY_CHUNK = event(EventKind.EMPTY_CHUNK)
ERROR = event(EventKind.ERROR)
_TERMINALS: dict[tuple[FinishReason, bool], Event] = {
    (reason, with_tokens): event(EventKind.TERMINAL, reason, with_tokens)
    for reason in FinishReason
    for with_tokens in (False, True)
}
_LENIENT_UNKNOWN_REASON = FinishReason.ERROR


class ChunkProblem(DynamoError, ProtocolError):
    """A malformed engine item: which item (1-based position), which field, what is wrong.

    A :class:`DynamoError` first, since it is the typed error item the adapter forwards to the
    client; and the adapter's own finding, so a :class:`ProtocolError` too.
    """

    def __init__(self, position: int, field: str, problem: str) -> None:
        self.position = position
        self.field = field
        self.problem = problem
        super().__init__(BackendError.UNKNOWN, f"engine item #{position}: field {field!r} {problem}")


def finish_reason_meaning(reason: object) -> FinishReason | None:
    """What a chunk's ``finish_reason`` means to Dynamo (``abort`` is cancelled), or None if it means nothing."""
    return FinishReason.parse(reason) if type(reason) is str else None


def _describe(value: object) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _token_problem(token_ids: object) -> str | None:
    if type(token_ids) is not list:
        return f"must be a list of non-negative ints, got {_describe(token_ids)}"
    for offset, token_id in enumerate(token_ids):
        if type(token_id) is not int or token_id < 0:
            return f"must hold non-negative ints; element {offset} is {_describe(token_id)}"
    return None


_USAGE_COUNTERS = ("prompt_tokens", "completion_tokens", "total_tokens")


def _usage_problem(usage: object) -> str | None:
    if usage is None:
        return None
    if not isinstance(usage, dict):
        return f"must be an object, got {_describe(usage)}"
    for counter in _USAGE_COUNTERS:
        value = usage.get(counter)
        if value is not None and (type(value) is not int or value < 0):
            return f"{counter} must be a non-negative int, got {_describe(value)}"
    return None


def classify_item(item: object, position: int, mode: Mode, validate: bool = True) -> Event | ChunkProblem:
    """The event an engine item stands for, or the problem that makes it malformed.

    ``position`` counts the stream's items from 1.  With ``validate`` off only
    what the protocol needs is read: an item is a terminal if it has a
    ``finish_reason`` (an unknown reason counts as ``error``) and carries
    tokens if ``token_ids`` is non-empty.  This runs for every item the reader's
    common case does not take, so the common shapes (a dict of non-negative int
    tokens, one or several, no terminal, no usage) are checked first.
    """
    if type(item) is not dict:
        if isinstance(item, DynamoError):
            return ERROR
        if not isinstance(item, dict):
            return ChunkProblem(position, "<item>", f"must be a dict chunk, got {_describe(item)}")
    token_ids = item.get("token_ids")
    reason = item.get("finish_reason")
    if validate:
        if reason is None and type(token_ids) is list and token_ids and "completion_usage" not in item:
            index = item.get("index", 0)
            if type(index) is int and index >= 0:
                for token_id in token_ids:
                    if type(token_id) is not int or token_id < 0:
                        break
                else:
                    return TOKEN_CHUNK
        problem = _shape_problem(item, token_ids, reason, position, mode)
        if problem is not None:
            return problem
    if reason is None:
        return TOKEN_CHUNK if token_ids else EMPTY_CHUNK
    return _TERMINALS[(finish_reason_meaning(reason) or _LENIENT_UNKNOWN_REASON, bool(token_ids))]


def _shape_problem(
    item: dict[str, object], token_ids: object, reason: object, position: int, mode: Mode
) -> ChunkProblem | None:
    if "token_ids" not in item:
        return ChunkProblem(position, "token_ids", "is missing")
    problem = _token_problem(token_ids)
    if problem is not None:
        return ChunkProblem(position, "token_ids", problem)
    index = item.get("index")
    if index is not None and (type(index) is not int or index < 0):
        return ChunkProblem(position, "index", f"must be a non-negative int, got {_describe(index)}")
    if "completion_usage" in item:
        usage_problem = _usage_problem(item["completion_usage"])
        if usage_problem is not None:
            return ChunkProblem(position, "completion_usage", usage_problem)
    if reason is None:
        return None
    parsed = finish_reason_meaning(reason)
    if parsed is None:
        return ChunkProblem(
            position, "finish_reason", f"must be one of {FinishReason.spellings()}, got {_describe(reason)}"
        )
    if mode is Mode.ENCODE and parsed is not FinishReason.CANCELLED and not isinstance(
        item.get("encoder_result"), dict
    ):
        return ChunkProblem(
            position,
            "encoder_result",
            f"must be an object on an encode-mode {reason!r} terminal, got {_describe(item.get('encoder_result'))}",
        )
    return None


def unreadable_item(position: int, fault: Exception) -> ChunkProblem:
    """The problem reported for an item whose fields could not even be read (FAULT-ENGINE-RAISES):
    its mapping or one of its values raised while being looked at."""
    return ChunkProblem(position, "<item>", f"could not be read: {describe_exception(fault)}")


def describe_exception(fault: BaseException) -> str:
    """``Type: message``, even when the exception's own ``str`` raises."""
    try:
        message = str(fault)
    except Exception:
        message = "<message unprintable>"
    name = type(fault).__name__
    return f"{name}: {message}" if message else name
