"""``conform ENGINE --runtime dynamo``: the kit's checks, with the engine served by Dynamo's real Worker.

The engine is built as Dynamo builds it (``from_args`` with ``--engine-args``)
in a worker process (:mod:`.worker_entry`), recorded at its boundary by the
deployment recorder; the probes are sent by a real Dynamo client
(:mod:`.probes`).  Each check is judged from what both sides observed: the
engine's stream, its context's signals and the abort calls from the
recording, what the client received from the client, and the abort rules by
``trace``'s engine-side inference (:mod:`model.traces.engine_side`).  The
checks keep their names, titles, kits and prerequisites (``conformance.checks``),
and a stopped or killed stream is classified by the kit's own function
(:mod:`.stops`), so a broken engine fails the same checks with and without
``--runtime``.

What the runtime does not offer is skipped, saying so: the Python client has
no kill (kill probes are a client that leaves, RUNTIME-DISCONNECT-KILLS), and
no stream drop the worker would not hear as a kill; Dynamo's Worker calls
``cleanup`` once, after ``start``; the loopback worker runs without KV
routing; Dynamo aborts a finished request only after an error item.  The
property-based phase sends the default run's schedules, as far as a client can
play them (:mod:`.schedules`).  A decode run starts two
workers (the prefill one first, for a real hand-off, ended before the decode
one starts); every other run starts one.  Each start is bounded by
``start_timeout``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shlex
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.model.stopped import AfterStop
from dynamo_backend_protocol.reference.conformance.checks import CHECKS, SPECS, CheckSpec, Failure, Verdicts
from dynamo_backend_protocol.reference.conformance.construction import (
    declared_mode,
    engine_factory,
    resolve_mode,
    split_engine_args,
)
from dynamo_backend_protocol.reference.conformance.drive import CANCEL_MAX_TOKENS, PLAIN_MAX_TOKENS, RequestShape
from dynamo_backend_protocol.reference.conformance.encode_checks import encode_verdicts
from dynamo_backend_protocol.reference.conformance.handoff import with_prefill_flag
from dynamo_backend_protocol.reference.conformance.kit import DEFAULT_EXAMPLES
from dynamo_backend_protocol.reference.conformance.report import CheckResult, CheckStatus, ConformanceReport, one_line
from dynamo_backend_protocol.reference.conformance.rules import abort_before_first_read_lost, kill_handled_worse
from dynamo_backend_protocol.reference.conformance.session import FUZZ_BUDGET, EngineFactory, make_engine
from dynamo_backend_protocol.reference.conformance.upstream import completion_tokens_problem
from dynamo_backend_protocol.reference.runtime.engine_side import EngineRequest, by_request, describe_ending, refused
from dynamo_backend_protocol.reference.runtime.launcher import RuntimeSession, RuntimeUnavailable, RuntimeWorker
from dynamo_backend_protocol.reference.runtime.probes import ClientRun, Plan, send, send_all
from dynamo_backend_protocol.reference.runtime.schedules import RuntimeSearch, late_stop_verdict, schedule_verdict
from dynamo_backend_protocol.reference.runtime.stops import after_stop

F = Failure
T = TypeVar("T")
CONCURRENT = 8
SETTLE_GRACE = 2.0
"""Seconds, past the cancel deadline, the engine's side of the probes may take to finish after the client's."""
REACH_TIMEOUT = 1.0
"""Seconds a request may take to reach the engine, once sent, before the kit takes it as dropped."""
SHOW_ATTEMPTS = 3
"""Times a stopped or killed probe is sent while the runtime stops reading it before the engine shows its answer."""
SHOW_TIMEOUT = 1.0
"""Seconds the engine's side of a stopped or killed probe may take to show its answer to the stop."""

NOT_OFFERED: dict[Failure, str] = {
    F.SECOND_CLEANUP_FAILED: "Dynamo's Worker calls cleanup once per start",
    F.CLEANUP_WITHOUT_START_FAILED: "Dynamo's Worker never cleans up an engine it did not start",
    F.KV_EVENT_SOURCES_FAILED: "the loopback worker runs without KV routing, so kv_event_sources is not called",
    F.KV_EVENT_SOURCES_NOT_IDEMPOTENT: "the loopback worker runs without KV routing, so kv_event_sources is not "
    "called",
    F.DROPPED_STREAM_NOT_CLOSED: "a client of the runtime cannot drop a stream without the worker hearing a kill "
    "(RUNTIME-DISCONNECT-KILLS)",
    F.ABORT_AFTER_TERMINAL_RAISED: "Dynamo's Worker aborts a finished request only after an error item, which "
    "a conforming engine's requests do not provoke",
}
"""Checks the real runtime does not let the kit make, and why."""
ABORT_RULES = {"ABORT-ONCE": F.ABORT_CALLED_TWICE, "ABORT-NEEDS-CANCEL": F.ABORT_ON_CLEAN_COMPLETION,
               "DECODE-DEFER": F.ABORT_BEFORE_FIRST_TOKEN}
