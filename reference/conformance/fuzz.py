"""The property-based phase: Hypothesis draws client schedules and runs them against the engine.

A schedule is a few concurrent requests, each read to the end, or stopped,
killed or dropped after some number of chunks.  Every request of every
schedule is driven through the reference adapter and judged by all the
engine-side rules and the model's invariants over its trace.  The search is
deterministic (``derandomize=True``, no example database), bounded in
examples and in time, and a failure is reported as the shrunk schedule in
words a person can replay.

Hypothesis runs its search synchronously, so it runs in a worker thread and
hands each schedule to the kit's event loop, where the engine lives.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dynamo_backend_protocol.reference.conformance.adapter_checks import adapter_session
from dynamo_backend_protocol.reference.conformance.checks import Failure, Verdicts
from dynamo_backend_protocol.reference.conformance.drive import Action, RequestPlan
from dynamo_backend_protocol.reference.conformance.rules import Finding, judge_all
from dynamo_backend_protocol.reference.conformance.session import KitSettings, describe_tasks, tasks_left_behind

if TYPE_CHECKING:
    from hypothesis import strategies as st

MAX_REQUESTS = 4
MAX_CHUNKS_BEFORE_ACTING = 4
MAX_TOKENS = 6


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


def schedules() -> st.SearchStrategy[Schedule]:
    # Imported on use: importing the package (the CLI, the pytest plugin) should not pay for Hypothesis.
    from hypothesis import strategies as st

    # Actions shrink towards "finish" and counts towards zero, so a shrunk schedule is the plainest one that fails.
    plan = st.builds(
        RequestPlan,
        action=st.sampled_from(list(Action)),
        after_chunks=st.integers(0, MAX_CHUNKS_BEFORE_ACTING),
        max_tokens=st.integers(1, MAX_TOKENS),
        while_waiting=st.booleans(),
    )
    return st.lists(plan, min_size=1, max_size=MAX_REQUESTS).map(lambda plans: Schedule(tuple(plans)))


async def run_schedule(settings: KitSettings, schedule: Schedule) -> list[Finding]:
    """Run one schedule on a fresh engine; every rule broken on the way."""
    async with adapter_session(settings) as session:
        await session.warm_up()
        baseline = set(asyncio.all_tasks())
        runs = await asyncio.gather(
            *(session.drive(plan, f"request-{number}") for number, plan in enumerate(schedule.plans, start=1))
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


class _ScheduleBroke(Exception):
    def __init__(self, schedule: Schedule, findings: list[Finding]) -> None:
        super().__init__(schedule.describe())
        self.schedule = schedule
        self.findings = findings


def _verdict(schedule: Schedule, findings: list[Finding]) -> Verdicts:
    first = findings[0]
    return {Failure.SCHEDULE_FAILED: f"schedule [{schedule.describe()}] broke {first.rule}: {first.reason}"}


async def probe_schedules(settings: KitSettings) -> Verdicts:
    import hypothesis
    from hypothesis import HealthCheck, Phase, Verbosity

    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    seen_failing: list[tuple[Schedule, list[Finding]]] = []
    per_schedule = settings.stream_timeout * 2 + settings.cancel_deadline * 2

    def schedule_keeps_every_rule(schedule: Schedule) -> None:
        if time.perf_counter() - started > settings.fuzz_budget:
            return  # Out of time: the remaining draws count as passing.
        future = asyncio.run_coroutine_threadsafe(run_schedule(settings, schedule), loop)
        try:
            findings = future.result(timeout=per_schedule)
        except concurrent.futures.TimeoutError:
            future.cancel()
            findings = [Finding("ScheduleTimedOut", f"the schedule did not finish within {per_schedule:g} s")]
        if findings:
            seen_failing.append((schedule, findings))
            raise _ScheduleBroke(schedule, findings)

    search = hypothesis.settings(
        max_examples=settings.examples,
        derandomize=True,
        database=None,
        deadline=None,
        report_multiple_bugs=False,
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        print_blob=False,
    )(hypothesis.given(schedules())(schedule_keeps_every_rule))
    try:
        await asyncio.to_thread(search)
    except _ScheduleBroke as broke:
        return _verdict(broke.schedule, broke.findings)
    except Exception:
        # e.g. Hypothesis calling the failure flaky after the time budget cut shrinking short.
        if not seen_failing:
            raise
    if seen_failing:
        schedule, findings = min(seen_failing, key=lambda failing: failing[0].size())
        return _verdict(schedule, findings)
    return {Failure.SCHEDULE_FAILED: None}
