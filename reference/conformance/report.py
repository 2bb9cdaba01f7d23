"""What a conformance run found: one result per check, as data, text and JSON."""

from __future__ import annotations

import enum
import textwrap
from dataclasses import dataclass, field

from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.model.exceptions import ProtocolError
from dynamo_backend_protocol.reference.conformance.checks import SPECS, Failure, Kit

REPORT_COLUMNS = 100
"""Where report lines wrap when the width of the terminal is unknown (a pipe, a log)."""


class CheckStatus(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


_MARKS = {CheckStatus.PASSED: "[pass]", CheckStatus.FAILED: "[FAIL]", CheckStatus.SKIPPED: "[skip]"}


def one_line(text: str, limit: int = 900) -> str:
    """Reasons are single lines: whitespace runs (newlines included) collapse to one space."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


@dataclass(frozen=True)
class CheckResult:
    failure: Failure
    """The failure name; also the check's identity."""
    title: str
    status: CheckStatus
    reason: str = ""
    """Why it failed or was skipped (one line); empty when it passed."""
    seconds: float = 0.0
    """Time of the probe that judged it (several checks may share one probe)."""
    blocked_by: tuple[Failure, ...] = ()
    """For a skipped check: the failed checks that kept it from running."""
    upstream: bool = False
    """Whether upstream's conformance kit has this check, under the same failure name."""

    @property
    def kit(self) -> Kit:
        return Kit.UPSTREAM if self.upstream else Kit.RUNTIME

    @property
    def passed(self) -> bool:
        return self.status is CheckStatus.PASSED

    @property
    def failed(self) -> bool:
        return self.status is CheckStatus.FAILED

    @property
    def skipped(self) -> bool:
        return self.status is CheckStatus.SKIPPED

    def as_dict(self) -> dict[str, object]:
        return {
            "failure": str(self.failure),
            "title": self.title,
            "status": str(self.status),
            "reason": self.reason,
            "seconds": round(self.seconds, 6),
            "upstream": self.upstream,
            "kit": str(self.kit),
        }


@dataclass
class ConformanceReport:
    engine: str
    mode: Mode
    checks: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0
    requests: str = ""
    """What the kit's requests carried for this engine (its model, the mode's hand-off)."""

    @property
    def ok(self) -> bool:
        """No check failed (skipped checks do not count against the engine)."""
        return not self.failures()

    def failures(self) -> list[CheckResult]:
        return [result for result in self.checks if result.failed]

    def result(self, failure: Failure | str) -> CheckResult:
        for result in self.checks:
            if result.failure == failure:
                return result
        raise KeyError(f"no conformance check named {failure!r}")

    def count(self, status: CheckStatus) -> int:
        return sum(1 for result in self.checks if result.status is status)

    def failures_in(self, kit: Kit) -> list[CheckResult]:
        return [result for result in self.failures() if result.kit is kit]

    def kit_line(self, kit: Kit) -> str:
        """One line: what fails this kit, or that nothing does (and how many of its checks ran)."""
        failed = self.failures_in(kit)
        if failed:
            return f"{kit.describe()}: fails {', '.join(str(result.failure) for result in failed)}"
        judged = sum(1 for result in self.checks if result.kit is kit and not result.skipped)
        return f"{kit.describe()}: nothing fails ({judged} checks passed)"

    def summary(self) -> str:
        verdict = "conforms" if self.ok else "DOES NOT CONFORM"
        return (
            f"{self.engine} {verdict} (mode {self.mode.value}): {self.count(CheckStatus.PASSED)} passed, "
            f"{self.count(CheckStatus.FAILED)} failed, {self.count(CheckStatus.SKIPPED)} skipped "
            f"in {self.seconds:.2f} s"
        )

    def raise_for_failures(self) -> None:
        """Raise :class:`ConformanceFailure` (an AssertionError) if any check failed."""
        if not self.ok:
            raise ConformanceFailure(self)

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "engine": self.engine,
            "mode": self.mode.value,
            "seconds": round(self.seconds, 6),
            "passed": self.count(CheckStatus.PASSED),
            "failed": self.count(CheckStatus.FAILED),
            "skipped": self.count(CheckStatus.SKIPPED),
            "requests": self.requests,
            "failed_by_kit": {str(kit): [str(result.failure) for result in self.failures_in(kit)] for kit in Kit},
            "checks": [result.as_dict() for result in self.checks],
        }

    def render(self, columns: int = REPORT_COLUMNS) -> str:
        """One line per check (status mark, failure name, duration, what it checks or why it did not pass;
        long reasons wrapped with an indent), then :meth:`render_ending`."""
        width = max((len(result.failure) for result in self.checks), default=0)
        lines = [render_line(result, width, columns) for result in self.checks]
        return "\n".join([*lines, self.render_ending(columns)])

    def render_ending(self, columns: int = REPORT_COLUMNS) -> str:
        """What follows the check lines: what the requests carried, a recap of the failed checks with how to
        fix each, one line per kit, and the summary."""
        lines = [f"requests: {self.requests}"] if self.requests else []
        failed = self.failures()
        if failed:
            lines.append(f"failed ({len(failed)}):")
            for result in failed:
                said = f"{result.failure} ({result.kit.describe()}): {SPECS[result.failure].fix}"
                lines.append(_wrapped(said, columns, "  - ", "    "))
        lines += [self.kit_line(kit) for kit in Kit]
        return "\n".join([*lines, self.summary()])


def render_line(result: CheckResult, width: int, columns: int = REPORT_COLUMNS) -> str:
    """One check: status mark, failure name, duration, then what it checks or why it did not pass; a reason
    longer than the line wraps, indented under the text it continues."""
    head = f"{_MARKS[result.status]} {result.failure:<{width}} {_took(result)}  "
    said = result.title if result.passed else result.reason
    return _wrapped(said, columns, head, " " * len(head))


def _took(result: CheckResult) -> str:
    return f"{result.seconds * 1000:8.1f} ms" if not result.skipped else f"{'-':>8}   "


NARROW_INDENT = " " * 8
"""The text's indent on a line too narrow to align it under its column (more than half the line)."""


def _wrapped(text: str, columns: int, first: str, rest: str) -> str:
    if len(first) > columns // 2:
        # Too narrow to align: the head on its own line, the text below it, indented a little.
        body = textwrap.fill(text, columns, initial_indent=NARROW_INDENT, subsequent_indent=NARROW_INDENT,
                             break_long_words=False, break_on_hyphens=False)
        return f"{first.rstrip()}\n{body}"
    return textwrap.fill(text, columns, initial_indent=first, subsequent_indent=rest, break_long_words=False,
                         break_on_hyphens=False)


class ConformanceFailure(ProtocolError, AssertionError):
    """Some conformance checks failed; ``report`` has them all."""

    def __init__(self, report: ConformanceReport) -> None:
        self.report = report
        lines = [report.summary(), *(report.kit_line(kit) for kit in Kit)]
        lines += [f"  {result.failure}: {result.reason}" for result in report.failures()]
        super().__init__("\n".join(lines))
