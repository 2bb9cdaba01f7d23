"""The conformance kit: ``await run_conformance(MyEngine)`` judges an engine against the protocol.

A run builds at most three engines and starts at most two, since a real
engine loads its weights in ``start()``: one never started (for the check of
cleanup on a never-started engine), one started engine that every other
check shares with its own requests and contexts (cleaned up twice at the
end, its whole life judged by the lifecycle machine), and in decode mode the
prefill engine whose hand-off the decode requests carry.

Two kits run in the one pass (see :class:`.checks.Kit`): upstream's checks on
the raw engine, and the runtime kit's through the reference adapter.  Nothing
is masked: a check is skipped only when what it needs is truly gone (the
engine did not start, or it stopped serving, or a check of its own kit that
it builds on failed), when it does not apply to the mode, or when the engine
lacks the hook it exercises; each skip says which.  Every other check ends
passed or failed with a one-line reason.
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
    RequestNotSetUp,
    judge_lifecycle,
    probe_abort_before_first_read,
    probe_abort_once,
    probe_aborted_stream,
    probe_clean_completion,
    probe_decode_abort,
    probe_drop,
    probe_kill,
    probe_well_formed,
)
from dynamo_backend_protocol.reference.conformance.cancel_checks import probe_abort, probe_isolation
from dynamo_backend_protocol.reference.conformance.checks import (
    ENCODE_SUITE,
    SPECS,
    CheckSpec,
    Failure,
    Kit,
    Verdicts,
)
from dynamo_backend_protocol.reference.conformance.construction import declared_mode, engine_factory, resolve_mode
from dynamo_backend_protocol.reference.conformance.engine_calls import EngineRaised
from dynamo_backend_protocol.reference.conformance.fuzz import probe_late_stops, probe_schedules
from dynamo_backend_protocol.reference.conformance.handoff import prepare_requests, served_model
from dynamo_backend_protocol.reference.conformance.health import engine_still_serves
from dynamo_backend_protocol.reference.conformance.kv_events import OPTIONAL_HOOKS, probe_kv_event_sources
from dynamo_backend_protocol.reference.conformance.late_abort import probe_abort_after_terminal
from dynamo_backend_protocol.reference.conformance.recording import RecordingEngine
from dynamo_backend_protocol.reference.conformance.report import CheckResult, CheckStatus, ConformanceReport, one_line
from dynamo_backend_protocol.reference.conformance.run_loop import run_abandoning
from dynamo_backend_protocol.reference.conformance.session import (
    EngineFactory,
    EngineFactoryError,
    EngineSession,
    KitEvents,
    KitSettings,
    cancel_tasks,
    check_factory,
    describe_error,
    describe_factory,
    engine_attribute,
    make_engine,
    tasks_started_since,
)
from dynamo_backend_protocol.reference.conformance.upstream import (
    judge_cleanup,
    judge_cleanup_without_start,
    judge_start,
    probe_cancellation,
    probe_concurrent,
    probe_plain_stream,
)
from dynamo_backend_protocol.reference.conformance.watchdog import MAX_SECONDS, within

DEFAULT_EXAMPLES = 30
"""Schedules the property-based phase draws by default: enough to find order-dependent bugs, quick on a fast engine."""
DEFAULT_START_TIMEOUT = 900.0
DEFAULT_CLEANUP_TIMEOUT = 60.0
DEFAULT_STREAM_TIMEOUT = 60.0
DEFAULT_CANCEL_DEADLINE = 2.0

F = Failure


@dataclass(frozen=True)
class Probe:
    checks: tuple[Failure, ...]
    run: Callable[[KitSettings], Awaitable[Verdicts]]
    phase: str = ""
    """The phase's name on the live line; by default the kit of its checks."""

    def describe(self) -> str:
        """The live line's text while it runs: its phase, then the checks it judges."""
        phase = self.phase or ("upstream's kit" if SPECS[self.checks[0]].kit is Kit.UPSTREAM else "runtime kit")
        names = ", ".join(str(check) for check in self.checks[:2]) + (", ..." if len(self.checks) > 2 else "")
        return f"{phase}: {names}"


LATE_STOPS_PHASE = "late stops"
SCHEDULES_PHASE = "random schedules"
"""The two property-based phases, each with its own count of examples."""


