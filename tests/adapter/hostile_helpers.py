"""Harness for the hostile-engine tests (import explicitly).

A hostile engine breaks the engine side of the protocol on purpose: it
raises where it should not, yields garbage, hangs, ignores ``aclose()``,
signals from foreign threads.  Whatever it does, the adapter must end in a
clear typed error or a documented behaviour, and in every case:

* nothing crashes: no exception escapes where none is expected, and the
  event loop's exception handler is never called (no "Task exception was
  never retrieved", no failing callback);
* nothing leaks: after ``adapter.settle()`` the running tasks are the ones
  that existed before the adapter was made, and the adapter holds no task;
* the adapter's recorded history is a legal run of the model (every step and
  state invariant holds on every step it took);
* every test finishes within :data:`DEADLINE`: a hang fails the test instead
  of blocking the suite.

No real time passes except the tiny timeouts the hostile behaviour itself
requires (:data:`HOSTILE_TIMEOUT`, the bound a test uses to prove a hang).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ParamSpec

# Reading a response stream is the same here as in the adapter tests.
from adapter_helpers import collect as collect
from adapter_helpers import data_of as data_of
from adapter_helpers import ended as ended
from adapter_helpers import error_of as error_of
from adapter_helpers import next_item as next_item
from dynamo_backend_protocol.model import Mode, RequestMachine
from dynamo_backend_protocol.model.invariants import STATE_INVARIANTS, STEP_INVARIANTS
from dynamo_backend_protocol.reference import (
    Context,
    EngineAdapter,
    EngineConfig,
    ResponseStream,
)

P = ParamSpec("P")
Chunk = dict[str, Any]
REQUEST: dict[str, Any] = {"model": "hostile", "token_ids": [1, 2, 3]}

DEADLINE = 10.0
"""Upper bound for one whole test; only reached if something hangs."""
HOSTILE_TIMEOUT = 0.05
"""The adapter's abort/close timeout in the tests that need one, and the bound used to prove a hang."""
SETTLE_BOUND = 2.0
"""``adapter.settle()`` must return within this (many times :data:`HOSTILE_TIMEOUT`)."""


# --------------------------------------------------------------------------- running a test


def hostile_test(fn: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """Run an ``async def`` test on a fresh loop, within :data:`DEADLINE`,
    failing it if the loop's exception handler was called."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        problems: list[dict[str, Any]] = []
        reported: list[dict[str, Any]] = []

        async def guarded() -> None:
            loop = asyncio.get_running_loop()
            loop.set_exception_handler(lambda _loop, context: problems.append(context))
            async with asyncio.timeout(DEADLINE):
                await fn(*args, **kwargs)
            await let_callbacks_run()
            # What asyncio.run reports while shutting down (e.g. re-closing an engine generator
            # that a captured log record still references) is not the adapter's doing.
            reported.extend(problems)

        asyncio.run(guarded())
        assert not reported, f"the event loop reported unhandled problems: {reported!r}"

    return wrapper


async def let_callbacks_run(rounds: int = 5) -> None:
    """Give already-scheduled callbacks and tasks a few loop iterations (no real time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def assert_legal_history(machine: RequestMachine) -> None:
    """Every step the adapter took satisfies every step invariant, and every state it reached every state invariant."""
    for number, step in enumerate(machine.history, start=1):
        for step_invariant in STEP_INVARIANTS:
            assert step_invariant.holds(step), (
                f"step {number} ({step.event.name}) breaks {step_invariant.rule} {step_invariant.name}"
            )
        for state_invariant in STATE_INVARIANTS:
            assert state_invariant.holds(step.after), (
                f"state after step {number} ({step.event.name}) breaks {state_invariant.rule} {state_invariant.name}"
            )


class Harness:
    """One adapter under watch.

    Made inside the test's loop, it remembers which tasks were already
    running; :meth:`released` proves the adapter left nothing behind.  It
    keeps each request's machine (not the stream, so garbage-collection
    drops still work) to check the recorded histories at the end.
    """

    def __init__(self, engine: object, mode: Mode = Mode.AGGREGATED, **options: Any) -> None:
        self.adapter = EngineAdapter(engine, mode, **options)
        self.tasks_before = frozenset(asyncio.all_tasks())
        self.machines: list[RequestMachine] = []

    async def generate(self, context: Context | None = None, request: dict[str, Any] | None = None) -> ResponseStream:
        stream = await self.adapter.generate(
            REQUEST if request is None else request, context if context is not None else Context()
        )
        self.machines.append(stream.machine)
        return stream

    async def released(self) -> None:
        """Settle within :data:`SETTLE_BOUND`; then no task, no background work, legal histories."""
        async with asyncio.timeout(SETTLE_BOUND):
            await self.adapter.settle()
        await let_callbacks_run()
        assert self.adapter.background_tasks == 0, "the adapter still holds background tasks"
        leaked = asyncio.all_tasks() - self.tasks_before
        assert not leaked, f"tasks left running: {leaked!r}"
        for machine in self.machines:
            assert_legal_history(machine)


# --------------------------------------------------------------------------- engine bookkeeping


@dataclass
class Record:
    """What a hostile engine went through."""

    start_calls: int = 0
    cleanup_calls: int = 0
    aborts_started: int = 0
    aborts_finished: int = 0
    aborts_cancelled: int = 0
    abort_threads: list[int] = field(default_factory=list)
    generators_started: int = 0
    generators_finalized: int = 0
    finally_cancelled: int = 0
    items_yielded: int = 0


class HostileEngine:
    """Base: well-behaved ``start``/``abort``/``cleanup`` that record their calls.

    Subclasses override :meth:`generate` (and whatever they break).  The
    abort records the thread it runs on, so tests can prove it ran on the
    loop's thread.
    """

    def __init__(self) -> None:
        self.record = Record()

    async def start(self, worker_id: int) -> EngineConfig:
        self.record.start_calls += 1
        return EngineConfig(model="hostile")

    async def abort(self, context: Context) -> None:
        self.record.aborts_started += 1
        self.record.abort_threads.append(threading.get_ident())
        self.record.aborts_finished += 1

    async def cleanup(self) -> None:
        self.record.cleanup_calls += 1

    @contextmanager
    def lifetime(self) -> Iterator[None]:
        """Wrap a generator body: counts its start and its ``finally``."""
        self.record.generators_started += 1
        try:
            yield
        finally:
            self.record.generators_finalized += 1

    @property
    def aborts(self) -> int:
        return self.record.aborts_started


def run_in_thread(target: Callable[[], None]) -> int:
    """Run ``target`` on a fresh thread and join it; returns that thread's ident."""
    idents: list[int] = []

    def body() -> None:
        idents.append(threading.get_ident())
        target()

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert idents, "the thread did not run"
    return idents[0]
