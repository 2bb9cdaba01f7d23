"""How a ``differential`` run is reported: per mode what agreed and diverged, and which release
difference or upstream finding explains each play that did not agree."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dynamo_backend_protocol.model.releases import RELEASE_DIFFERENCES
from dynamo_backend_protocol.reference.differential.compare import Verdict
from dynamo_backend_protocol.reference.differential.findings import FINDINGS
from dynamo_backend_protocol.reference.differential.run import ModeReport
from dynamo_backend_protocol.reference.differential.surface import ReleaseSurface

_DIFFERENCES = {difference.name: difference for difference in RELEASE_DIFFERENCES}
_FINDINGS = {finding.name: finding for finding in FINDINGS}


def verdict_lines(verdict: Verdict) -> list[str]:
    """One line for the play, and for one that did not agree, what each side did."""
    word = verdict.word if verdict.agreed or verdict.explained else "DIVERGE"
    where = "raw" if verdict.reference is None else verdict.play.mode.value
    lines = [f"{where:<7} {verdict.play.name:<34} {word}"]
    if verdict.agreed:
        return lines
    if verdict.play.events:
        lines.append(f"        events: {', '.join(ev.name for ev in verdict.play.events)}")
    else:
        lines.append(f"        rules: {', '.join(verdict.play.rules)}")
    lines.append(f"        model:        {verdict.play.predicted.brief()}")
    for side, seen in (("rust adapter", verdict.upstream), ("our adapter", verdict.reference)):
        if seen is not None:
            lines.append(f"        {side + ':':<13} {seen.brief()}")
    for side, found in (("rust adapter", verdict.upstream_differences), ("our adapter", verdict.reference_differences)):
        for difference in found:
            lines.append(f"        {side} differs: {difference}")
    return lines


def mode_line(report: ModeReport) -> str:
    line = (f"{report.name}: {len(report.verdicts)} scenarios, {report.agreed} agreed, "
            f"{report.diverged} diverged, {report.as_released} as released, "
            f"{report.findings} upstream findings, {report.seconds:.1f}s")
    if report.unavailable:
        line += f" (Dynamo's worker could not serve this mode: {report.unavailable}; our adapter only)"
    if report.not_in_release and report.raw:
        line += f" (the raw adapter is {report.not_in_release})"
    elif report.not_in_release:
        line += f" (this mode is {report.not_in_release}; our adapter only)"
    return line


def explanations(reports: Sequence[ModeReport]) -> dict[str, list[str]]:
    """Each release difference and finding that explained a play, with the plays (mode/name) it explained."""
    used: dict[str, list[str]] = {}
    for report in reports:
        for verdict in report.verdicts:
            if not verdict.explained:
                continue
            names = [*verdict.release_differences]
            if verdict.upstream_finding is not None:
                names.append(verdict.upstream_finding)
            for name in names:
                used.setdefault(name, []).append(f"{report.name}/{verdict.play.name}")
    return used


def describe(name: str, release: ReleaseSurface) -> str:
    """A release difference as this release shows it, or a finding's summary."""
    if name in _DIFFERENCES:
        difference = _DIFFERENCES[name]
        return (f"release difference, up to {difference.last_before} "
                f"(from {difference.first_after()}: {difference.after}): {difference.behaviour(release.measured_as)}")
    return f"upstream finding (spec section 15): {_FINDINGS[name].summary}"


def text_report(reports: Sequence[ModeReport], release: ReleaseSurface, runtime_log: Path | None) -> list[str]:
    """The closing lines: the release, each mode's figures, what explains the rest, the log."""
    lines = [f"Dynamo {release.release} (ai-dynamo and ai-dynamo-runtime)"]
    note = release.note()
    if note is not None:
        lines.append(f"  note: {note}")
    lines += [mode_line(report) for report in reports]
    for name, plays in explanations(reports).items():
        lines.append(f"explained by {name}: {describe(name, release)}")
        lines.append(f"  in {', '.join(plays)}")
    if runtime_log is not None:
        lines.append(f"runtime log (client and workers): {runtime_log}")
    return lines


def json_report(reports: Sequence[ModeReport], release: ReleaseSurface, runtime_log: Path | None) -> dict[str, object]:
    return {
        "dynamo_release": str(release.release),
        "judged_as": str(release.measured_as),
        "runtime_log": None if runtime_log is None else str(runtime_log),
        "explanations": {name: {"meaning": describe(name, release), "plays": plays}
                         for name, plays in explanations(reports).items()},
        "modes": [report.as_json() for report in reports],
    }