SERVING_PROBES: tuple[Probe, ...] = (
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
    Probe((F.ABORT_FAILED,), probe_abort),
    Probe((F.ABORT_AFTER_TERMINAL_RAISED,), probe_abort_after_terminal),
    Probe((F.MALFORMED_CHUNK,), probe_well_formed),
    Probe((F.ABORTED_STREAM_NOT_ENDED,), probe_aborted_stream),
    Probe((F.KILL_NOT_HANDLED_LIKE_STOP,), probe_kill),
    Probe((F.ABORT_CALLED_TWICE,), probe_abort_once),
    Probe((F.ABORT_ON_CLEAN_COMPLETION,), probe_clean_completion),
    Probe((F.ABORT_BEFORE_FIRST_TOKEN,), probe_decode_abort),
    Probe((F.ABORT_BEFORE_FIRST_READ_LOST,), probe_abort_before_first_read),
    Probe((F.DROPPED_STREAM_NOT_CLOSED,), probe_drop),
    Probe((F.CANCELLATION_LEAKED,), probe_isolation),
    Probe((F.MID_STREAM_CANCELLATION_IGNORED,), probe_late_stops, LATE_STOPS_PHASE),
    Probe((F.SCHEDULE_FAILED,), probe_schedules, SCHEDULES_PHASE),
)
"""The checks that need the started engine, in the order they run on it."""
PROPERTY_PHASE = (F.SCHEDULE_FAILED,)
"""Checks that are all property-based: off with 0 examples (MidStreamCancellationIgnored keeps its fixed stop)."""
SERVES_AGAIN = (F.NO_TERMINAL_CHUNK, F.STREAM_YIELDED_ERROR)
"""Once one plain stream works, a failing check is followed by one more plain request: an engine that no
longer serves is not judged further (its later checks would all fail for that one reason)."""
ENDS_A_START_THAT_HUNG = (F.CLEANUP_FAILED, F.SECOND_CLEANUP_FAILED, F.LIFECYCLE_ORDER_VIOLATED)
"""What cannot be judged after a start the kit had to cancel: the engine is in no state a Worker would leave it."""


async def run_conformance(
    factory: EngineFactory,
    *,
    mode: Mode | str | None = None,
    engine_args: str | Sequence[str] | None = None,
    cancel_deadline: float = DEFAULT_CANCEL_DEADLINE,
    examples: int = DEFAULT_EXAMPLES,
    start_timeout: float = DEFAULT_START_TIMEOUT,
    cleanup_timeout: float = DEFAULT_CLEANUP_TIMEOUT,
    stream_timeout: float = DEFAULT_STREAM_TIMEOUT,
    trace_sink: TraceSink | None = None,
    label: str | None = None,
    events: KitEvents | None = None,
) -> ConformanceReport:
    """Run every conformance check on engines made by ``factory``.

    ``factory`` is an engine class or a zero-argument callable; a class with
    Dynamo's async classmethod ``from_args(argv)`` is built through it, with
    ``engine_args`` (a shell-quoted string or a list) as ``argv``.  ``mode`` is
    the disaggregation mode to check in; by default the one the engine's
    worker config or the engine itself declares (``disaggregation_mode``),
    else agg.  ``cancel_deadline`` is how long a cancelled stream may take to
    end; ``examples`` bounds the property-based phase (0 skips it);
    ``start_timeout``, ``cleanup_timeout`` and ``stream_timeout`` bound each
    ``start()``, each ``cleanup()`` and each stream, in seconds;
    ``trace_sink`` receives every adapter-driven request's trace; ``label``
    names the engine in the report; ``events`` hears of each check as it
    finishes.  Raises :class:`EngineFactoryError` if no engine can be made
    (or ``mode`` disagrees with the declared one), and ``ValueError`` for a
    bad setting.
    """
    asked = Mode.parse(mode) if isinstance(mode, str) else mode
    for name, seconds in (("cancel_deadline", cancel_deadline), ("start_timeout", start_timeout),
                          ("cleanup_timeout", cleanup_timeout), ("stream_timeout", stream_timeout)):
        if not 0 < seconds <= MAX_SECONDS:
            raise ValueError(f"{name} must be a positive number of seconds, at most {MAX_SECONDS:g}, got {seconds!r}")
    if examples < 0:
        raise ValueError(f"examples must be 0 or more, got {examples!r}")
    label = label or describe_factory(factory)
    check_factory(factory, label)
    factory = engine_factory(factory, engine_args, label)
    started = time.perf_counter()
    baseline = set(asyncio.all_tasks())
    _phase(events, "building the engine")
    # Fails early, and once, if the factory cannot make an engine; says which mode the engine serves.
    never_started = await make_engine(factory, label)
    checked_mode = resolve_mode(asked, declared_mode(factory, never_started), label)
    hooks = frozenset(name for name in OPTIONAL_HOOKS if callable(engine_attribute(never_started, name, label)))
    settings = KitSettings(factory, label, checked_mode, cancel_deadline, examples, stream_timeout=stream_timeout,
                           start_timeout=start_timeout, cleanup_timeout=cleanup_timeout, trace_sink=trace_sink,
                           engine_hooks=hooks, events=events)
    run = _Run(settings)
    try:
        await run.judge((F.CLEANUP_WITHOUT_START_FAILED,), lambda s: judge_cleanup_without_start(
            RecordingEngine(never_started), s))
        _phase(events, "building the engine to start")
        engine = await make_engine(factory, label)
        run.settings = dataclasses.replace(settings, shared=EngineSession(engine, RecordingEngine(engine)))
        await run.serve_and_shut_down()
    finally:
        await cancel_tasks(tasks_started_since(baseline))
    ordered = [run.results[spec_failure] for spec_failure in SPECS]
    requests = run.settings.requests.describe()
    return ConformanceReport(label, checked_mode, ordered, time.perf_counter() - started, requests)


