"""What the kit keeps of an item it has seen: enough to judge it, not its whole payload.

The kit judges an item by its shape (``classify_item``), by whether it
carries tokens and by its finish reason; it never reads past the first few
token ids of a well-formed list.  An engine whose chunks carry megabytes of
token ids (a terminal with the whole output, say) would otherwise have every
request's payload kept until its check ends: a run over such an engine took
about 1.1 GiB.  :func:`kept` keeps such a chunk as a copy whose ``token_ids``
is the first :data:`KEPT_TOKEN_IDS` of them, which every check judges exactly
as the whole (a list of non-negative ints, non-empty).  A list with an id that
is not a non-negative int is kept whole: it is what a MalformedChunk reason
names.
"""

from __future__ import annotations

from dynamo_backend_protocol.reference.annotated import Annotated

KEPT_TOKEN_IDS = 8
"""How many token ids of a long, well-formed list the kit keeps."""


def kept(item: object) -> object:
    """``item``, or for a dict chunk with a long list of valid token ids, a copy keeping only the first few."""
    if type(item) is not dict:
        return item
    token_ids = item.get("token_ids")
    if type(token_ids) is not list or len(token_ids) <= KEPT_TOKEN_IDS:
        return item
    if not all(type(token_id) is int and token_id >= 0 for token_id in token_ids):
        return item
    trimmed = dict(item)
    trimmed["token_ids"] = token_ids[:KEPT_TOKEN_IDS]
    return trimmed


def kept_annotated(item: Annotated) -> Annotated:
    """What the kit keeps of an item the adapter handed on: its error, or its chunk as :func:`kept` keeps it."""
    if item.data is None:
        return item
    data = kept(item.data)
    if data is item.data:
        return item
    assert isinstance(data, dict)
    return Annotated(data, item.error)
