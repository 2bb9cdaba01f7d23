"""Folding what an engine recorded into an outcome, and holding an outcome to the model's prediction."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dynamo_backend_protocol.reference.differential.plays import ClientEnd, Ending, Item, Outcome, Play
from dynamo_backend_protocol.reference.differential.scripted_engine import Record


def outcome_of(play: str, records: Iterable[Record], items: tuple[Item, ...], client_end: ClientEnd) -> Outcome:
    """One side's outcome: the client's view plus the engine's records for ``play``."""
    aborts: list[bool] = []
    timeouts: list[str] = []
    ending: Ending | None = None
    stopped = killed = False
    for record in records:
        if record.get("play") != play:
            continue
        kind = record["event"]
        if kind == "abort":
            aborts.append(bool(record["after_first_token"]))
        elif kind == "gate_timeout":
            timeouts.append(str(record["gate"]))
        elif kind == "ended" and ending is None:
            ending = record["how"]
            stopped, killed = bool(record["stopped"]), bool(record["killed"])
    return Outcome(
        items=items,
        client_end=client_end,
        aborts=tuple(aborts),
        ending=frozenset({ending if ending is not None else "open"}),  # type: ignore[arg-type]
        stopped=stopped,
        killed=killed,
        gate_timeouts=tuple(timeouts),
    )


def differences(allowed: tuple[Outcome, ...], seen: Outcome) -> list[str]:
    """Each way ``seen`` differs from the outcome the model predicts, in words; empty
    when it is one of the ``allowed`` outcomes (a genuine race allows several)."""
    found: list[str] = []
    for predicted in allowed:
        found = _differences(predicted, seen)
        if not found:
            return []
    return _differences(allowed[0], seen)


def _differences(predicted: Outcome, seen: Outcome) -> list[str]:
    found = []
    if seen.items != predicted.items:
        found.append(f"client items {[i.text() for i in seen.items]}, model {[i.text() for i in predicted.items]}")
    if seen.client_end != predicted.client_end:
        found.append(f"client stream ended {seen.client_end}, model {predicted.client_end}")
    if seen.aborts != predicted.aborts:
        found.append(f"abort calls {_aborts(seen.aborts)}, model {_aborts(predicted.aborts)}")
    if not seen.ending <= predicted.ending:
        found.append(f"engine generator {'/'.join(sorted(seen.ending))}, model {'/'.join(sorted(predicted.ending))}")
    if (seen.stopped, seen.killed) != (predicted.stopped, predicted.killed):
        found.append(
            f"engine saw stopped={seen.stopped} killed={seen.killed}, "
            f"model stopped={predicted.stopped} killed={predicted.killed}"
        )
    # A gate that timed out is not a difference by itself: the observable it
    # waited for (an abort, a stop or kill) is compared above.
    return found


def _aborts(aborts: tuple[bool, ...]) -> str:
    if not aborts:
        return "none"
    return ", ".join("after first-token" if after else "before first-token" for after in aborts)


@dataclass(frozen=True)
class Verdict:
    """One play in one mode: the prediction, each side's outcome and how they differ."""

    play: Play
    upstream: Outcome | None
    """None when Dynamo's adapter was not run (its mode could not be served)."""
    reference: Outcome | None
    """None for a play our adapter has no counterpart of (the raw engine adapter's)."""
    upstream_differences: tuple[str, ...]
    reference_differences: tuple[str, ...]
    upstream_finding: str | None = None
    """The documented upstream finding (findings.py, spec "Upstream findings") that explains
    the Rust side's differences, if one does."""
    release_differences: tuple[str, ...] = ()
    """The release differences (model/releases.py, spec section 15) that explain the Rust side's
    differences on the installed release, if they do (with or without a finding)."""

    @property
    def agreed(self) -> bool:
        return not self.upstream_differences and not self.reference_differences

    @property
    def explained(self) -> bool:
        """Our adapter agrees and the Rust side differs only as a documented upstream finding
        or a release difference."""
        return (not self.reference_differences and not self.agreed
                and (self.upstream_finding is not None or bool(self.release_differences)))

    @property
    def word(self) -> str:
        if self.agreed:
            return "agree"
        if not self.explained:
            return "diverge"
        reasons = [f"as released: {name}" for name in self.release_differences]
        if self.upstream_finding is not None:
            reasons.append(f"upstream finding {self.upstream_finding}")
        return "; ".join(reasons)

    def as_json(self) -> dict[str, object]:
        return {
            "scenario": self.play.name,
            "mode": self.play.mode.value,
            "events": [ev.name for ev in self.play.events],
            "rules": list(self.play.rules),
            "verdict": self.word,
            "model": self.play.predicted.as_json(),
            "model_also_allows": [outcome.as_json() for outcome in self.play.allowed[1:]],
            "rust_adapter": None if self.upstream is None else self.upstream.as_json(),
            "our_adapter": None if self.reference is None else self.reference.as_json(),
            "rust_adapter_differences": list(self.upstream_differences),
            "upstream_finding": self.upstream_finding,
            "release_differences": list(self.release_differences),
            "our_adapter_differences": list(self.reference_differences),
        }
