"""One ``differential`` run: every play in every chosen mode, through both adapters, held to the model."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dynamo_backend_protocol.model import DEFAULT_TABLE, CompiledTable, Mode
from dynamo_backend_protocol.model.raw_engine import RAW_TABLE, RawTransition
from dynamo_backend_protocol.model.releases import LATEST_RELEASE, Release
from dynamo_backend_protocol.model.teach.scenarios import SCENARIOS
from dynamo_backend_protocol.reference.differential.compare import Verdict, differences, outcome_of
from dynamo_backend_protocol.reference.differential.findings import explaining
from dynamo_backend_protocol.reference.differential.plays import ClientEnd, Item, Outcome, Play, make_play
from dynamo_backend_protocol.reference.differential.raw_plays import raw_plays
from dynamo_backend_protocol.reference.differential.reference_side import ReferenceSide
from dynamo_backend_protocol.reference.differential.released import as_released
from dynamo_backend_protocol.reference.differential.schedules import drawn_schedules
from dynamo_backend_protocol.reference.differential.scripted_engine import Record
from dynamo_backend_protocol.reference.differential.surface import ReleaseSurface
from dynamo_backend_protocol.reference.differential.upstream import UpstreamSession, UpstreamUnavailable


@dataclass
class ModeReport:
    mode: Mode
    verdicts: list[Verdict] = field(default_factory=list)
    raw: bool = False
    """The raw engine adapter's plays (served in agg mode), not the mode's token plays."""
    seconds: float = 0.0
    unavailable: str | None = None
    """Why Dynamo's Worker could not serve this mode (its exact error), if it could not."""
    not_in_release: str | None = None
    """Why the installed release has no Worker for this mode at all (a release difference), if it has none."""

    @property
    def agreed(self) -> int:
        return sum(verdict.agreed for verdict in self.verdicts)

    @property
    def explained(self) -> int:
        """Plays whose Rust-side differences are a documented upstream finding or a release difference."""
        return sum(verdict.explained for verdict in self.verdicts)

    @property
    def findings(self) -> int:
        """Explained plays whose explanation includes a documented upstream finding."""
        return sum(verdict.explained and verdict.upstream_finding is not None for verdict in self.verdicts)

    @property
    def as_released(self) -> int:
        """Explained plays that the installed release's differences alone explain."""
        return self.explained - self.findings

    @property
    def diverged(self) -> int:
        return len(self.verdicts) - self.agreed - self.explained

    @property
    def name(self) -> str:
        return "raw" if self.raw else self.mode.value

    def as_json(self) -> dict[str, object]:
        return {
            "mode": self.name,
            "scenarios": len(self.verdicts),
            "agreed": self.agreed,
            "diverged": self.diverged,
            "upstream_findings": self.findings,
            "as_released": self.as_released,
            "seconds": round(self.seconds, 3),
            "unavailable": self.unavailable,
            "not_in_release": self.not_in_release,
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
    release: ReleaseSurface | None = None,
    runtime_log: Path | None = None,
) -> list[ModeReport]:
    """Run every mode with one worker process each (reused across its plays), against the
    installed release (or ``release``), the runtime's own log lines going to ``runtime_log``
    (None: this process's stderr).

    Raises :class:`UpstreamUnavailable` when Dynamo is not installed or no
    mode's worker can start at all.
    """
    reports: list[ModeReport] = []
    async with UpstreamSession(release, runtime_log) as session:
        measured = session.surface.measured_as
        for mode in modes:
            report = ModeReport(mode)
            began = time.monotonic()
            plays = plays_for(mode, examples, seed, table)
            reference = ReferenceSide(mode, table)
            report.not_in_release = session.surface.unserved(mode)
            client = None
            if report.not_in_release is None:
                try:
                    client = await session.start(mode)
                except UpstreamUnavailable as error:
                    report.unavailable = str(error)
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
                verdict = _verdict(play, ours[play.name], upstream_records, client_views.get(play.name), measured)
                report.verdicts.append(verdict)
                if progress is not None:
                    progress(verdict)
            report.seconds = time.monotonic() - began
            reports.append(report)
    if all(report.unavailable or report.not_in_release for report in reports):
        raise UpstreamUnavailable("; ".join(f"{report.mode.value}: {report.unavailable or report.not_in_release}"
                                            for report in reports))
    return reports


async def run_raw(
    release: ReleaseSurface | None = None,
    runtime_log: Path | None = None,
    progress: Callable[[Verdict], None] | None = None,
    table: tuple[RawTransition, ...] = RAW_TABLE,
) -> ModeReport:
    """The raw engine adapter's plays through Dynamo's raw adapter (a RawEngine worker), held to
    the raw machine.  Our adapter has no raw counterpart, so only the Rust side is judged.
    A release without the raw adapter gives a report that says so and plays nothing."""
    report = ModeReport(Mode.AGGREGATED, raw=True)
    began = time.monotonic()
    async with UpstreamSession(release, runtime_log) as session:
        report.not_in_release = session.surface.without_raw_adapter()
        if report.not_in_release is not None:
            return report
        plays = raw_plays(table)
        client = await session.start(Mode.AGGREGATED, raw=True)
        views: dict[str, tuple[tuple[Item, ...], ClientEnd]] = {}
        for play in plays:
            try:
                views[play.name] = await client.play(play)
            except (UpstreamUnavailable, TimeoutError) as error:
                report.unavailable = client.worker.failure() or (
                    f"the raw worker stopped answering during {play.name}: {error or 'no reply in time'}"
                )
                break
        client.worker.stop()
        records = client.worker.records()
        for play in plays:
            if play.name not in views:
                continue
            verdict = _verdict(play, None, records, views[play.name], session.surface.measured_as)
            report.verdicts.append(verdict)
            if progress is not None:
                progress(verdict)
    report.seconds = time.monotonic() - began
    return report


def _verdict(
    play: Play,
    ours: Outcome | None,
    records: list[Record],
    client_view: tuple[tuple[Item, ...], ClientEnd] | None,
    release: Release = LATEST_RELEASE,
) -> Verdict:
    ours_differ = () if ours is None else tuple(differences(play.allowed, ours))
    if client_view is None:
        return Verdict(play, None, ours, (), ours_differ)
    theirs = outcome_of(play.name, records, *client_view)
    theirs_differ = tuple(differences(play.allowed, theirs))
    if not theirs_differ:
        return Verdict(play, theirs, ours, theirs_differ, ours_differ)
    # Not the model's outcome: the installed release's own, then a documented finding on top of either.
    released, applied = as_released(play, release)
    names = tuple(difference.name for difference in applied)
    if applied and not differences(released, theirs):
        return Verdict(play, theirs, ours, theirs_differ, ours_differ, None, names)
    for expected, because in ((play.predicted, ()), (released[0], names)):
        finding = explaining(play, theirs, lambda allowed, seen: not differences(allowed, seen), expected)
        if finding is not None:
            return Verdict(play, theirs, ours, theirs_differ, ours_differ, finding, because)
    return Verdict(play, theirs, ours, theirs_differ, ours_differ)