def _phase(events: KitEvents | None, what: str) -> None:
    if events is not None:
        events.phase(what)


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
    # Not asyncio.run: an engine that blocks the loop or swallows the end's cancellation would hold the caller
    # for ever; run_abandoning bounds both, as it does for the CLI.
    outcome = run_abandoning(run_conformance(factory, **options),  # type: ignore[arg-type]
                             error_prefix="assert_conforms: ")
    if outcome.interrupted:
        raise KeyboardInterrupt
    outcome.result().raise_for_failures()


class _Run:
    """One run's verdicts so far, and the shared engine's state (started, hung, still serving)."""

    def __init__(self, settings: KitSettings) -> None:
        self.settings = settings
        self.results: dict[Failure, CheckResult] = {}
        self.out_of_service: str | None = None
        """Why the shared engine can no longer be judged (set once a check leaves it unable to serve)."""
        self.serves_nothing: str | None = None
        """Why the runtime kit's request checks cannot run: the engine serves no plain request at all."""
        self._serving_asked = False

    async def serve_and_shut_down(self) -> None:
        session = self.settings.session()
        _phase(self.settings.events, "upstream's kit: StartFailed, EmptyModelInConfig")
        await self.judge((F.START_FAILED, F.EMPTY_MODEL_IN_CONFIG), lambda s: judge_start(session, s))
        start_hung = session.start_timed_out
        if self.results[F.START_FAILED].passed:
            model = served_model(session.config)
            if self.settings.mode is Mode.DECODE:
                _phase(self.settings.events, "running one prefill request for the decode hand-off")
            shape = await prepare_requests(self.settings, model)
            self.settings = dataclasses.replace(self.settings, requests=shape)
        # After a failed start these are all skipped, naming StartFailed.
        for probe in SERVING_PROBES:
            _phase(self.settings.events, probe.describe())
            await self.judge(probe.checks, probe.run)
            await self._check_still_serving(probe)
        # Shutting down needs no serving engine: cleanup and the life's order are judged whatever broke.
        self.out_of_service = None
        _phase(self.settings.events, "cleaning up")
        if start_hung:
            self._skip_all(ENDS_A_START_THAT_HUNG, self.results[F.START_FAILED])
            return
        start_error = self.results[F.START_FAILED].reason or None
        await self.judge((F.CLEANUP_FAILED, F.SECOND_CLEANUP_FAILED), lambda s: judge_cleanup(s, start_error))
        await self.judge((F.LIFECYCLE_ORDER_VIOLATED,), _lifecycle)

    async def judge(self, checks: tuple[Failure, ...], run: Callable[[KitSettings], Awaitable[Verdicts]]) -> Verdicts:
        """Run one probe (unless nothing of it can run) and record, and announce, a result per check."""
        settings = self.settings
        specs = [SPECS[failure] for failure in checks]
        # Prerequisites this probe judges itself have no result yet, so only earlier probes can block here.
        runnable = [spec for spec in specs if _not_applicable(spec, settings) is None
                    and not _blockers(spec, self.results)]
        verdicts: Verdicts = {}
        trouble = ""
        if any(_needs_serving(spec) for spec in runnable):
            await self._ask_whether_it_serves()
            runnable = [spec for spec in runnable if self._unavailable(spec) is None]
        started = time.perf_counter()
        if runnable and self.out_of_service is None:
            try:
                # within(), not asyncio.timeout: a check stuck in an engine that swallows its cancellation is
                # abandoned at the bound, and anything the engine raises that is not an Exception is typed.
                verdicts = await within(run(settings), settings.fuzz_budget + 10 * settings.stream_timeout
                                        + settings.start_timeout + 2 * settings.cleanup_timeout, "the check")
            except TimeoutError:
                trouble = "the check did not finish in time (the engine stopped responding)"
            except EngineFactoryError as error:
                trouble = f"could not make an engine: {error}"
            except RequestNotSetUp as error:
                trouble = str(error)
            except EngineRaised as error:
                trouble = f"the engine raised {error}"
            except Exception as error:
                trouble = f"the kit could not complete this check: {describe_error(error)}"
        seconds = time.perf_counter() - started
        for spec in specs:
            result = _result(spec, settings, self.results, verdicts, trouble, seconds, self._unavailable(spec))
            self.results[spec.failure] = result
            if settings.events is not None:
                settings.events.check_finished(result)
        return verdicts

    def _unavailable(self, spec: CheckSpec) -> str | None:
        if self.out_of_service is not None:
            return self.out_of_service
        return self.serves_nothing if _needs_serving(spec) else None

    async def _ask_whether_it_serves(self) -> None:
        """Once, before the runtime kit's first request check: if upstream's plain stream did not work, whether
        the engine serves a plain request at all (if not, nothing can be asked of it through the adapter)."""
        if self._serving_asked:
            return
        self._serving_asked = True
        if all(failure in self.results and self.results[failure].passed for failure in SERVES_AGAIN):
            return
        problem = await engine_still_serves(self.settings)
        if problem is not None:
            self.serves_nothing = (f"skipped: the engine serves no request ({problem}), so nothing can be asked of "
                                   "it through the adapter; see the upstream checks that failed")

    async def _check_still_serving(self, probe: Probe) -> None:
        judged = [self.results[failure] for failure in probe.checks]
        if not any(result.failed for result in judged):
            return
        if not all(failure in self.results and self.results[failure].passed for failure in SERVES_AGAIN):
            return
        problem = await engine_still_serves(self.settings)
        if problem is not None:
            names = ", ".join(str(result.failure) for result in judged if result.failed)
            self.out_of_service = f"skipped: the engine stopped serving after the {names} check ({problem})"

    def _skip_all(self, checks: tuple[Failure, ...], cause: CheckResult) -> None:
        for failure in checks:
            spec = SPECS[failure]
            result = CheckResult(failure, spec.title, CheckStatus.SKIPPED,
                                 one_line(f"skipped: {cause.failure} failed ({cause.reason}); fix it first"),
                                 0.0, (cause.failure,), spec.upstream)
            self.results[failure] = result
            if self.settings.events is not None:
                self.settings.events.check_finished(result)