"""The abort rules ``trace`` infers from the engine's side, and the checks that report them."""
PROBE_OF: dict[Failure, str] = {
    **{failure: "plain" for failure in (F.GENERATE_FAILED, F.NO_CHUNKS_YIELDED, F.STREAM_YIELDED_ERROR,
                                        F.CHUNK_AFTER_TERMINAL, F.NO_TERMINAL_CHUNK, F.COMPLETION_TOKENS_MISMATCH,
                                        F.ENCODE_CHUNK_COUNT, F.ENCODE_TERMINAL_EXPECTED, F.ENCODE_TOKENS_NOT_EMPTY,
                                        F.ENCODE_USAGE_MISMATCH, F.ENCODER_RESULT_EXPECTED_OBJECT)},
    F.CONCURRENT_GENERATE_FAILED: "concurrent",
    F.CANCELLATION_NOT_OBSERVED: "cancel",
    F.CANCELLATION_IGNORED: "cancel",
    F.ABORT_FAILED: "stop",
    F.ABORTED_STREAM_NOT_ENDED: "stop",
    F.KILL_NOT_HANDLED_LIKE_STOP: "leave",
    F.CANCELLATION_LEAKED: "leak",
    F.ABORT_BEFORE_FIRST_TOKEN: "early-stop",
    F.MID_STREAM_CANCELLATION_IGNORED: "stop",
    F.ABORT_BEFORE_FIRST_READ_LOST: "cancel",
}
"""The probe whose time a check reports (checks judged from the whole run or the lifecycle report none)."""


@dataclasses.dataclass(frozen=True)
class RuntimeOptions:
    engine: str
    """ENGINE as the user wrote it (module:attribute); the worker process imports it too."""
    engine_args: str | None
    mode: Mode | None
    cancel_deadline: float
    start_timeout: float
    stream_timeout: float
    cleanup_timeout: float
    log_path: Path
    verbose: bool = False
    examples: int = DEFAULT_EXAMPLES
    """Schedules the property-based phase draws (0: the phase is off)."""
    fuzz_budget: float = FUZZ_BUDGET
    """Seconds the property-based phase may spend before it stops drawing."""


@dataclasses.dataclass
class RuntimeRun:
    report: ConformanceReport
    log_path: Path
    engine_lines: list[str]
    """Every line the recorder wrote in the checked worker: an engine-side trace ``trace`` checks."""


async def resolve(factory: EngineFactory, options: RuntimeOptions) -> Mode:
    """Build the engine here once (never started) to catch bad input before any worker starts, and
    to learn the mode it serves.  Raises EngineFactoryError."""
    built = engine_factory(factory, options.engine_args, options.engine)
    engine = await make_engine(built, options.engine)
    return resolve_mode(options.mode, declared_mode(built, engine), options.engine)


async def run_runtime_conformance(factory: EngineFactory, options: RuntimeOptions) -> RuntimeRun:
    """The kit's report on ``factory`` (the loaded ENGINE) served by Dynamo's Worker.  Raises
    EngineFactoryError for an engine that cannot be built, RuntimeUnavailable without Dynamo."""
    started = time.perf_counter()
    mode = await resolve(factory, options)
    judged = _Judged(mode)
    shape = RequestShape(mode)
    lines: list[str] = []
    async with RuntimeSession(options.engine, options.engine_args, options.log_path, options.verbose) as session:
        if mode is Mode.DECODE:
            shape = await _prefill_handoff(session, options)
        starting = time.perf_counter()
        try:
            try:
                worker, client = await session.start(mode, options.start_timeout)
            finally:
                start_seconds = time.perf_counter() - starting
        except RuntimeUnavailable as error:
            worker = session.workers[-1]
            worker.stop()
            judged.start_failed(str(error))
        else:
            shape = dataclasses.replace(shape, model=_served_model(worker) or shape.model)
            runs, took = await _probe(worker, client, session.core, shape, options)
            await worker.settled(_names(runs), options.cancel_deadline + SETTLE_GRACE)
            # Judged as the probes left the engine: the shutdown then cancels whatever still runs.
            served = by_request(worker.request_lines())
            phase = await _property_phase(worker, client, session.core, shape, options)
            worker.stop(options.cleanup_timeout)  # the Worker's shutdown runs the engine's cleanup
            lines = worker.request_lines()
            judged.serving(worker, runs, served, by_request(lines), shape, options)
            judged.took = {failure: took.get(probe, 0.0) for failure, probe in PROBE_OF.items()}
            if options.examples:
                judged.verdicts[F.SCHEDULE_FAILED] = phase.schedule_failed
                judged.took[F.SCHEDULE_FAILED] = phase.schedule_seconds
                judged.took[F.MID_STREAM_CANCELLATION_IGNORED] += phase.late_stop_seconds
            else:
                judged.not_judged(F.SCHEDULE_FAILED, "property-based phase turned off (0 examples)")
            if phase.late_stop_ignored is not None and judged.verdicts.get(F.MID_STREAM_CANCELLATION_IGNORED) is None:
                judged.verdicts[F.MID_STREAM_CANCELLATION_IGNORED] = phase.late_stop_ignored
        # The worker's start: the process, Dynamo's runtime, the engine's build and start(), its registration.
        judged.took[F.START_FAILED] = judged.took[F.EMPTY_MODEL_IN_CONFIG] = start_seconds
        judged.cleanup(worker)
    ordered = [judged.result(spec) for spec in CHECKS]
    requests = f"{shape.describe()}; served by Dynamo's Worker on 127.0.0.1"
    if options.examples:
        requests += (f"; property-based: up to {options.examples} schedules of requests read to the end, stopped "
                     "or left (a client of the runtime cannot drop a stream without a kill)")
    report = ConformanceReport(options.engine.strip(), mode, ordered, time.perf_counter() - started, requests)
    return RuntimeRun(report, options.log_path, lines)


