"""The conformance kit: ``await run_conformance(MyEngine)`` judges an engine against the protocol.

Probes run in order, each on a fresh engine from the factory, and each
judges one or more checks of :data:`~.checks.CHECKS`.  A check
whose prerequisite failed is skipped with the name of what to fix first; a
check that does not apply to the mode is skipped as such; every other check
ends passed or failed with a one-line reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.reference.adapter import TraceSink
from dynamo_backend_protocol.reference.conformance.adapter_checks import (
    probe_abort_once,
    probe_aborted_stream,
    probe_clean_completion,
    probe_decode_abort,
    probe_drop,
    probe_kill,
    probe_lifecycle,
    probe_well_formed,
)
from dynamo_backend_protocol.reference.conformance.checks import ENCODE_SUITE, SPECS, CheckSpec, Failure, Verdicts
from dynamo_backend_protocol.reference.conformance.construction import declared_mode, engine_factory, resolve_mode
from dynamo_backend_protocol.reference.conformance.fuzz import probe_schedules
from dynamo_backend_protocol.reference.conformance.handoff import prepare_requests
from dynamo_backend_protocol.reference.conformance.kv_events import OPTIONAL_HOOKS, probe_kv_event_sources
from dynamo_backend_protocol.reference.conformance.report import CheckResult, CheckStatus, ConformanceReport, one_line
from dynamo_backend_protocol.reference.conformance.session import (
    EngineFactory,
    EngineFactoryError,
    KitSettings,
    check_factory,
    describe_error,
    describe_factory,
    make_engine,
)
from dynamo_backend_protocol.reference.conformance.upstream import (
    probe_cancellation,
    probe_cleanup,
    probe_cleanup_without_start,
    probe_concurrent,
    probe_plain_stream,
    probe_start,
)

DEFAULT_EXAMPLES = 30
"""Schedules the property-based phase draws by default: enough to find order-dependent bugs, quick on a fast engine."""

F = Failure


@dataclass(frozen=True)
class Probe:
    checks: tuple[Failure, ...]
    run: Callable[[KitSettings], Awaitable[Verdicts]]


PROBES: tuple[Probe, ...] = (
    Probe((F.START_FAILED, F.EMPTY_MODEL_IN_CONFIG), probe_start),
    # Where a Worker calls it: after start, before serving.
    Probe((F.KV_EVENT_SOURCES_FAILED, F.KV_EVENT_SOURCES_NOT_IDEMPOTENT), probe_kv_event_sources),
    Probe(
        (
            F.GENERATE_FAILED, F.NO_CHUNKS_YIELDED, F.STREAM_YIELDED_ERROR, F.CHUNK_AFTER_TERMINAL,
            F.NO_TERMINAL_CHUNK, F.COMPLETION_TOKENS_MISMATCH, *ENCODE_SUITE,
        ),
        probe_plain_stream,
    ),
    Probe((F.CONCURRENT_GENERATE_FAILED,), probe_concurrent),
    Probe((F.CANCELLATION_NOT_OBSERVED, F.CANCELLATION_IGNORED), probe_cancellation),
    Probe((F.CLEANUP_FAILED, F.SECOND_CLEANUP_FAILED), probe_cleanup),
    Probe((F.CLEANUP_WITHOUT_START_FAILED,), probe_cleanup_without_start),
    Probe((F.MALFORMED_CHUNK,), probe_well_formed),
    Probe((F.ABORTED_STREAM_NOT_ENDED,), probe_aborted_stream),
    Probe((F.KILL_NOT_HANDLED_LIKE_STOP,), probe_kill),
    Probe((F.ABORT_CALLED_TWICE,), probe_abort_once),
    Probe((F.ABORT_ON_CLEAN_COMPLETION,), probe_clean_completion),
    Probe((F.ABORT_BEFORE_FIRST_TOKEN,), probe_decode_abort),
    Probe((F.DROPPED_STREAM_NOT_CLOSED,), probe_drop),
    Probe((F.LIFECYCLE_ORDER_VIOLATED,), probe_lifecycle),
    Probe((F.SCHEDULE_FAILED,), probe_schedules),
)


async def run_conformance(
    factory: EngineFactory,
    *,
    mode: Mode | str | None = None,
    engine_args: str | Sequence[str] | None = None,
    cancel_deadline: float = 2.0,
    examples: int = DEFAULT_EXAMPLES,
    trace_sink: TraceSink | None = None,
    label: str | None = None,
) -> ConformanceReport:
    """Run every conformance check on engines made by ``factory``.

    ``factory`` is an engine class or a zero-argument callable; a class with
    Dynamo's async classmethod ``from_args(argv)`` is built through it, with
    ``engine_args`` (a shell-quoted string or a list) as ``argv``.  ``mode`` is
    the disaggregation mode to check in; by default the one the engine's
    worker config or the engine itself declares (``disaggregation_mode``),
    else agg.  ``cancel_deadline`` is how long a cancelled stream may take to
    end; ``examples`` bounds the property-based phase (0 skips it);
    ``trace_sink`` receives every adapter-driven request's trace; ``label``
    names the engine in the report.  Raises :class:`EngineFactoryError` if no
    engine can be made (or ``mode`` disagrees with the declared one), and
    ``ValueError`` for a bad setting.
    """
    asked = Mode.parse(mode) if isinstance(mode, str) else mode
    if not cancel_deadline > 0:
        raise ValueError(f"cancel_deadline must be a positive number of seconds, got {cancel_deadline!r}")
    if examples < 0:
        raise ValueError(f"examples must be 0 or more, got {examples!r}")
    label = label or describe_factory(factory)
    check_factory(factory, label)
    factory = engine_factory(factory, engine_args, label)
    # Fails early, and once, if the factory cannot make an engine; says which mode the engine serves.
    first = await make_engine(factory, label)
    checked_mode = resolve_mode(asked, declared_mode(factory, first), label)
    hooks = frozenset(name for name in OPTIONAL_HOOKS if callable(getattr(first, name, None)))
    settings = KitSettings(factory, label, checked_mode, cancel_deadline, examples, trace_sink=trace_sink,
                           engine_hooks=hooks)
    settings = dataclasses.replace(settings, requests=await prepare_requests(settings))
    started = time.perf_counter()
    results: dict[Failure, CheckResult] = {}
    for probe in PROBES:
        await _run_probe(probe, settings, results)
    ordered = [results[spec_failure] for spec_failure in SPECS]
    return ConformanceReport(label, checked_mode, ordered, time.perf_counter() - started, settings.requests.describe())


def assert_conforms(factory: EngineFactory, **options: object) -> None:
    """From a (non-async) test: ``assert_conforms(MyEngine)``; raises ConformanceFailure listing what failed.

    Takes the keyword options of :func:`run_conformance`.  In an async test use
    ``(await run_conformance(MyEngine)).raise_for_failures()`` instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("assert_conforms cannot run inside an event loop; "
                           "use (await run_conformance(factory)).raise_for_failures()")
    report = asyncio.run(run_conformance(factory, **options))  # type: ignore[arg-type]
    report.raise_for_failures()


