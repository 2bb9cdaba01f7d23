"""Running a whole ``conform`` run in a process the engine cannot hold up: ``asyncio.run``, minus its waits.

``asyncio.run`` waits, at the end, for every task to take its cancellation,
for every async generator to close and for the default executor's threads to
end; an engine that swallows ``CancelledError`` or sleeps in a thread keeps the
process alive past every bound.  :func:`run_abandoning` gives each of those a
short grace and then abandons what is left.  It also:

* ends the run on one Ctrl-C: the run is cancelled, and if it has not ended
  :data:`INTERRUPT_GRACE` seconds later (an engine that swallows the
  cancellation, or blocks the loop) the process ends at once, with the one
  line ``interrupted`` and exit status 130;
* keeps the run going when engine code in a background task raises
  ``SystemExit`` or ``KeyboardInterrupt`` (asyncio lets those two leave the
  loop): the task has failed, the run has not;
* watches the loop from a thread (:class:`.watchdog.LoopMonitor`): engine code
  that blocks it past the bound of the wait in progress is interrupted with
  :class:`.watchdog.BlockedLoop`, and if it still holds the loop the run ends
  with one line and exit status 1 (what was printed so far stands).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Generic, Protocol, TypeVar

from dynamo_backend_protocol.reference.conformance.watchdog import (
    BLOCKED_GRACE,
    ArmedWait,
    BlockedLoop,
    LoopMonitor,
    abandon,
)

T = TypeVar("T")
INTERRUPT_GRACE = 1.5
"""Seconds a Ctrl-C'd run has to end by itself before the process ends without it."""
SHUTDOWN_GRACE = 0.5
"""Seconds the leftover tasks, async generators and worker threads get at the end before they are abandoned."""
INTERRUPTED_EXIT = 130
STUCK_EXIT = 1


@dataclass
class Outcome(Generic[T]):
    """How a run ended, and what it left behind that the process must not wait for."""

    task: asyncio.Task[T]
    interrupted: bool
    """The user pressed Ctrl-C and the run ended (cancelled) within the grace."""
    threads_left: list[threading.Thread]

    def result(self) -> T:
        """What the run returned; raises what it raised."""
        return self.task.result()

    @property
    def must_not_wait(self) -> bool:
        return bool(self.threads_left)


class Flushable(Protocol):
    def flush(self) -> None: ...


def run_abandoning(main: Coroutine[Any, Any, T], flush_at_exit: Sequence[Flushable] = (),
                   error_prefix: str = "error: ") -> Outcome[T]:
    """Run ``main`` on a fresh event loop, as ``asyncio.run`` would, without waiting for what the engine
    will not end.  ``flush_at_exit``: files (a trace) to flush if the process has to end during the run;
    ``error_prefix`` starts the one line printed then (the command's error shape)."""
    loop = asyncio.new_event_loop()
    executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="conform-worker")
    loop.set_default_executor(executor)
    before = set(threading.enumerate())
    task = loop.create_task(main)
    interrupted = threading.Event()
    _flushed_at_exit[:] = flush_at_exit
    try:
        with _interrupt_handled(loop, task, interrupted):
            with loop_watched(loop, error_prefix):
                _run_to_the_end(loop, task)
            _shut_down(loop, executor)
    finally:
        if not loop.is_closed():
            _shut_down(loop, executor)
        _flushed_at_exit.clear()
    threads_left = [thread for thread in threading.enumerate()
                    if thread not in before and thread.is_alive() and not thread.daemon]
    return Outcome(task, interrupted.is_set(), threads_left)


_flushed_at_exit: list[Flushable] = []


MAX_ESCAPES = 1000
"""Bound on how often engine code may throw the loop out of its run before the run is given up."""


