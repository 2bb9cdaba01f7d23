"""Showing a conformance run as it goes: each check's line as soon as it has its verdict, and on a
terminal a live line under them naming the phase and the checks running, with the examples done of a
property-based phase (each such phase has its own name and its own total).

The live line is drawn by ``rich`` (terminal control, redrawing and cleanup on exit are its job, and it
falls back to plain output where the terminal cannot redraw); without a terminal only the check lines
are printed, one per check, so a log or a pipe reads like the report.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

from dynamo_backend_protocol.reference.conformance.checks import SPECS
from dynamo_backend_protocol.reference.conformance.report import CheckResult, CheckStatus, render_line

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

NAME_WIDTH = max(len(failure) for failure in SPECS)
MARK_STYLES = {CheckStatus.PASSED: "green", CheckStatus.FAILED: "bold red", CheckStatus.SKIPPED: "yellow"}
"""Colours of the status marks on a terminal (rich leaves them out when NO_COLOR is set)."""


class LinePrinter:
    """Prints each check's line to ``out`` as it finishes (the KitEvents a pipe or a log gets)."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def phase(self, what: str) -> None:
        pass

    def examples_done(self, done: int, total: int) -> None:
        pass

    def check_finished(self, result: CheckResult) -> None:
        print(render_line(result, NAME_WIDTH), file=self.out, flush=True)


class LiveDisplay(LinePrinter):
    """The check lines, with a live line below them: ``[checks done/all checks]`` (a total fixed from the
    start), the phase and the checks it runs, and in a property-based phase its examples done of its total."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.checks_done = 0
        self.what = "building the engine"
        self.task: TaskID = progress.add_task(self._description(), total=None, examples="")

    def _description(self) -> str:
        return f"[{self.checks_done}/{len(SPECS)}] {self.what}"

    def phase(self, what: str) -> None:
        # A fresh task per phase: each property-based phase counts its own examples against its own total.
        self.what = what
        self.progress.remove_task(self.task)
        self.task = self.progress.add_task(self._description(), total=None, examples="")
        # Drawn now, not at the next timed refresh: a phase shorter than the
        # refresh period would otherwise never be shown.
        self.progress.refresh()

    def examples_done(self, done: int, total: int) -> None:
        self.progress.update(self.task, total=max(total, 1), completed=done, examples=f"{done}/{total} examples",
                             refresh=True)

    def check_finished(self, result: CheckResult) -> None:
        from rich.text import Text

        self.checks_done += 1
        self.progress.update(self.task, description=self._description())
        console = self.progress.console
        line = Text(render_line(result, NAME_WIDTH, console.width))
        line.stylize(MARK_STYLES[result.status], 0, len("[pass]"))
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def live_display(out: IO[str]) -> Iterator[LinePrinter]:
    """A :class:`LiveDisplay` on ``out`` while the block runs, its live line erased at the end."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(file=out)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.fields[examples]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        yield LiveDisplay(progress)
