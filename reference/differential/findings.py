"""What ``differential`` found in Dynamo's runtime that the protocol does not allow.

Each finding is stated upstream-style in ``spec/protocol.md`` (section
"Upstream findings") with its evidence.  A play whose Rust-side outcome is
one of a finding's outcomes is reported under that finding, not as an
unexplained divergence; our adapter must still agree with the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from dynamo_backend_protocol.model import EventKind
from dynamo_backend_protocol.reference.differential.plays import Outcome, Play
from dynamo_backend_protocol.reference.differential.released import stops_before_sending


@dataclass(frozen=True)
class UpstreamFinding:
    name: str
    summary: str
    applies: Callable[[Play], bool]
    outcomes: Callable[[Play, Outcome], tuple[Outcome, ...]]
    """The Rust-side outcomes this finding explains, for a play it applies to, given the
    outcome expected without it (the model's, or the installed release's)."""


def _stop_lost(play: Play, predicted: Outcome) -> tuple[Outcome, ...]:
    """The stop reaches the engine's context late or never, and the abort comes late or never:
    so late, on a loaded machine, that the engine had given up waiting and produced its first
    token before the abort reached it."""
    late = tuple(True for _ in predicted.aborts)
    return tuple(
        replace(predicted, aborts=aborts, stopped=seen_stop)
        for aborts in dict.fromkeys(((), predicted.aborts, late))
        for seen_stop in (True, False)
    )


def _ends_with_typed_error(play: Play) -> bool:
    return bool(play.events) and play.events[-1].kind is EventKind.ERROR and not play.predicted.aborts


def _aborted_after_error(play: Play, predicted: Outcome) -> tuple[Outcome, ...]:
    """One abort after the request already ended with its error item."""
    first_token = any(ev.signals_first_token for ev in play.events)
    return (replace(predicted, aborts=(first_token,)),)


FINDINGS: tuple[UpstreamFinding, ...] = (
    UpstreamFinding(
        name="stop-before-send-lost",
        summary=(
            "a stop the client gives before its request is sent sometimes reaches the worker late or "
            "never: the engine never sees is_stopped(), or engine.abort is never called"
        ),
        applies=stops_before_sending,
        outcomes=_stop_lost,
    ),
    UpstreamFinding(
        name="abort-after-error-item",
        summary=(
            "a request whose stream ended with a typed error item is sometimes aborted afterwards, "
            "although it was never stopped or killed while live"
        ),
        applies=_ends_with_typed_error,
        outcomes=_aborted_after_error,
    ),
)


def explaining(
    play: Play,
    seen: Outcome,
    matches: Callable[[tuple[Outcome, ...], Outcome], bool],
    expected: Outcome | None = None,
) -> str | None:
    """The name of the finding that explains ``seen`` for ``play``, if one does; ``expected`` is
    the outcome without the finding (default: the model's prediction)."""
    base = play.predicted if expected is None else expected
    for finding in FINDINGS:
        if finding.applies(play) and matches(finding.outcomes(play, base), seen):
            return finding.name
    return None