def _run_to_the_end(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
    for _ in range(MAX_ESCAPES):
        try:
            loop.run_until_complete(task)
        except BaseException:
            # SystemExit or KeyboardInterrupt raised by engine code in some task (asyncio lets those two leave
            # the loop), BlockedLoop landing between tasks, the engine stopping the loop: that task has
            # failed, the run goes on.  A real Ctrl-C never raises here: our own handler takes it.
            if task.done():
                return
            continue
        return
    raise RuntimeError("the engine kept throwing the event loop out of its run")


@contextlib.contextmanager
def loop_watched(loop: asyncio.AbstractEventLoop, error_prefix: str = "error: ") -> Iterator[None]:
    """While ``loop`` runs inside: engine code that blocks it past the bound of the wait in progress is
    interrupted with :class:`.watchdog.BlockedLoop`, and if it still holds the loop the process ends with
    one line starting ``error_prefix`` and exit status 1 (what was printed so far stands).  Only the main
    thread of a POSIX process can be interrupted; elsewhere nothing is watched."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_kill"):
        yield
        return
    monitor = LoopMonitor(loop, _interrupt_blocked_call, functools.partial(_end_stuck_run, error_prefix))

    def on_blocked(_signum: int, _frame: FrameType | None) -> None:
        # Only while the loop is still blocked: the signal may land just after the engine let go.
        if monitor.loop_blocked_for() >= BLOCKED_GRACE:
            raise BlockedLoop

    previous = signal.signal(signal.SIGUSR1, on_blocked)
    monitor.start()
    try:
        yield
    finally:
        monitor.stop()
        signal.signal(signal.SIGUSR1, previous)


@contextlib.contextmanager
def _interrupt_handled(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any],
                       interrupted: threading.Event) -> Iterator[None]:
    """Ctrl-C, handled while the run lasts (only the main thread of a process can take signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    timers: list[threading.Timer] = []

    def on_sigint(_signum: int, _frame: FrameType | None) -> None:
        if interrupted.is_set():
            _end_process_interrupted()
        interrupted.set()
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(task.cancel)
        timer = threading.Timer(INTERRUPT_GRACE, _end_process_interrupted)
        timer.daemon = True
        timer.start()
        timers.append(timer)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        for timer in timers:
            timer.cancel()


def _end_process_interrupted() -> None:
    _flush_quietly()
    os.write(2, b"interrupted\n")
    os._exit(INTERRUPTED_EXIT)


def _interrupt_blocked_call(wait: ArmedWait) -> None:
    """From the monitor thread: wake the main thread out of whatever blocks it, raising BlockedLoop there."""
    if threading.current_thread() is threading.main_thread():
        return
    with contextlib.suppress(ValueError, OSError):
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)


def _end_stuck_run(error_prefix: str, wait: ArmedWait) -> None:
    """From the monitor thread: the engine holds the loop and did not let go when interrupted."""
    _flush_quietly()
    line = (f"{error_prefix}the engine blocked the event loop in {wait.what} for more than {wait.seconds:g} s "
            f"(+{2 * BLOCKED_GRACE:g} s grace) and kept it; the run cannot go on\n")
    os.write(2, line.encode("utf-8", "replace"))
    os._exit(STUCK_EXIT)


def _flush_quietly() -> None:
    for stream in (*_flushed_at_exit, sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _shut_down(loop: asyncio.AbstractEventLoop, executor: concurrent.futures.ThreadPoolExecutor) -> None:
    """Give leftover tasks and async generators a short grace, then abandon them; never wait on threads."""
    # What an abandoned engine task prints while the loop closes is not the user's business.
    loop.set_exception_handler(lambda _loop, _context: None)
    with contextlib.suppress(BaseException):
        leftovers = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in leftovers:
            task.cancel()
        if leftovers:
            loop.run_until_complete(_wait_briefly(leftovers))
        for task in leftovers:
            if not task.done():
                abandon(task)
        closing = loop.create_task(loop.shutdown_asyncgens())
        loop.run_until_complete(_wait_briefly([closing]))
        if not closing.done():
            abandon(closing)
    executor.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + SHUTDOWN_GRACE
    for thread in list(getattr(executor, "_threads", ())):
        thread.join(max(0.0, deadline - time.monotonic()))
    with contextlib.suppress(BaseException):
        loop.close()


async def _wait_briefly(tasks: list[asyncio.Task[Any]]) -> None:
    await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE)
