"""Making, starting and tearing down the engines the kit checks, with every wait bounded.

A real engine loads its weights in ``start()``, so a run builds few engines:
one that is never started (for the checks about a never-started engine), one
started engine that every other check shares, each with its own requests and
contexts, and in decode mode a prefill engine for the hand-off.  Whatever
tasks an engine left running are cancelled once it is cleaned up.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from dynamo_backend_protocol.model import DynamoError, Mode
from dynamo_backend_protocol.model.exceptions import ProtocolError, RuleRefusal
from dynamo_backend_protocol.reference.adapter import EngineAdapter, TraceSink
from dynamo_backend_protocol.reference.conformance.drive import RequestShape
from dynamo_backend_protocol.reference.conformance.engine_calls import (
    AttributeRaised,
    EngineRaised,
    guarded,
    read_attribute,
    safe_repr,
    safe_text,
)
from dynamo_backend_protocol.reference.conformance.recording import RecordingEngine
from dynamo_backend_protocol.reference.conformance.watchdog import abandon, within
from dynamo_backend_protocol.reference.engine import is_engine, missing_engine_methods, start_engine

if TYPE_CHECKING:
    from dynamo_backend_protocol.reference.conformance.report import CheckResult

EngineFactory = Callable[[], Any]
"""An engine class, or a zero-argument callable returning an engine (or an awaitable of one)."""

WORKER_ID = 0
ENGINE_ATTRIBUTES = ("start", "generate", "cleanup", "abort", "drain", "kv_event_sources", "disaggregation_mode")
"""Every attribute of an engine the kit or the adapter reads."""
T = TypeVar("T")


class EngineFactoryError(ProtocolError, TypeError):
    """The factory cannot give the kit an engine: not callable, failing, or returning something else."""


KIT_BOUNDED = "FAULT-KIT-BOUNDED"


class KitTimeout(RuleRefusal):
    """A wait on the engine overran its bound: the kit stops waiting there (FAULT-KIT-BOUNDED)."""

    def __init__(self, what: str, seconds: float) -> None:
        self.what = what
        self.seconds = seconds
        super().__init__(f"{what} did not finish within {seconds:g} s", KIT_BOUNDED)


def describe_factory(factory: object) -> str:
    """``module:QualName`` for a class or function; a partial shows its keywords: ``module:Engine(mode=decode)``."""
    if isinstance(factory, functools.partial):
        arguments = [str(a) for a in factory.args] + [f"{k}={v}" for k, v in factory.keywords.items()]
        return f"{describe_factory(factory.func)}({', '.join(arguments)})"
    module = getattr(factory, "__module__", None)
    name = getattr(factory, "__qualname__", None) or getattr(factory, "__name__", None)
    if isinstance(module, str) and isinstance(name, str):
        return f"{module}:{name}"
    return repr(factory)


def check_factory(factory: object, label: str) -> None:
    """Reject what can be recognised without calling it: not callable, an instance, a class that is no engine."""
    try:
        _check_factory(factory, label)
    except EngineFactoryError:
        raise
    except BaseException as error:
        raise EngineFactoryError(f"inspecting {label} raised {describe_error(error)}") from None


def _check_factory(factory: object, label: str) -> None:
    if isinstance(factory, type):
        if not is_engine(factory):
            missing = ", ".join(missing_engine_methods(factory))
            raise EngineFactoryError(f"{label} is a class without {missing}: not an engine")
        return
    if is_engine(factory):
        raise EngineFactoryError(
            f"{label} is an engine instance; pass its class or a zero-argument factory "
            "so the kit can build the engines a run needs (a never-started one, the one it checks)"
        )
    if not callable(factory):
        raise EngineFactoryError(f"{label} is a {type(factory).__name__}, not an engine class or factory")


async def make_engine(factory: EngineFactory, label: str) -> Any:
    try:
        # guarded: sys.exit() or any other BaseException in the factory is a failure to build, not an exit.
        engine = await guarded(_build(factory))
    except EngineFactoryError:
        raise
    except Exception as exc:
        cause = exc.original if isinstance(exc, EngineRaised) else exc
        raise EngineFactoryError(f"constructing the engine with {label}() raised {describe_error(cause)}") from None
    # Each attribute the kit will read, read once here: one that raises is a failure to build, in one line.
    for name in ENGINE_ATTRIBUTES:
        engine_attribute(engine, name, f"{label}()")
    if not is_engine(engine):
        missing = ", ".join(missing_engine_methods(engine))
        raise EngineFactoryError(f"{label}() returned a {type(engine).__name__}, which lacks {missing}: not an engine")
    return engine


async def _build(factory: EngineFactory) -> Any:
    engine = factory()
    if inspect.isawaitable(engine):
        engine = await engine
    return engine


def describe_error(exc: BaseException) -> str:
    """``BackendInvalidArgument: msg`` for typed errors, ``KeyError: 'prompt'`` for anything else; never
    raises, even for an exception whose ``str()`` does."""
    if isinstance(exc, EngineRaised):
        exc = exc.original
    if isinstance(exc, DynamoError):
        return safe_text(exc)
    text = safe_text(exc) if not isinstance(exc, KeyError) else safe_repr(exc.args[0]) if exc.args else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def engine_attribute(engine: object, name: str, label: str) -> object:
    """``getattr(engine, name, None)``; an attribute that raises when read means no engine can be used."""
    try:
        return read_attribute(engine, name, "the engine")
    except AttributeRaised as error:
        raise EngineFactoryError(f"{label}: {error}") from None


async def bounded(work: Awaitable[T], seconds: float, what: str) -> T:
    """``await work`` for at most ``seconds``, whatever the engine does with its cancellation or the loop."""
    try:
        return await within(work, seconds, what)
    except TimeoutError:
        raise KitTimeout(what, seconds) from None


FUZZ_BUDGET = 30.0
"""Seconds the property-based phase may spend, by default, before it stops drawing new examples."""

@dataclass(frozen=True)
class KitSettings:
    factory: EngineFactory
    label: str
    mode: Mode
    cancel_deadline: float
    examples: int
    stream_timeout: float = 60.0
    """Bound on any single stream (and any other wait on the engine outside start, cleanup and cancellation)."""
    start_timeout: float = 900.0
    """Bound on ``start()``: a real engine loads its weights there."""
    cleanup_timeout: float = 60.0
    """Bound on each ``cleanup()``."""
    fuzz_budget: float = FUZZ_BUDGET
    """Seconds the property-based phase may spend before it stops drawing new schedules."""
    trace_sink: TraceSink | None = None
    requests: RequestShape = field(default_factory=lambda: RequestShape(Mode.AGGREGATED))
    """How the kit's requests look for this engine (its model name, the mode's hand-off)."""
    engine_hooks: frozenset[str] = frozenset()
    """The optional engine methods the engine has, which decide whether the checks of those apply."""
    shared: EngineSession | None = None
    """The started engine the checks share (None before it exists)."""
    events: KitEvents | None = None
    """Who hears of the run's progress as it goes."""

    def session(self) -> EngineSession:
        assert self.shared is not None, "the shared engine is made before any check that needs it runs"
        return self.shared

    def examples_done(self, done: int, total: int) -> None:
        if self.events is not None:
            self.events.examples_done(done, total)

    def adapter(self, engine: Any, trace_sink: TraceSink | None = None) -> EngineAdapter:
        return EngineAdapter(engine, self.mode, trace_sink=trace_sink or self.trace_sink)