async def _lifecycle(settings: KitSettings) -> Verdicts:
    return judge_lifecycle(settings.session().recording())


def _needs_serving(spec: CheckSpec) -> bool:
    """The runtime kit's checks that send requests (all but the lifecycle's order, judged on every call)."""
    return spec.kit is Kit.RUNTIME and bool(spec.requires)


def _not_applicable(spec: CheckSpec, settings: KitSettings) -> str | None:
    if spec.only_in is not None and settings.mode is not spec.only_in:
        return f"applies to {spec.only_in.value} mode only (checking {settings.mode.value})"
    if spec.not_in is not None and settings.mode is spec.not_in:
        return f"does not apply to {spec.not_in.value} mode"
    if spec.needs_hook is not None and spec.needs_hook not in settings.engine_hooks:
        return f"the engine offers no {spec.needs_hook}()"
    if spec.failure in PROPERTY_PHASE and settings.examples == 0:
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
    if F.START_FAILED in blockers:
        return "skipped: the engine did not start (StartFailed); nothing can be asked of it"
    names = ", ".join(str(b) for b in blockers)
    return f"skipped: {names} failed; fix {'it' if len(blockers) == 1 else 'those'} first"


def _result(
    spec: CheckSpec,
    settings: KitSettings,
    results: dict[Failure, CheckResult],
    verdicts: Verdicts,
    trouble: str,
    seconds: float,
    out_of_service: str | None,
) -> CheckResult:
    def result(
        status: CheckStatus, reason: str = "", took: float = 0.0, blocked_by: tuple[Failure, ...] = ()
    ) -> CheckResult:
        return CheckResult(spec.failure, spec.title, status, one_line(reason), took, blocked_by, spec.upstream)

    not_applicable = _not_applicable(spec, settings)
    if not_applicable is not None:
        return result(CheckStatus.SKIPPED, f"skipped: {not_applicable}")
    if out_of_service is not None:
        # The root cause of whatever else would block it: the engine no longer serves.
        return result(CheckStatus.SKIPPED, out_of_service)
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
