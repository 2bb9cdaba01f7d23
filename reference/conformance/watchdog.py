"""Bounds on waits for engine code that hold whatever the engine does with its cancellation or the loop.

``asyncio.timeout`` cancels the work at the bound and then waits for it to
finish, so an engine that swallows ``CancelledError`` keeps the kit as long as
it likes.  :func:`within` runs the work as its own task and stops waiting at
the bound: the task is cancelled and abandoned (kept referenced, its outcome
retrieved, never awaited again).

An engine that blocks the event loop (``time.sleep`` in ``start()``) stops
every timer with it: no in-loop bound can fire.  :func:`within` therefore
also judges by the clock, so work that returned only after its bound is a
timeout all the same; and :class:`LoopMonitor`, a thread outside the loop,
notices a loop that has not turned for longer than the bound of the wait in
progress and interrupts the blocked call (see :mod:`.run_loop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from dynamo_backend_protocol.reference.conformance.engine_calls import EngineRaised, as_engine_failure, guarded

T = TypeVar("T")
MAX_SECONDS = 7 * 24 * 3600.0
"""The longest bound the kit accepts (a week): far past any real start, and far below what the clocks and
thread waits can add to the current time without overflowing."""
HEARTBEAT = 0.1
"""Seconds between the loop's heartbeats, which the monitor thread reads."""
BLOCKED_GRACE = 0.5
"""How long past a wait's bound, and without a heartbeat, the monitor lets a blocked loop be before acting."""

_abandoned: set[asyncio.Future[Any]] = set()


def abandon(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and never wait for it again; keep it referenced until it ends, and retrieve its
    outcome so that neither "Task was destroyed" nor "exception was never retrieved" is printed."""
    task.cancel()
    if task.done():
        _retrieve(task)
        return
    _abandoned.add(task)
    task.add_done_callback(_forget)


def _forget(task: asyncio.Future[Any]) -> None:
    _abandoned.discard(task)
    _retrieve(task)


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def abandoned_tasks() -> list[asyncio.Future[Any]]:
    """Abandoned work still running (an engine that swallowed its cancellation)."""
    return [task for task in _abandoned if not task.done()]


class BlockedLoop(BaseException):
    """Raised inside engine code that held the event loop past the bound of the wait in progress.

    A ``BaseException``, so an engine's ``except Exception`` does not swallow it.  For the same reason
    it is not a :class:`~dynamo_backend_protocol.model.exceptions.ProtocolError` (an ``Exception``): it
    is a signal the kit sends through engine code, never an error a caller sees; :func:`within` turns it
    into the wait's timeout (FAULT-KIT-BOUNDED).
    """


@dataclass(frozen=True)
class ArmedWait:
    deadline: float
    """``time.monotonic()`` at which the wait's bound passes."""
    seconds: float
    what: str


_armed: dict[int, ArmedWait] = {}
_armed_ids = itertools.count()
_armed_lock = threading.Lock()


@contextlib.contextmanager
def _armed_for(seconds: float, what: str) -> Iterator[None]:
    key = next(_armed_ids)
    with _armed_lock:
        _armed[key] = ArmedWait(time.monotonic() + seconds, seconds, what)
    try:
        yield
    finally:
        with _armed_lock:
            _armed.pop(key, None)


def earliest_armed() -> ArmedWait | None:
    """The bounded wait in progress whose bound passes first (read by the monitor thread)."""
    with _armed_lock:
        return min(_armed.values(), key=lambda wait: wait.deadline, default=None)


async def within(work: Awaitable[T], seconds: float, what: str = "the engine") -> T:
    """``await work`` for at most ``seconds``; :class:`TimeoutError` once they have passed.

    The work runs as a task, with whatever the engine raises that is not an
    ``Exception`` turned into :class:`EngineRaised`; at the bound it is cancelled and abandoned, whether or
    not it lets the cancellation through.  Work that finished, but only after its bound because it held the
    event loop, is a timeout too: the bound is wall-clock time.  Cancelling the caller abandons the work.
    """
    started = time.monotonic()
    task = asyncio.ensure_future(guarded(work))
    try:
        with _armed_for(seconds, what):
            try:
                done, _ = await asyncio.wait((task,), timeout=seconds)
            except asyncio.CancelledError:
                abandon(task)
                raise
    finally:
        _close_if_never_started(work)
    if not done:
        abandon(task)
        raise TimeoutError(f"{what} did not finish within {seconds:g} s")
    overran = time.monotonic() - started > seconds
    if task.cancelled():  # Only the engine cancels it before the bound: its own failure.
        raise EngineRaised(asyncio.CancelledError())
    error = task.exception()
    if overran or isinstance(error, BlockedLoop):
        raise TimeoutError(f"{what} held the event loop past its bound of {seconds:g} s")
    if error is not None:
        raise as_engine_failure(error)
    return task.result()


def _close_if_never_started(work: Awaitable[Any]) -> None:
    """Close a coroutine that :func:`within`'s task never began to await.  A task cancelled before its first
    step (the run's shutdown cancels every task it started, the one just created too) ends without running a
    line, so the work it was given is never awaited and never will be: Python would warn "coroutine ... was
    never awaited" when it is collected.  Closing it says it is dropped on purpose; a coroutine already under
    way is its task's to end."""
    if inspect.iscoroutine(work) and inspect.getcoroutinestate(work) == inspect.CORO_CREATED:
        work.close()


class LoopMonitor:
    """A thread that notices the event loop blocked past the bound of the wait in progress.

    The loop beats every :data:`HEARTBEAT` seconds.  When it has not beaten for :data:`BLOCKED_GRACE` and
    the earliest armed wait is that far past its bound, ``on_blocked(wait)`` runs on the monitor thread;
    once per wait, then, if the loop stays blocked another :data:`BLOCKED_GRACE`, ``on_stuck(wait)``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, on_blocked: Callable[[ArmedWait], None],
                 on_stuck: Callable[[ArmedWait], None]) -> None:
        self._loop = loop
        self._on_blocked = on_blocked
        self._on_stuck = on_stuck
        self._last_beat = time.monotonic()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="conform-loop-monitor", daemon=True)
        self._beat_handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._beat()
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._beat_handle is not None:
            self._beat_handle.cancel()

    def loop_blocked_for(self) -> float:
        return time.monotonic() - self._last_beat

    def _beat(self) -> None:
        self._last_beat = time.monotonic()
        if not self._stopped.is_set():
            self._beat_handle = self._loop.call_later(HEARTBEAT, self._beat)

    def _watch(self) -> None:
        interrupted: ArmedWait | None = None
        interrupted_at = 0.0
        while not self._stopped.wait(HEARTBEAT):
            wait = earliest_armed()
            now = time.monotonic()
            if wait is None or self.loop_blocked_for() < BLOCKED_GRACE or now < wait.deadline + BLOCKED_GRACE:
                continue
            if wait is not interrupted:
                interrupted, interrupted_at = wait, now
                self._on_blocked(wait)
            elif now - interrupted_at > BLOCKED_GRACE:
                self._on_stuck(wait)
                return
