"""The property-based phase: Hypothesis draws client schedules and runs them against the engine.

A schedule is a few concurrent requests, each read to the end, or stopped,
killed or dropped after some number of chunks.  Every request of every
schedule is driven through the reference adapter and judged by all the
engine-side rules and the model's invariants over its trace.  A second search
stops one long request at a drawn point, late as well as early.  The search is
deterministic (``derandomize=True``, no example database), bounded in
examples and in time, and a failure is reported as the shrunk schedule in
words a person can replay.

Hypothesis runs its search synchronously, so it runs in a worker thread and
hands each schedule to the kit's event loop, where the engine lives.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from dynamo_backend_protocol.model.exceptions import ProtocolError
from dynamo_backend_protocol.reference.conformance.adapter_checks import (
    adapter_session,
    probe_stop_after_first_chunk,
    stop_ignored,
)
from dynamo_backend_protocol.reference.conformance.checks import Failure, Verdicts
from dynamo_backend_protocol.reference.conformance.drive import CANCEL_MAX_TOKENS, Action, RequestPlan
from dynamo_backend_protocol.reference.conformance.rules import Finding, judge_all
from dynamo_backend_protocol.reference.conformance.session import KitSettings, describe_tasks, tasks_left_behind

if TYPE_CHECKING:
    from hypothesis import strategies as st

MAX_REQUESTS = 4
MAX_CHUNKS_BEFORE_ACTING = 4
MAX_TOKENS = 6
MAX_CHUNKS_BEFORE_LATE_STOP = 24
T = TypeVar("T")


class SearchSettings(Protocol):
    """What a search needs of the run it is part of: the kit's (:class:`KitSettings`), or one under Dynamo's
    real runtime."""

    @property
    def stream_timeout(self) -> float: ...
    @property
    def cancel_deadline(self) -> float: ...
    @property
    def fuzz_budget(self) -> float: ...
    def examples_done(self, done: int, total: int) -> None: ...


S = TypeVar("S", bound=SearchSettings)


@dataclass(frozen=True)
class Schedule:
    plans: tuple[RequestPlan, ...]

    def describe(self) -> str:
        return "; ".join(f"request {number}: {plan.describe()}" for number, plan in enumerate(self.plans, start=1))

    def size(self) -> tuple[int, int, int, int]:
        return (
            len(self.plans),
            sum(plan.after_chunks for plan in self.plans),
            sum(plan.max_tokens for plan in self.plans),
            sum(plan.while_waiting for plan in self.plans),
        )


def schedules(actions: tuple[Action, ...] = tuple(Action), while_waiting: bool = True) -> st.SearchStrategy[Schedule]:
    """Schedules whose requests end by one of ``actions``; ``while_waiting``: also drawn, acting while the
    client waits for an item (not only between items)."""
    # Imported on use: importing the package (the CLI, the pytest plugin) should not pay for Hypothesis.
    from hypothesis import strategies as st

    # Actions shrink towards "finish" and counts towards zero, so a shrunk schedule is the plainest one that fails.
    plan = st.builds(
        RequestPlan,
        action=st.sampled_from(actions),
        after_chunks=st.integers(0, MAX_CHUNKS_BEFORE_ACTING),
        max_tokens=st.integers(1, MAX_TOKENS),
        while_waiting=st.booleans() if while_waiting else st.just(False),
    )
    return st.lists(plan, min_size=1, max_size=MAX_REQUESTS).map(lambda plans: Schedule(tuple(plans)))


async def run_schedule(settings: KitSettings, schedule: Schedule) -> list[Finding]:
    """Run one schedule on the shared engine; every rule broken on the way."""
    async with adapter_session(settings) as session:
        await session.warm_up()
        baseline = set(asyncio.all_tasks())
        runs = await asyncio.gather(
            *(session.drive(plan, f"request-{number}", must_start=False)
              for number, plan in enumerate(schedule.plans, start=1))
        )
        await session.settle()
        findings = [finding for run in runs for finding in judge_all(run, settings.mode)]
        leftover = await tasks_left_behind(baseline)
        if leftover:
            findings.append(
                Finding(Failure.DROPPED_STREAM_NOT_CLOSED,
                        f"{len(leftover)} task(s) still running after every request ended: {describe_tasks(leftover)}")
            )
    return findings


def late_stops(while_waiting: bool = True) -> st.SearchStrategy[RequestPlan]:
    """One long request, stopped or killed after a drawn number of chunks: an engine that only looks at
    ``context.is_stopped()`` early in the stream (or only while it waits) is caught at a later point.
    ``while_waiting``: also drawn, acting while the client waits for the next chunk."""
    from hypothesis import strategies as st

    return st.builds(
        RequestPlan,
        action=st.sampled_from([Action.STOP, Action.KILL]),
        after_chunks=st.integers(0, MAX_CHUNKS_BEFORE_LATE_STOP),
        max_tokens=st.just(CANCEL_MAX_TOKENS),
        while_waiting=st.booleans() if while_waiting else st.just(False),
    )


async def run_late_stop(settings: KitSettings, plan: RequestPlan) -> list[Finding]:
    """Run one late stop on the shared engine; a finding if the stream ignored it (kept streaming, or ended as
    if nobody had asked); a stream left waiting is AbortedStreamNotEnded's, other endings the schedules'."""
    async with adapter_session(settings) as session:
        run = await session.drive(plan, "conformance-late-stop")
        await session.settle()
    problem = stop_ignored(run, settings)
    return [] if problem is None else [Finding(Failure.MID_STREAM_CANCELLATION_IGNORED, problem)]


class _Broke(ProtocolError):
    def __init__(self, example: object, findings: list[Finding]) -> None:
        super().__init__(str(example))
        self.example = example
        self.findings = findings


# The two signals below are BaseExceptions, not ProtocolErrors: Hypothesis treats an ``Exception`` raised
# by a test as a failing example and shrinks it; only what is no ``Exception`` stops it at once.  They never
# leave :func:`search`.
class _Interrupted(BaseException):
    """The run was cancelled (Ctrl-C): Hypothesis must stop at once, not shrink."""


class _OutOfTime(BaseException):
    """The fuzz budget is spent: Hypothesis must stop drawing (it would go on to ``--examples``, however
    many), and shrinking stops where it got to."""


async def search(
    settings: S,
    strategy: st.SearchStrategy[T],
    run_one: Callable[[S, T], Coroutine[object, object, list[Finding]]],
    examples: int,
    size: Callable[[T], tuple[int, ...]],
) -> tuple[T, list[Finding]] | None:
    """Draw up to ``examples`` examples, run each on the kit's event loop, and return the plainest one that
    broke a rule (shrunk), or None.  Bounded by the fuzz budget; cancelling it stops Hypothesis promptly."""
    import hypothesis
    from hypothesis import HealthCheck, Phase, Verbosity

    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    seen_failing: list[tuple[T, list[Finding]]] = []
    per_example = settings.stream_timeout * 2 + settings.cancel_deadline * 2
    interrupted = threading.Event()
    running: list[concurrent.futures.Future[list[Finding]]] = []
    done = 0

    def count_one() -> None:
        nonlocal done
        done += 1
        settings.examples_done(min(done, examples), examples)

    def keeps_every_rule(example: T) -> None:
        if interrupted.is_set():
            raise _Interrupted
        if time.perf_counter() - started > settings.fuzz_budget:
            raise _OutOfTime
        future = asyncio.run_coroutine_threadsafe(run_one(settings, example), loop)
        running[:] = [future]
        try:
            findings = future.result(timeout=per_example)
        except concurrent.futures.CancelledError:
            raise _Interrupted from None
        except concurrent.futures.TimeoutError:
            future.cancel()
            findings = [Finding("ScheduleTimedOut", f"the example did not finish within {per_example:g} s")]
        if interrupted.is_set():
            raise _Interrupted
        loop.call_soon_threadsafe(count_one)
        if findings:
            seen_failing.append((example, findings))
            raise _Broke(example, findings)

    run_search = hypothesis.settings(
        max_examples=max(examples, 1),
        derandomize=True,
        database=None,
        deadline=None,
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        print_blob=False,
    )(hypothesis.given(strategy)(keeps_every_rule))
    settings.examples_done(0, examples)
    try:
        with _scratch_storage():
            await asyncio.to_thread(run_search)
    except _Broke as broke:
        return broke.example, broke.findings  # type: ignore[return-value]
    except _OutOfTime:
        pass  # The draws not made count as passing; a failure seen before (even unshrunk) still counts.
    except asyncio.CancelledError:
        interrupted.set()
        for future in running:
            future.cancel()
        raise
    except Exception:
        # e.g. Hypothesis calling the failure flaky after the time budget cut shrinking short.
        if not seen_failing:
            raise
    if seen_failing:
        return min(seen_failing, key=lambda failing: size(failing[0]))
    return None


@contextlib.contextmanager
def _scratch_storage() -> Iterator[None]:
    """Hypothesis caches what it learns of local modules under ``./.hypothesis`` even without an example
    database; a conformance run writes nothing the user did not ask for, so that cache goes to a temporary
    folder, removed afterwards (unless HYPOTHESIS_STORAGE_DIRECTORY names one the user wants)."""
    from hypothesis import configuration

    if os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
        yield
        return
    before = getattr(configuration, "__hypothesis_home_directory", None)
    with tempfile.TemporaryDirectory(prefix="dbp-conform-") as scratch:
        configuration.set_hypothesis_home_dir(scratch)
        try:
            yield
        finally:
            configuration.set_hypothesis_home_dir(before)


async def probe_late_stops(settings: KitSettings) -> Verdicts:
    """A stop after the first chunk first (always), then, property-based, stops at drawn later points."""
    first = await probe_stop_after_first_chunk(settings)
    if first[Failure.MID_STREAM_CANCELLATION_IGNORED] is not None or not settings.examples:
        return first
    found = await search(settings, late_stops(), run_late_stop, late_stop_examples(settings.examples),
                         lambda plan: (plan.after_chunks, plan.while_waiting, plan.action is Action.KILL))
    if found is None:
        return {Failure.MID_STREAM_CANCELLATION_IGNORED: None}
    return {Failure.MID_STREAM_CANCELLATION_IGNORED: found[1][0].reason}


def late_stop_examples(examples: int) -> int:
    """A third of the property phase's examples (at least one) go to late stops."""
    return max(1, examples // 3) if examples else 0


async def probe_schedules(settings: KitSettings) -> Verdicts:
    found = await search(settings, schedules(), run_schedule, settings.examples, Schedule.size)
    if found is None:
        return {Failure.SCHEDULE_FAILED: None}
    schedule, findings = found
    first = findings[0]
    return {Failure.SCHEDULE_FAILED: f"schedule [{schedule.describe()}] broke {first.rule}: {first.reason}"}
