"""Schedules drawn by Hypothesis: event sequences both a client and an engine can act out.

A schedule is an optional first-token notice before setup, a few
engine items (token chunks, token-less chunks, side-channel notices) with at
most one client action among them (a stop, or the client leaving; never
right after a notice, which the client cannot see), and one
ending (a terminal of any reason, with or without tokens, a typed error, or
the stream just ending).  The same seed draws the same schedules.
"""

from __future__ import annotations

import contextlib

from dynamo_backend_protocol.model import Event, EventKind, FinishReason, Mode, event
from dynamo_backend_protocol.model.exceptions import ProtocolError
from hypothesis import HealthCheck, Phase, assume, given, seed, settings
from hypothesis import strategies as st

_NOTICE = event(EventKind.FIRST_TOKEN_NOTICE)
_ITEMS = (event(EventKind.TOKEN_CHUNK), event(EventKind.EMPTY_CHUNK), _NOTICE)
_ENDINGS = (
    *(event(EventKind.TERMINAL, reason, tokens) for reason in (FinishReason.STOP, FinishReason.LENGTH,
                                                                 FinishReason.CANCELLED) for tokens in (False, True)),
    event(EventKind.ERROR),
    event(EventKind.END),
)
_CLIENT = (event(EventKind.STOP), event(EventKind.DROP))
_SETUP = event(EventKind.SETUP)


@st.composite
def schedules(draw: st.DrawFn) -> tuple[Event, ...]:
    before: list[Event] = []
    if draw(st.booleans()):
        before.append(event(EventKind.FIRST_TOKEN_NOTICE))
    body = draw(st.lists(st.sampled_from(_ITEMS), max_size=4))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(body)))
        # The client acts on what it has received; a notice after the last item it saw
        # would race its action, since nothing tells the client the notice happened.
        assume(at == 0 or body[at - 1] is not _NOTICE)
        body.insert(at, draw(st.sampled_from(_CLIENT)))
    ending = draw(st.sampled_from(_ENDINGS))
    return (*before, _SETUP, *body, ending)


def drawn_schedules(mode: Mode, examples: int, seed_value: int) -> list[tuple[Event, ...]]:
    """Up to ``examples`` distinct schedules, the same ones for the same seed (the mode varies the draw)."""
    if examples <= 0:
        return []
    found: list[tuple[Event, ...]] = []

    @seed(seed_value * 10 + list(Mode).index(mode))
    @settings(max_examples=examples * 20, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(schedules())
    def collect(schedule: tuple[Event, ...]) -> None:
        if schedule not in found:
            found.append(schedule)
        if len(found) >= examples:
            raise _Enough

    with contextlib.suppress(_Enough):
        collect()
    return found[:examples]


class _Enough(ProtocolError):
    """Stops the draw once enough distinct schedules were found."""
