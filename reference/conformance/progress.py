"""Showing a conformance run as it goes: each check's line as soon as it has its verdict, and on a
terminal a live line under them with what is running and the property phase's examples done.

The live line is drawn by ``rich`` (terminal control, redrawing and cleanup on exit are its job, and it
falls back to plain output where the terminal cannot redraw); without a terminal only the check lines
are printed, one per check, so a log or a pipe reads like the report.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

from dynamo_backend_protocol.reference.conformance.checks import SPECS
from dynamo_backend_protocol.reference.conformance.report import CheckResult, render_line

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

NAME_WIDTH = max(len(failure) for failure in SPECS)


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
    """The check lines, with a live line below them naming what runs now (and examples done of total)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID = progress.add_task("building the engine", total=None)

    def phase(self, what: str) -> None:
        # A fresh task per phase: only the property phase has a count of examples to show.
        self.progress.remove_task(self.task)
        self.task = self.progress.add_task(what, total=None)
        # Drawn now, not at the next timed refresh: a phase shorter than the
        # refresh period would otherwise never be shown.
        self.progress.refresh()

    def examples_done(self, done: int, total: int) -> None:
        self.progress.update(self.task, total=max(total, 1), completed=done, refresh=True)

    def check_finished(self, result: CheckResult) -> None:
        self.progress.console.print(render_line(result, NAME_WIDTH), markup=False, highlight=False,
                                    soft_wrap=True)


@contextlib.contextmanager
def live_display(out: IO[str]) -> Iterator[LinePrinter]:
    """A :class:`LiveDisplay` on ``out`` while the block runs, its live line erased at the end."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(file=out)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        yield LiveDisplay(progress)
