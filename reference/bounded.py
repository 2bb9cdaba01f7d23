"""Awaiting an engine's best-effort work (abort, closing its stream) for a bounded time.

``asyncio.timeout`` only bounds work that lets its cancellation through; an
engine whose ``finally`` swallows ``CancelledError`` would keep the caller as
long as it likes.  :func:`within` stops waiting at the bound whatever the work
does, cancels it and hands it over as abandoned.  Work that finishes without
suspending (the usual engine close) runs inline and costs no task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator, Iterator
from typing import Any


async def within(work: Awaitable[object], timeout: float | None, abandon: Callable[[asyncio.Task[None]], None]) -> None:
    """Await ``work`` for at most ``timeout`` seconds (None: no bound).

    Raises :class:`TimeoutError` when the bound passed: the work was cancelled
    and given to ``abandon``, never awaited again.  Raises what the work raised.
    """
    steps: Any = work.__await__()
    try:
        pending = steps.send(None)
    except StopIteration:
        return
    task = asyncio.get_running_loop().create_task(_finish(steps, pending))
    try:
        await asyncio.wait((task,), timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        abandon(task)
        raise
    if not task.done():
        task.cancel()
        abandon(task)
        raise TimeoutError
    task.result()


async def _finish(steps: Iterator[Any], pending: object) -> None:
    await _Resumed(steps, pending)


class _Resumed:
    """Continues work that already ran to its first suspension, as a task would have."""

    __slots__ = ("pending", "steps")

    def __init__(self, steps: Any, pending: object) -> None:
        self.steps = steps
        self.pending = pending

    def __await__(self) -> Generator[Any, None, None]:
        steps, pending = self.steps, self.pending
        while True:
            try:
                yield pending
            except BaseException as exc:  # the task's cancellation, or whatever was thrown in: the work decides
                try:
                    pending = steps.throw(exc)
                except StopIteration:
                    return
                continue
            try:
                pending = steps.send(None)
            except StopIteration:
                return