def _served_model(worker: RuntimeWorker) -> str | None:
    for record in worker.lifecycle():
        if record.get("event") == "started":
            model = record.get("model")
            return model if isinstance(model, str) and model.strip() else None
    return None


async def _prefill_handoff(session: RuntimeSession, options: RuntimeOptions) -> RequestShape:
    """A decode request carries the prefill worker's hand-off: with engine arguments naming the mode,
    one prefill request is served by the same engine in prefill mode (the run's first worker start)."""
    argv = list(split_engine_args(options.engine_args))
    prefill_args = with_prefill_flag(argv)
    if prefill_args is None:
        return RequestShape(Mode.DECODE, prefill_source="synthetic (the engine arguments name no mode)")
    try:
        worker, client = await session.start(Mode.PREFILL, options.start_timeout, shlex.join(prefill_args))
    except RuntimeUnavailable:
        session.workers[-1].stop()
        return RequestShape(Mode.DECODE, prefill_source="synthetic (the prefill worker did not start)")
    model = _served_model(worker)
    request = RequestShape(Mode.PREFILL, model or RequestShape(Mode.PREFILL).model).request(PLAIN_MAX_TOKENS)
    run = await send(client, session.core, Plan("conform-prefill-handoff", request), options.stream_timeout)
    worker.stop()
    terminal = run.terminal()
    params = terminal.get("disaggregated_params") if terminal is not None else None
    if not isinstance(params, dict):
        return RequestShape(Mode.DECODE, prefill_source="synthetic (the prefill run gave no hand-off)")
    return RequestShape(Mode.DECODE, prefill_result={"disaggregated_params": params},
                        prefill_source="from a prefill worker of the same engine")


Runs = dict[str, Any]
"""Probe name -> its ClientRun, or a list of them for the concurrent probes."""