def _not_applicable(spec: CheckSpec, settings: KitSettings) -> str | None:
    if spec.only_in is not None and settings.mode is not spec.only_in:
        return f"applies to {spec.only_in.value} mode only (checking {settings.mode.value})"
    if spec.not_in is not None and settings.mode is spec.not_in:
        return f"does not apply to {spec.not_in.value} mode"
    if spec.needs_hook is not None and spec.needs_hook not in settings.engine_hooks:
        return f"the engine offers no {spec.needs_hook}()"
    if spec.failure is F.SCHEDULE_FAILED and settings.examples == 0:
        return "property-based phase turned off (0 examples)"
    return None


def _blockers(spec: CheckSpec, results: dict[Failure, CheckResult]) -> tuple[Failure, ...]:
    """The failed checks that keep ``spec`` from running (through skipped prerequisites too);
    a prerequisite not judged yet blocks nothing."""
    blocking: list[Failure] = []
    for needed in spec.requires:
        result = results.get(needed)
        if result is None or result.passed:
            continue
        roots = (needed,) if result.failed else result.blocked_by
        blocking += [root for root in roots if root not in blocking]
    return tuple(blocking)


def _skip_reason(blockers: tuple[Failure, ...]) -> str:
    names = ", ".join(str(b) for b in blockers)
    return f"skipped: {names} failed; fix {'it' if len(blockers) == 1 else 'those'} first"


async def _run_probe(probe: Probe, settings: KitSettings, results: dict[Failure, CheckResult]) -> None:
    specs = [SPECS[failure] for failure in probe.checks]
    # Prerequisites this probe judges itself have no result yet, so only earlier probes can block here.
    runnable = [spec for spec in specs if _not_applicable(spec, settings) is None and not _blockers(spec, results)]
    verdicts: Verdicts = {}
    trouble = ""
    started = time.perf_counter()
    if runnable:
        try:
            async with asyncio.timeout(settings.fuzz_budget + 10 * settings.stream_timeout):
                verdicts = await probe.run(settings)
        except TimeoutError:
            trouble = "the check did not finish in time (the engine stopped responding)"
        except EngineFactoryError as error:
            trouble = f"could not make a fresh engine: {error}"
        except Exception as error:
            trouble = f"the kit could not complete this check: {describe_error(error)}"
    seconds = time.perf_counter() - started
    for spec in specs:
        results[spec.failure] = _result(spec, settings, results, verdicts, trouble, seconds)


def _result(
    spec: CheckSpec,
    settings: KitSettings,
    results: dict[Failure, CheckResult],
    verdicts: Verdicts,
    trouble: str,
    seconds: float,
) -> CheckResult:
    def result(
        status: CheckStatus, reason: str = "", took: float = 0.0, blocked_by: tuple[Failure, ...] = ()
    ) -> CheckResult:
        return CheckResult(spec.failure, spec.title, status, one_line(reason), took, blocked_by, spec.upstream)

    not_applicable = _not_applicable(spec, settings)
    if not_applicable is not None:
        return result(CheckStatus.SKIPPED, f"skipped: {not_applicable}")
    blockers = _blockers(spec, results)
    if blockers:
        return result(CheckStatus.SKIPPED, _skip_reason(blockers), blocked_by=blockers)
    if spec.failure not in verdicts:
        no_verdict = "the kit gave no verdict for this check (a bug in the kit)"
        return result(CheckStatus.FAILED, trouble or no_verdict, seconds)
    problem = verdicts[spec.failure]
    if problem is None:
        return result(CheckStatus.PASSED, "", seconds)
    return result(CheckStatus.FAILED, problem, seconds)
