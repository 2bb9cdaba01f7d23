"""The kit's bounded waits (reference/conformance/watchdog.py) leave nothing behind when a run stops.

A user's test suite run with ``-W error`` turns a stray "coroutine ... was never awaited" into a failure of
whichever of their tests happens to be running when it is collected, so the kit must not leave one.
"""

from __future__ import annotations

import asyncio
import gc
import warnings

import pytest
from dynamo_backend_protocol.reference.conformance.watchdog import within


def test_a_wait_stopped_before_its_work_began_leaves_no_coroutine_unawaited() -> None:
    """The run's shutdown cancels every task it started, the one a check has just created for its next engine
    call too, before that task ran a line: the engine call it was given is dropped without a warning."""
    began: list[str] = []

    async def engine_call() -> None:
        began.append("engine call")

    async def stop_the_run_as_a_check_sets_out() -> None:
        baseline = asyncio.all_tasks()
        check = asyncio.ensure_future(within(engine_call(), 5.0, "the engine call"))
        await asyncio.sleep(0)  # the check runs up to its wait; the engine call's task is made, not yet run
        for task in asyncio.all_tasks() - baseline:
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await check

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(stop_the_run_as_a_check_sets_out())
        gc.collect()
    assert began == []  # the scenario really stopped the work before it began
    assert [str(warning.message) for warning in caught if issubclass(warning.category, RuntimeWarning)] == []