async def _cancel_probe(worker: RuntimeWorker, client: Any, core: Any, shape: RequestShape, timeout: float,
                        name: str) -> ClientRun:
    """A request stopped before any item, as the kit stops it before its first read (a stop sent once the
    stream is open could reach a one-chunk engine after it finished).  The runtime may drop a request
    stopped before it was sent without calling the engine; then one stopped right after its stream opened."""
    early = await send(client, core, Plan(name, shape.request(CANCEL_MAX_TOKENS), "stop", -1), timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + REACH_TIMEOUT
    while loop.time() < deadline:
        if early.name in by_request(worker.request_lines()):
            return early
        await asyncio.sleep(0.02)
    return await send(client, core, Plan(f"{name}-open", shape.request(CANCEL_MAX_TOKENS), "stop", 0), timeout)


async def _until_shown(worker: RuntimeWorker, attempt: Callable[[str], Awaitable[ClientRun]],
                       name: str) -> ClientRun:
    """A stopped or killed request, sent again (as ``name-2``, ``name-3``) while the runtime stops reading it
    before the engine shows what it does once stopped: Dynamo stops reading a cancelled stream after the item
    the engine was making when the stop came, so whether a later read shows anything is a race."""
    run = await attempt(name)
    for again in range(2, SHOW_ATTEMPTS + 1):
        if await _shown(worker, run.name):
            break
        run = await attempt(f"{name}-{again}")
    return run


async def _shown(worker: RuntimeWorker, name: str) -> bool:
    """Whether the engine's side of ``name`` shows how the engine answers a stop: its stream ended, or the
    runtime read it again after the stop, or (by SHOW_TIMEOUT) a read under way at the stop is still unanswered."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SHOW_TIMEOUT
    while True:
        engine = by_request(worker.request_lines()).get(name)
        if engine is not None and (engine.ending() is not None or engine.read_after_cancel()):
            return True
        if loop.time() >= deadline or worker.exit_status() is not None:
            return engine is not None and engine.shows_after_cancel()
        await asyncio.sleep(0.02)


async def _probe(worker: RuntimeWorker, client: Any, core: Any, shape: RequestShape,
                 options: RuntimeOptions) -> tuple[Runs, dict[str, float]]:
    """The kit's probes, one after another (each bounded), as a client of the worker sends them; and the
    seconds each took, client side."""
    timeout = options.stream_timeout
    one_chunk = shape.mode in (Mode.PREFILL, Mode.ENCODE)
    live = 0 if one_chunk else 1
    """Items a client waits for before acting on a live stream (a one-chunk stream has none to wait for)."""
    took: dict[str, float] = {}

    async def timed(probe: str, work: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await work
        finally:
            took[probe] = time.perf_counter() - started

    runs: Runs = {
        "plain": await timed("plain", send(client, core, Plan("conform-plain", shape.request(PLAIN_MAX_TOKENS)),
                                           timeout)),
        "concurrent": await timed("concurrent", send_all(client, core, [
            Plan(f"conform-concurrent-{n}", shape.request(PLAIN_MAX_TOKENS)) for n in range(1, CONCURRENT + 1)
        ], timeout)),
        "cancel": await timed("cancel", _until_shown(
            worker, lambda name: _cancel_probe(worker, client, core, shape, timeout, name), "conform-cancel")),
        "stop": await timed("stop", _until_shown(
            worker, lambda name: send(client, core, Plan(name, shape.request(CANCEL_MAX_TOKENS), "stop", live),
                                      timeout), "conform-stop")),
        "leave": await timed("leave", _until_shown(
            worker, lambda name: send(client, core, Plan(name, shape.request(CANCEL_MAX_TOKENS), "leave", live),
                                      timeout), "conform-leave")),
        "leak": await timed("leak", send_all(client, core, [
            Plan("conform-leak-1", shape.request(CANCEL_MAX_TOKENS), "stop", live),
            *(Plan(f"conform-leak-{n}", shape.request(PLAIN_MAX_TOKENS)) for n in range(2, CONCURRENT + 1)),
        ], timeout)),
    }
    if shape.mode is Mode.DECODE:
        runs["early-stop"] = await timed("early-stop", send(
            client, core, Plan("conform-early-stop", shape.request(CANCEL_MAX_TOKENS), "stop", -1), timeout))
    return runs, took


@dataclasses.dataclass(frozen=True)
class _PropertyPhase:
    """The property-based phase's verdicts (None: passed, or not run) and the seconds each search took."""

    schedule_failed: str | None = None
    schedule_seconds: float = 0.0
    late_stop_ignored: str | None = None
    late_stop_seconds: float = 0.0


async def _property_phase(worker: RuntimeWorker, client: Any, core: Any, shape: RequestShape,
                          options: RuntimeOptions) -> _PropertyPhase:
    """The late stops (MidStreamCancellationIgnored's drawn part), then the schedules (ScheduleFailed)."""
    if not options.examples:
        return _PropertyPhase()
    search = RuntimeSearch(worker, client, core, shape, options.examples, options.stream_timeout,
                           options.cancel_deadline, options.fuzz_budget)
    started = time.perf_counter()
    late = await late_stop_verdict(search)
    late_seconds = time.perf_counter() - started
    failed = await schedule_verdict(search)
    return _PropertyPhase(failed, time.perf_counter() - started - late_seconds, late, late_seconds)


def _names(runs: Runs) -> list[str]:
    return [one.name for run in runs.values() for one in (run if isinstance(run, list) else [run])]


class _Judged:
    """The verdicts of one run, then the results in the kit's terms."""

    def __init__(self, mode: Mode) -> None:
        self.mode = mode
        self.verdicts: Verdicts = {}
        self.reasons: dict[Failure, str] = dict(NOT_OFFERED)
        self.results: dict[Failure, CheckResult] = {}
        self.took: dict[Failure, float] = {}
        """Seconds of the probe that judged each check."""

    def not_judged(self, failure: Failure, why: str) -> None:
        self.verdicts.pop(failure, None)
        self.reasons[failure] = why

    def start_failed(self, why: str) -> None:
        self.verdicts[F.START_FAILED] = why

    def serving(self, worker: RuntimeWorker, runs: Runs, engine: dict[str, EngineRequest],
                whole_run: dict[str, EngineRequest], shape: RequestShape, options: RuntimeOptions) -> None:
        """The verdicts on the probes, from the engine's side as they left it (``engine``) and as the run ended,
        the Worker's shutdown included (``whole_run``: for the lifecycle order)."""
        verdicts = self.verdicts
        started = next((r for r in worker.lifecycle() if r.get("event") == "started"), None)
        verdicts[F.START_FAILED] = None
        model = started.get("model") if started is not None else None
        verdicts[F.EMPTY_MODEL_IN_CONFIG] = (
            None if isinstance(model, str) and model.strip()
            else f"start returned a config whose model is {model!r}; set it to the served model's name"
        )
        side = _Sides(runs, engine)
        verdicts.update(_plain(side, shape))
        verdicts[F.CONCURRENT_GENERATE_FAILED] = _concurrent(side)
        if _outcome(side, "cancel", self.mode) is AfterStop.STRANDED:
            for failure in (F.CANCELLATION_NOT_OBSERVED, F.CANCELLATION_IGNORED):
                self.not_judged(failure, SILENT_AFTER_ABORT)
        else:
            verdicts.update(_cancellation(side, options.cancel_deadline))
            if F.CANCELLATION_NOT_OBSERVED not in verdicts:
                for failure in (F.CANCELLATION_NOT_OBSERVED, F.CANCELLATION_IGNORED):
                    self.not_judged(failure, UNREAD.format("stop"))
            elif F.CANCELLATION_IGNORED not in verdicts:
                self.not_judged(F.CANCELLATION_IGNORED, "the stream ended before the engine could act on the "
                                                        "client's stop (it was making its last item)")
        verdicts[F.ABORT_FAILED] = _abort_failed(engine)
        verdicts[F.MALFORMED_CHUNK] = _malformed(engine)
        judged, unjudged = _stops(side, self.mode)
        verdicts.update(judged)
        for failure, why in unjudged.items():
            self.not_judged(failure, why)
        verdicts.update(_abort_rules(worker.request_lines()))
        verdicts[F.CANCELLATION_LEAKED] = _leak(side)
        verdicts[F.LIFECYCLE_ORDER_VIOLATED] = _lifecycle_order(worker, whole_run)

    def cleanup(self, worker: RuntimeWorker) -> None:
        events = [r.get("event") for r in worker.lifecycle()]
        if "start" not in events:
            self.reasons[F.CLEANUP_FAILED] = "start() was never called, so the Worker does not clean up"
            return
        raised = next((r for r in worker.lifecycle() if r.get("event") == "cleanup_raised"), None)
        if raised is not None:
            self.verdicts[F.CLEANUP_FAILED] = f"raised {raised.get('error')} when the Worker shut down"
        elif "cleaned_up" in events:
            self.verdicts[F.CLEANUP_FAILED] = None
        elif "cleanup" in events:
            self.verdicts[F.CLEANUP_FAILED] = "cleanup did not return before the worker had to be killed"
        else:
            self.verdicts[F.CLEANUP_FAILED] = "the Worker's shutdown never reached cleanup()"

    def result(self, spec: CheckSpec) -> CheckResult:
        def made(status: CheckStatus, reason: str = "", blocked: tuple[Failure, ...] = ()) -> CheckResult:
            seconds = self.took.get(spec.failure, 0.0) if status is not CheckStatus.SKIPPED else 0.0
            found = CheckResult(spec.failure, spec.title, status, one_line(reason), seconds, blocked, spec.upstream)
            self.results[spec.failure] = found
            return found

        if spec.only_in is not None and self.mode is not spec.only_in:
            return made(CheckStatus.SKIPPED, f"skipped: applies to {spec.only_in.value} mode only "
                                             f"(checking {self.mode.value})")
        if spec.not_in is not None and self.mode is spec.not_in:
            return made(CheckStatus.SKIPPED, f"skipped: does not apply to {spec.not_in.value} mode")
        if spec.failure in NOT_OFFERED:
            return made(CheckStatus.SKIPPED, f"skipped under --runtime dynamo: {NOT_OFFERED[spec.failure]}; "
                                             "run without --runtime to check it")
        blockers = self._blockers(spec)
        if blockers:
            names = ", ".join(blockers)
            return made(CheckStatus.SKIPPED, f"skipped: {names} failed; fix {'it' if len(blockers) == 1 else 'those'}"
                                             " first", blockers)
        if spec.failure not in self.verdicts:
            return made(CheckStatus.SKIPPED, f"skipped: {self.reasons.get(spec.failure, 'not judged in this run')}")
        problem = self.verdicts[spec.failure]
        return made(CheckStatus.PASSED) if problem is None else made(CheckStatus.FAILED, problem)

    def _blockers(self, spec: CheckSpec) -> tuple[Failure, ...]:
        blocking: list[Failure] = []
        for needed in spec.requires:
            result = self.results.get(needed) or self.result(SPECS[needed])
            if result.failed:
                blocking += [needed] if needed not in blocking else []
            elif result.skipped:
                blocking += [root for root in result.blocked_by if root not in blocking]
        return tuple(blocking)


class _Sides:
    """Each probe request's two sides: what its client saw and what its engine's side recorded."""

    def __init__(self, runs: Runs, engine: dict[str, EngineRequest]) -> None:
        self.runs = runs
        self._engine = engine

    def client(self, probe: str) -> ClientRun:
        run = self.runs[probe]
        assert isinstance(run, ClientRun)
        return run

    def engine(self, probe_or_name: str) -> EngineRequest:
        name = self.client(probe_or_name).name if probe_or_name in self.runs else probe_or_name
        return self._engine.get(name) or EngineRequest(name)


def _plain(side: _Sides, shape: RequestShape) -> Verdicts:
    client, engine = side.client("plain"), side.engine("plain")
    failed = engine.first("engine.setup_failed")
    if failed is not None or client.end == "setup_error":
        why = failed.get("error") if failed is not None else client.error
        return {F.GENERATE_FAILED: f"generate raised {why} before any stream existed"}
    if not engine.lines:
        return {F.GENERATE_FAILED: f"the request never reached the engine (client: {client.error or client.end})"}
    verdicts: Verdicts = {F.GENERATE_FAILED: None}
    items = engine.items()
    raised = engine.first("engine.raise")
    if not items and raised is None:
        verdicts[F.NO_CHUNKS_YIELDED] = (f"the stream {describe_ending(engine.ending())} without an item; "
                                         "yield token chunks, then a terminal chunk")
        return verdicts
    verdicts[F.NO_CHUNKS_YIELDED] = None
    verdicts[F.STREAM_YIELDED_ERROR] = (
        None if raised is None else f"the stream raised {raised.get('error')} (after {len(items)} item(s))"
    )
    terminal = engine.terminal_position()
    if shape.mode is Mode.ENCODE:
        handoff = client.terminal()
        verdicts.update(encode_verdicts(items if handoff is None else items[: (terminal or 0) + 1], handoff,
                                        len(shape.request(PLAIN_MAX_TOKENS)["token_ids"])))
    if terminal is None:
        verdicts[F.NO_TERMINAL_CHUNK] = (
            f"the stream {describe_ending(engine.ending())} after {len(items)} item(s), none with a finish_reason; "
            "end it with a terminal chunk (e.g. finish_reason 'length')"
        )
        verdicts[F.CHUNK_AFTER_TERMINAL] = None
        return verdicts
    verdicts[F.NO_TERMINAL_CHUNK] = None
    after = items[terminal + 1 :]
    verdicts[F.CHUNK_AFTER_TERMINAL] = (
        None if not after else f"item #{after[0]['n']} ({after[0]['item']}) came after the terminal (item "
        f"#{items[terminal]['n']}, {items[terminal]['item']}); end the stream right after it"
    )
    if shape.mode is not Mode.ENCODE and client.terminal() is not None:
        verdicts[F.COMPLETION_TOKENS_MISMATCH] = completion_tokens_problem(list(client.items))
    elif shape.mode is not Mode.ENCODE:
        verdicts[F.COMPLETION_TOKENS_MISMATCH] = None
    return verdicts


def _concurrent(side: _Sides) -> str | None:
    runs: list[ClientRun] = side.runs["concurrent"]
    problems = [f"{run.name}: {run.error or 'the stream ended without a terminal chunk'}" for run in runs
                if run.end != "terminal"]
    if not problems:
        return None
    return (f"{len(problems)} of {CONCURRENT} concurrent requests failed (one alone succeeds); first: {problems[0]}")


def _cancellation(side: _Sides, deadline: float) -> Verdicts:
    engine = side.engine("cancel")
    stop, ending = engine.cancel(), engine.ending()
    went_on = engine.token_after_cancel()
    if went_on is not None:
        return {F.CANCELLATION_NOT_OBSERVED: _went_on("stop", went_on)}
    if ending is None:
        if _left_unread(engine):
            return {}
        since = "" if stop is None else " of the stop"
        return {F.CANCELLATION_NOT_OBSERVED: f"the stream did not end within {deadline:g} s{since}; check "
                                             "context.is_stopped() in the generation loop and end with a "
                                             "'cancelled' terminal"}
    if stop is not None and ending["t"] - stop["t"] > deadline:
        return {F.CANCELLATION_NOT_OBSERVED: f"the stream ended {ending['t'] - stop['t']:.2f} s after the stop "
                                             f"showed, more than {deadline:g} s; check context.is_stopped() in "
                                             "the generation loop"}
    verdicts: Verdicts = {F.CANCELLATION_NOT_OBSERVED: None}
    if _cancel_raced(engine):
        return verdicts  # nothing to judge about how it honours a stop
    if not engine.ended_cancelled():
        verdicts[F.CANCELLATION_IGNORED] = (f"after the client's stop the stream {describe_ending(ending)} instead "
                                            "of ending with a 'cancelled' terminal")
    else:
        verdicts[F.CANCELLATION_IGNORED] = None
    return verdicts


def _cancel_raced(engine: EngineRequest) -> bool:
    """Whether the stream ended before its stop or kill could be acted on: it never showed while the stream
    went on, or showed only while the engine was already producing its last item (a signal seen right after
    an item may have come in while it was being made: a one-chunk prefill or encode stream meets this)."""
    return engine.cancel() is None or (not engine.ended_cancelled() and engine.items_after_cancel() == 1
                                       and engine.first("engine.raise") is None)


def _left_unread(engine: EngineRequest) -> bool:
    """Whether the runtime stopped reading a cancelled stream before it ended: its last read was answered
    (the recorder notes each read after a stop or kill), so how the engine would have ended is not shown."""
    return engine.ending() is None and engine.cancel() is not None and engine.lines[-1]["obs"] != "engine.read"


def _went_on(signal: str, item: dict[str, Any]) -> str:
    return (f"after the {signal} showed, the engine answered the runtime's next read with item #{item['n']} "
            f"({item['item']}) instead of a 'cancelled' terminal (Dynamo then stops reading a cancelled stream); "
            "check context.is_stopped() before every token")


def _stops(side: _Sides, mode: Mode) -> tuple[Verdicts, dict[Failure, str]]:
    """The checks of a stopped or killed stream, decided as the default run decides them, on the kit's own
    classification of each stream (:func:`.stops.after_stop`): MidStreamCancellationIgnored for a stream that
    kept going or finished as if not stopped, AbortedStreamNotEnded only for one left silent after abort(),
    KillNotHandledLikeStop only for a kill handled worse than the stop at the same point, and
    AbortBeforeFirstReadLost only for a stop aborted before the first read that was not honoured where the stop
    after the stream was live was.  Returns the verdicts, and why each check left out was not judged."""
    verdicts: Verdicts = {}
    unjudged: dict[Failure, str] = {}
    stopped = _outcome(side, "stop", mode)
    if stopped is None:
        for failure in (F.MID_STREAM_CANCELLATION_IGNORED, F.ABORTED_STREAM_NOT_ENDED):
            unjudged[failure] = UNREAD.format("stop")
    else:
        said = _said(side, "stop", "context.stop_generating()", stopped)
        verdicts[F.MID_STREAM_CANCELLATION_IGNORED] = None if not stopped.ignored else (
            f"{said}: the stop was ignored; check context.is_stopped() before every token, or make abort() end the "
            "request, and end with a 'cancelled' terminal")
        verdicts[F.ABORTED_STREAM_NOT_ENDED] = None if stopped is not AfterStop.STRANDED else (
            f"{said}: after abort() the stream was left waiting for ever (Dynamo's runtime reads on with no "
            "timeout); wake whatever the stream waits on and end it with a 'cancelled' terminal")
    killed = _outcome(side, "leave", mode)
    why = _not_comparable(killed, stopped, "kill", "a stop at the same point")
    if why is not None:
        unjudged[F.KILL_NOT_HANDLED_LIKE_STOP] = why
    elif killed is not None:  # always, when comparable
        verdicts[F.KILL_NOT_HANDLED_LIKE_STOP] = None if stopped is None or not kill_handled_worse(killed, stopped) \
            else (f"{_said(side, 'leave', 'a kill (its client left)', killed)}, whereas after a stop at the same "
                  "point it ended 'cancelled'; a kill is also a stop (context.is_stopped() is true): handle it "
                  "like one")
    early_engine = side.engine("cancel")
    if not _aborted_before_first_item(early_engine):
        unjudged[F.ABORT_BEFORE_FIRST_READ_LOST] = (
            "Dynamo's runtime called abort() for the request stopped before it was sent only after the engine's "
            "first item in this run, so no abort came before the first read"
            + (" (in decode it defers the abort to the first token)" if mode is Mode.DECODE else ""))
        return verdicts, unjudged
    early = _outcome(side, "cancel", mode)
    why = _not_comparable(early, stopped, "stop", "a stop on a live stream")
    if why is not None:
        unjudged[F.ABORT_BEFORE_FIRST_READ_LOST] = why
    elif early is not None:  # always, when comparable
        lost = stopped is not None and abort_before_first_read_lost(early, stopped)
        verdicts[F.ABORT_BEFORE_FIRST_READ_LOST] = None if not lost else (
            f"{_said(side, 'cancel', 'a stop sent with the request, aborted before its first item', early)}, "
            "whereas a stop on the live stream ended it; an abort() may come before the generator body runs: "
            "remember it (note the request in generate() itself, or check context.is_stopped() before "
            "submitting the request)")
    return verdicts, unjudged


SILENT_AFTER_ABORT = ("the stopped stream went silent once the runtime called abort(), and upstream's kit never "
                      "calls abort(), so whether the engine ends a stopped stream by itself is not shown (a stream "
                      "left silent after abort() is AbortedStreamNotEnded's to name)")
UNREAD = "the runtime stopped reading the stream after the {} before it ended, so how it ends is not shown"


def _not_comparable(outcome: AfterStop | None, stopped: AfterStop | None, signal: str, live_stop: str) -> str | None:
    """Why a probe judged against the live stop's outcome cannot be: its own end is not shown, or it was not
    honoured and the live stop's end is not shown either (None: it can be judged)."""
    if outcome is None:
        return UNREAD.format(signal)
    if stopped is None and not outcome.honoured:
        return f"how {live_stop} ends is not shown ({UNREAD.format('stop')})"
    return None


def _outcome(side: _Sides, probe: str, mode: Mode) -> AfterStop | None:
    return after_stop(side.engine(probe), side.client(probe), mode, CANCEL_MAX_TOKENS)


def _said(side: _Sides, probe: str, signal: str, outcome: AfterStop) -> str:
    """What the engine did once stopped: its answers to the runtime's reads, and how its stream ended."""
    engine = side.engine(probe)
    return (f"request {engine.name!r}: after {signal} the engine answered {engine.answers_after_cancel()} more "
            f"read(s) of the runtime and its stream {describe_ending(engine.ending())} (it {outcome.value})")


def _aborted_before_first_item(engine: EngineRequest) -> bool:
    for line in engine.lines:
        if line["obs"] == "engine.abort":
            return True
        if line["obs"] == "engine.item":
            return False
    return False


def _abort_failed(engine: dict[str, EngineRequest]) -> str | None:
    for request in engine.values():
        raised = request.first("engine.abort_raised")
        if raised is not None:
            return (f"abort({request.name}) raised {raised.get('error')} (Dynamo's adapter swallows it); "
                    "release the request's resources without raising")
    return None


def _malformed(engine: dict[str, EngineRequest]) -> str | None:
    return next((why for request in engine.values() if (why := request.malformed()) is not None), None)


def _abort_rules(lines: list[str]) -> Verdicts:
    """ABORT-ONCE, ABORT-NEEDS-CANCEL and DECODE-DEFER, as ``trace`` infers them from the engine's side."""
    found: dict[Failure, str] = {}
    for summary, divergence in refused(lines):
        failure = ABORT_RULES.get(divergence.rule or "")
        if failure is not None and failure not in found:
            found[failure] = (f"{summary.request}: line {divergence.line}: {divergence.reason} "
                              f"(rule {divergence.rule})")
    return {failure: found.get(failure) for failure in ABORT_RULES.values()}


def _leak(side: _Sides) -> str | None:
    """As the default run judges it: a neighbour leaked into is one aborted or ended 'cancelled'; one failing on
    its own (an error, no terminal) is another check's business, and one whose context showed a stop was stopped
    by the engine itself (AbortOnCleanCompletion's to name)."""
    runs: list[ClientRun] = side.runs["leak"]
    for run in runs[1:]:
        engine = side.engine(run.name)
        if any(line["obs"] in ("context.stop", "context.kill") for line in engine.lines):
            continue
        aborts = engine.count("engine.abort")
        if engine.ended_cancelled() or aborts:
            what = f"was aborted {aborts} time(s) and " if aborts else ""
            return (f"{run.name}, never stopped, {what}{describe_ending(engine.ending())} while "
                    f"{runs[0].name} was stopped; keep the stop with its own request (check its "
                    "context.is_stopped(), not an engine-wide flag)")
    return None


CALLS = ("engine.generate", "engine.abort")
"""The lines that are calls into the engine (the kit's lifecycle order judges calls, not the runtime
finishing off a stream it already has: the Worker's shutdown cancels those)."""


def _lifecycle_order(worker: RuntimeWorker, engine: dict[str, EngineRequest]) -> str | None:
    life = worker.lifecycle()
    started = next((r["t"] for r in life if r.get("event") == "started"), None)
    cleanup = next((r["t"] for r in life if r.get("event") == "cleanup"), None)
    calls = [line for request in engine.values() for line in request.lines if line["obs"] in CALLS]
    first = min((line["t"] for line in calls), default=None)
    last = max((line["t"] for line in calls), default=None)
    if first is not None and (started is None or first < started):
        return "a request reached generate before start() returned"
    if cleanup is not None and last is not None and last > cleanup:
        return "the engine was still called (generate or abort) after cleanup() began"
    return None