@dataclass
class EngineSession:
    engine: Any
    """The engine as the factory made it."""
    recorder: RecordingEngine | None
    start_called: bool = False
    start_timed_out: bool = False
    """The kit cancelled ``start()`` when it overran the start timeout."""
    config: Any = None

    @property
    def target(self) -> Any:
        """What the kit calls: the recorder when recording, else the engine itself."""
        return self.recorder if self.recorder is not None else self.engine

    def recording(self) -> RecordingEngine:
        assert self.recorder is not None, "this session was opened without record=True"
        return self.recorder

    async def start(self, settings: KitSettings) -> Any:
        self.start_called = True
        try:
            self.config = await bounded(start_engine(self.target, WORKER_ID), settings.start_timeout, "start")
        except KitTimeout:
            self.start_timed_out = True
            raise
        return self.config

    async def cleanup(self, settings: KitSettings) -> None:
        await bounded(self.target.cleanup(), settings.cleanup_timeout, "cleanup")


class KitEvents(Protocol):
    """What a progress display hears while the kit runs (every method is called on the kit's event loop)."""

    def phase(self, what: str) -> None:
        """The kit moved on to ``what`` (e.g. "starting the engine", "the property-based phase")."""

    def examples_done(self, done: int, total: int) -> None:
        """The property-based phase has run ``done`` of at most ``total`` examples."""

    def check_finished(self, result: CheckResult) -> None:
        """A check has its verdict."""


@contextlib.asynccontextmanager
async def shared_engine(settings: KitSettings) -> AsyncIterator[EngineSession]:
    """The started engine every check shares; the check brings its own requests and contexts, and leaves
    the engine running (and cleaned up only at the end of the run)."""
    yield settings.session()


@contextlib.asynccontextmanager
async def fresh_engine_session(settings: KitSettings) -> AsyncIterator[EngineSession]:
    """A fresh, started engine of the kit's own (the decode check's prefill worker), cleaned up at the end
    whether start succeeded or raised, its leftover tasks cancelled."""
    baseline = set(asyncio.all_tasks())
    engine = await make_engine(settings.factory, settings.label)
    session = EngineSession(engine, None)
    try:
        await session.start(settings)
        yield session
    finally:
        # A failing cleanup here is no verdict: CleanupFailed judges the shared engine's.
        with contextlib.suppress(Exception):
            await session.cleanup(settings)
        await cancel_tasks(tasks_started_since(baseline))


def tasks_started_since(baseline: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    """Tasks still running that did not exist at ``baseline`` (the caller's own task excluded)."""
    current = asyncio.current_task()
    return [task for task in asyncio.all_tasks() if task not in baseline and task is not current and not task.done()]


async def tasks_left_behind(baseline: set[asyncio.Task[Any]], grace: float = 0.05) -> list[asyncio.Task[Any]]:
    """New tasks still running after ``grace`` seconds: a cancelled task needs a loop turn or two to finish."""
    loop = asyncio.get_running_loop()
    until = loop.time() + grace
    while True:
        alive = tasks_started_since(baseline)
        if not alive or loop.time() >= until:
            return alive
        await asyncio.sleep(0.005)


def describe_tasks(tasks: list[asyncio.Task[Any]]) -> str:
    names = [getattr(task.get_coro(), "__qualname__", task.get_name()) for task in tasks]
    return ", ".join(sorted(set(names)))


async def cancel_tasks(tasks: list[asyncio.Task[Any]], grace: float = 1.0) -> None:
    """Cancel ``tasks`` and give them ``grace`` seconds to end; the ones that swallow the cancellation
    are abandoned (a cancelled gather would wait for them as long as they like)."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=grace)
    for task in tasks:
        abandon(task)
