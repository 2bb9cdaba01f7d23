"""An engine's best-effort work (abort, closing its stream): bounded in time, tracked, counted.

``asyncio.timeout`` only bounds work that lets its cancellation through; an
engine whose ``finally`` swallows ``CancelledError`` would keep the caller as
long as it likes.  :func:`within` stops waiting at the bound whatever the work
does, cancels it and hands it over as abandoned.  Work that finishes without
suspending (the usual engine close) runs inline and costs no task.
:class:`BestEffort` keeps an adapter's such work: the tasks it runs in, the
ones abandoned, and how many failed.  :func:`awaited_within` is the plain
bounded wait, for work that does let its cancellation through.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Generator, Iterator
from typing import Any, Literal, TypeVar

logger = logging.getLogger(__name__)

Work = Literal["abort", "close"]
T = TypeVar("T")


async def awaited_within(awaitable: Awaitable[T], seconds: float) -> T:
    """What ``awaitable`` gives, or :class:`TimeoutError` after ``seconds``: ``asyncio.wait_for`` as it
    should be.  Python 3.11's ``wait_for`` loses a cancellation that arrives in the loop iteration in
    which the awaited thing finished (it returns the result instead; CPython gh-86296, mended in
    3.12), so a Ctrl-C could let a whole run go on.  A plain await under ``asyncio.timeout`` lets
    every cancellation through."""
    async with asyncio.timeout(seconds):
        return await awaitable


class BestEffort:
    """One adapter's best-effort work on its engine.  A failure (the work raised, or
    overran its bound and was cancelled) is logged and counted, never raised."""

    def __init__(self) -> None:
        self.failures: dict[Work, int] = {"abort": 0, "close": 0}
        self.tasks: set[asyncio.Task[None]] = set()
        self.abandoned: set[asyncio.Task[None]] = set()
        """Work given up at its bound that has not finished yet (it swallowed the cancellation)."""

    async def attempt(self, kind: Work, work: Awaitable[object], timeout: float | None, what: str) -> None:
        try:
            await within(work, timeout, self._abandon)
        except TimeoutError:
            self.failures[kind] += 1
            logger.warning("%s overran %ss; cancelled", what, timeout)
        except Exception:
            self.failures[kind] += 1
            logger.warning("%s raised", what, exc_info=True)

    def track(self, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def settle(self) -> None:
        """Wait until every tracked task has finished (abandoned work excepted)."""
        while self.tasks:
            await asyncio.gather(*tuple(self.tasks), return_exceptions=True)

    def _abandon(self, task: asyncio.Task[None]) -> None:
        self.abandoned.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self.abandoned.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not report it: it was counted when abandoned


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
    except BaseException:  # the caller gave up waiting (it was cancelled): so does the work
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
