"""One ``differential`` run: every play in every chosen mode, through both adapters, held to the model."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dynamo_backend_protocol.model import DEFAULT_TABLE, CompiledTable, Mode
from dynamo_backend_protocol.model.teach.scenarios import SCENARIOS
from dynamo_backend_protocol.reference.differential.compare import Verdict, differences, outcome_of
from dynamo_backend_protocol.reference.differential.findings import explaining
from dynamo_backend_protocol.reference.differential.plays import ClientEnd, Item, Outcome, Play, make_play
from dynamo_backend_protocol.reference.differential.reference_side import ReferenceSide
from dynamo_backend_protocol.reference.differential.schedules import drawn_schedules
from dynamo_backend_protocol.reference.differential.scripted_engine import Record
from dynamo_backend_protocol.reference.differential.upstream import UpstreamSession, UpstreamUnavailable


@dataclass
class ModeReport:
    mode: Mode
    verdicts: list[Verdict] = field(default_factory=list)
    seconds: float = 0.0
    unavailable: str | None = None
    """Why Dynamo's Worker could not serve this mode (its exact error), if it could not."""

    @property
    def agreed(self) -> int:
        return sum(verdict.agreed for verdict in self.verdicts)

    @property
    def explained(self) -> int:
        """Plays whose Rust-side differences are a documented upstream finding."""
        return sum(verdict.explained for verdict in self.verdicts)

    @property
    def diverged(self) -> int:
        return len(self.verdicts) - self.agreed - self.explained

    def as_json(self) -> dict[str, object]:
        return {
            "mode": self.mode.value,
            "scenarios": len(self.verdicts),
            "agreed": self.agreed,
            "diverged": self.diverged,
            "upstream_findings": self.explained,
            "seconds": round(self.seconds, 3),
            "unavailable": self.unavailable,
            "verdicts": [verdict.as_json() for verdict in self.verdicts],
        }


def plays_for(mode: Mode, examples: int, seed: int, table: CompiledTable = DEFAULT_TABLE) -> list[Play]:
    """The teaching scenarios that apply in ``mode``, then ``examples`` drawn schedules."""
    plays = [make_play(found.name, found.parsed_events(), mode, table) for found in SCENARIOS
             if found.applies_to(mode)]
    for number, events in enumerate(drawn_schedules(mode, examples, seed), start=1):
        plays.append(make_play(f"drawn-{number:02d}", events, mode, table))
    return plays


async def run_modes(
    modes: Sequence[Mode],
    examples: int,
    seed: int,
    table: CompiledTable = DEFAULT_TABLE,
    progress: Callable[[Verdict], None] | None = None,
) -> list[ModeReport]:
    """Run every mode with one worker process each (reused across its plays).

    Raises :class:`UpstreamUnavailable` when Dynamo is not installed or no
    mode's worker can start at all.
    """
    reports: list[ModeReport] = []
    async with UpstreamSession() as session:
        for mode in modes:
            report = ModeReport(mode)
            began = time.monotonic()
            plays = plays_for(mode, examples, seed, table)
            reference = ReferenceSide(mode, table)
            try:
                client = await session.start(mode)
            except UpstreamUnavailable as error:
                client, report.unavailable = None, str(error)
            client_views: dict[str, tuple[tuple[Item, ...], ClientEnd]] = {}
            ours: dict[str, Outcome] = {}
            serving = client is not None
            for play in plays:
                if client is not None and serving:
                    try:
                        client_views[play.name] = await client.play(play)
                    except (UpstreamUnavailable, TimeoutError) as error:
                        serving = False
                        report.unavailable = client.worker.failure() or (
                            f"the {mode.value} worker stopped answering during {play.name}: "
                            f"{error or 'no reply in time'}"
                        )
                ours[play.name] = await reference.play(play)
            upstream_records: list[Record] = []
            if client is not None:
                # Late aborts land in the worker's log too: read it once the worker has ended.
                client.worker.stop()
                upstream_records = client.worker.records()
            for play in plays:
                verdict = _verdict(play, ours[play.name], upstream_records, client_views.get(play.name))
                report.verdicts.append(verdict)
                if progress is not None:
                    progress(verdict)
            report.seconds = time.monotonic() - began
            reports.append(report)
    if all(report.unavailable for report in reports):
        raise UpstreamUnavailable("; ".join(str(report.unavailable) for report in reports))
    return reports


def _verdict(
    play: Play, ours: Outcome, records: list[Record], client_view: tuple[tuple[Item, ...], ClientEnd] | None
) -> Verdict:
    if client_view is None:
        return Verdict(play, None, ours, (), tuple(differences(play.allowed, ours)))
    theirs = outcome_of(play.name, records, *client_view)
    theirs_differ = tuple(differences(play.allowed, theirs))
    finding = None
    if theirs_differ:
        finding = explaining(play, theirs, lambda allowed, seen: not differences(allowed, seen))
    return Verdict(play, theirs, ours, theirs_differ, tuple(differences(play.allowed, ours)), finding)
