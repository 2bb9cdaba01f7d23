"""A recorder for deployments: what crosses the engine's boundary, as JSON Lines that ``trace`` checks.

``record(engine, sink)`` wraps any engine a Dynamo worker serves.  Each
request becomes observation lines (the vocabulary of
:mod:`model.traces.observed`, seen from the engine's side only):
``engine.generate`` (first line, with the worker's ``mode``), what ``generate``
produced (``engine.setup`` / ``engine.setup_failed``), each item the stream
yielded (``engine.item``, classified by the model's own reading of items),
how the stream ended (``engine.end``, ``engine.raise``, ``engine.close``,
``engine.cancel``, ``engine.interrupt``), each ``engine.abort`` call (and
``engine.abort_raised`` if it raised), the stop and kill the context
showed (``context.stop``, ``context.kill``, with ``reading: true`` when a read
of the stream was under way then), and after those each read the runtime made
of the stream (``engine.read``), each line with its wall-clock time ``t``.

It never changes what the engine does or returns: the engine gets the same
request and the same context object, its items and errors pass through
untouched.  The context is looked at (``is_stopped()``, ``is_killed()``) only
around the engine's own reads and calls, so a signal is noted at the first
boundary where it is visible.  A side-channel ``notify_first_token()`` cannot
be seen without handing the engine a stand-in context (Dynamo's ``Context``
can neither be subclassed nor patched), so by default it is not recorded (the
first line says ``notices: false``) and ``trace`` says what it could not judge
because of that; ``observe_notices=True`` hands the engine a stand-in that
forwards every member to the real context and records the notice
(``context.first_token``), for engines that do not need the context's exact type.

Off costs nothing: ``record(engine, None)`` returns the engine itself.  A sink
that raises is isolated as the adapter's trace sink is (FAULT-SINK-ISOLATED):
the failure is counted once for that request and its later lines are dropped;
the engine never sees it.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from dynamo_backend_protocol.model import Mode
from dynamo_backend_protocol.model.faults import error_name, stream_fault
from dynamo_backend_protocol.model.traces.observed import item_name
from dynamo_backend_protocol.reference.context import cancelled_by_consumer

Sink = Callable[[dict[str, Any]], None]
"""Takes one observation line as a JSON-able dict."""
E = TypeVar("E")

RECENT_REQUESTS = 4096
"""Requests whose log an ``abort`` can still find after their stream ended (a late abort is a finding)."""
DEFAULT_MAX_BYTES = 64 << 20
DEFAULT_BACKUPS = 3


def record(
    engine: E, sink: Sink | str | os.PathLike[str] | None, mode: Mode | str | None = None,
    observe_notices: bool = False,
) -> E:
    """``engine`` recorded into ``sink`` (a callable taking one line as a dict, or a file path, which
    gets a size-capped rotating :class:`RotatingJsonlSink`); ``engine`` itself when ``sink`` is None.

    ``mode`` is the disaggregation mode the worker serves; by default the engine's own
    ``disaggregation_mode`` attribute (Dynamo's SampleLLMEngine has one), else ``agg``.
    ``observe_notices`` records side-channel first-token notices through a stand-in context.
    """
    if sink is None:
        return engine
    if any(cls.__name__ == "RawEngine" and cls.__module__.startswith("dynamo.") for cls in type(engine).__mro__):
        # Dynamo picks the raw adapter by isinstance(engine, RawEngine), which a wrapper would hide.
        raise TypeError("record() takes LLM engines; Dynamo serves a RawEngine through another adapter, "
                        "whose requests and items this trace format does not describe")
    if isinstance(sink, (str, os.PathLike)):
        sink = RotatingJsonlSink(Path(sink))
    recorded: Any = RecordedEngine(engine, sink, _mode_of(engine, mode), observe_notices)
    return recorded  # type: ignore[no-any-return]


def _mode_of(engine: object, mode: Mode | str | None) -> Mode:
    if isinstance(mode, Mode):
        return mode
    declared = mode if mode is not None else getattr(engine, "disaggregation_mode", None)
    if declared is None:
        return Mode.AGGREGATED
    return Mode.parse(str(getattr(declared, "value", declared)))


class RotatingJsonlSink:
    """Appends lines to ``path``; when it passes ``max_bytes`` it becomes ``path.1`` (``path.1`` becomes
    ``path.2``, ... up to ``backups``; the oldest is deleted), so at most ``(backups + 1) * max_bytes``
    are kept.  Thread-safe; each line is written whole and flushed."""

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS) -> None:
        if max_bytes <= 0 or backups < 0:
            raise ValueError("max_bytes must be positive and backups 0 or more")
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._out = open(path, "ab")  # noqa: SIM115 - closed by close(), kept open for the worker's life
        self._size = self._out.tell()

    def __call__(self, line: dict[str, Any]) -> None:
        data = _ENCODER.encode(line) + b"\n"
        with self._lock:
            if self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
            self._out.write(data)
            self._out.flush()
            self._size += len(data)

    def _rotate(self) -> None:
        self._out.close()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for number in range(self.backups, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{number}")
                newer = self.path if number == 1 else self.path.with_name(f"{self.path.name}.{number - 1}")
                if newer.exists():
                    os.replace(newer, older)
        self._out = open(self.path, "ab")  # noqa: SIM115
        self._size = 0

    def close(self) -> None:
        with self._lock:
            self._out.close()


_ENCODER = msgspec.json.Encoder()


class RequestLog:
    """One request's lines; signals already noted; failure isolation."""

    __slots__ = ("_failed", "_recorder", "killed", "name", "position", "reading", "stopped")

    def __init__(self, recorder: RecordedEngine, name: str) -> None:
        self._recorder = recorder
        self._failed = False
        self.name = name
        self.position = 0
        self.stopped = False
        self.killed = False
        self.reading = False
        """A read of the stream is under way (the runtime awaits the engine's next item)."""

    def note(self, obs: str, **fields: object) -> None:
        if self._failed:
            return
        try:
            self._recorder.sink({"request": self.name, "obs": obs, "t": time.time(), **fields})
        except Exception:
            self._failed = True
            self._recorder.sink_failures += 1

    def signals(self, context: Any) -> None:
        """Note the stop and kill the context shows now, each once (a kill is a stop too)."""
        if self.killed:
            return
        try:
            killed = bool(context.is_killed())
            stopped = killed or bool(context.is_stopped())
        except Exception:
            return  # a context without these members shows nothing to record
        # A read under way when the signal shows is noted with it: an engine that never answers that read went
        # silent after the stop, whereas one that answers it (with the item it was making) has not shown anything.
        pending = {"reading": True} if self.reading else {}
        if killed:
            self.stopped = self.killed = True
            self.note("context.kill", **pending)
        elif stopped and not self.stopped:
            self.stopped = True
            self.note("context.stop", **pending)


class RecordedEngine:
    """The engine, with every request's boundary recorded; every other attribute is the engine's own."""

    def __init__(self, engine: Any, sink: Sink, mode: Mode, observe_notices: bool = False) -> None:
        self.engine = engine
        self.sink = sink
        self.mode = mode
        self.observe_notices = observe_notices
        self.sink_failures = 0
        """Requests whose lines stopped because the sink raised."""
        self._recent: OrderedDict[str, RequestLog] = OrderedDict()

    def __getattr__(self, name: str) -> Any:
        # Only reached for what this class does not define: the engine's optional hooks and attributes.
        return getattr(self.__dict__["engine"], name)

    def generate(self, request: Any, context: Any) -> Any:
        log = self._open(context)
        log.note("engine.generate", mode=self.mode.value, notices=self.observe_notices)
        log.signals(context)
        if self.observe_notices:
            context = NoticedContext(context, log)
        try:
            produced = self.engine.generate(request, context)
        except BaseException as exc:
            log.note("engine.setup_failed", error=error_name(exc))
            raise
        if inspect.isawaitable(produced):
            return self._set_up_later(produced, log, context)
        return self._stream(produced, log, context)

    async def _set_up_later(self, produced: Any, log: RequestLog, context: Any) -> Any:
        try:
            result = await produced
        except BaseException as exc:
            log.note("engine.setup_failed", error=error_name(exc))
            raise
        return self._stream(result, log, context)

    def _stream(self, produced: Any, log: RequestLog, context: Any) -> Any:
        if not callable(getattr(produced, "__aiter__", None)):
            log.note("engine.setup_failed", error="not an async iterator")
            return produced
        log.note("engine.setup")
        return RecordedStream(produced.__aiter__(), log, context, self.mode)

    async def abort(self, context: Any) -> None:
        log = self._find(context)
        if log is not None:
            log.signals(context)
            log.note("engine.abort")
        hook = getattr(self.engine, "abort", None)
        if hook is None:
            return
        try:
            result = hook(context)
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            if log is not None:
                log.note("engine.abort_raised", error=error_name(exc))
            raise

    def _open(self, context: Any) -> RequestLog:
        name = _context_id(context)
        log = RequestLog(self, name)
        self._recent[name] = log
        if len(self._recent) > RECENT_REQUESTS:
            self._recent.popitem(last=False)
        return log

    def _find(self, context: Any) -> RequestLog | None:
        return self._recent.get(_context_id(context))


class NoticedContext:
    """A stand-in for the request's context that records the engine's first-token notice."""

    __slots__ = ("_context", "_log", "_noticed")

    def __init__(self, context: Any, log: RequestLog) -> None:
        self._context = context
        self._log = log
        self._noticed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def notify_first_token(self) -> Any:
        if not self._noticed:
            self._noticed = True
            self._log.signals(self._context)
            self._log.note("context.first_token")
        return self._context.notify_first_token()


class RecordedStream:
    """The engine's stream as the runtime reads it: each item, the signals around it, how it ended."""

    __slots__ = ("_context", "_inner", "_log", "_mode")

    def __init__(self, inner: AsyncIterator[Any], log: RequestLog, context: Any, mode: Mode) -> None:
        self._inner = inner
        self._log = log
        self._context = context
        self._mode = mode

    def __aiter__(self) -> RecordedStream:
        return self

    async def __anext__(self) -> Any:
        log = self._log
        if log.stopped:
            # Once cancelled, each read is noted too (a stream ends within an item or two of a stop): a
            # stream left unread by the runtime and an engine that does not answer look alike otherwise.
            log.note("engine.read")
        log.reading = True
        try:
            item = await self._inner.__anext__()
        except StopAsyncIteration:
            log.signals(self._context)
            log.note("engine.end")
            raise
        except BaseException as exc:
            # The model says what the exception is to the request, as for the adapter's own observers.
            fault = stream_fault(exc, asyncio.CancelledError, cancelled_by_consumer())
            if fault is None:
                log.note("engine.cancel")
            elif not fault.propagates:
                log.signals(self._context)
                log.note("engine.raise", error=error_name(exc))
            else:
                log.note("engine.interrupt", error=type(exc).__name__)
            raise
        finally:
            log.reading = False
        # A signal visible now was visible before the item was handed on to the runtime (one look per
        # item: a signal that came between two items is noted before the second, in the same order).
        log.signals(self._context)
        log.position += 1
        log.note("engine.item", item=item_name(item, log.position, self._mode), n=log.position,
                 tokens=_token_count(item))
        return item

    async def aclose(self) -> None:
        self._log.note("engine.close")
        aclose = getattr(self._inner, "aclose", None)
        if aclose is not None:
            await aclose()




def _context_id(context: Any) -> str:
    try:
        return str(context.id())
    except Exception:
        return f"context-{id(context)}"


def _token_count(item: object) -> int:
    """The tokens an item carries (0 without a list of token ids): whether a stopped stream's finish was due."""
    token_ids = item.get("token_ids") if isinstance(item, dict) else None
    return len(token_ids) if isinstance(token_ids, list) else 0
