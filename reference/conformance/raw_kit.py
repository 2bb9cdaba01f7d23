"""The conformance kit for raw engines: a ``RawEngine`` (JSON objects in and out, from Dynamo 1.3.1).

A raw engine has no tokens and no terminal chunk, so the token kit's checks
do not apply; the raw adapter's machine (``model/raw_engine.py``, spec
section 15.2) says what does: the generator's end is the request's terminal
(RAW-END-IS-TERMINAL), every yielded object is forwarded (RAW-FORWARD), and
a stop is answered by ``abort()`` at once, in every mode (RAW-ABORT-IMMEDIATE),
after which the generator must end.  The kit plays the adapter's part: it
feeds what it sees to the raw machine and performs the machine's actions (the
abort at the stop), and judges the engine by these checks:

- ``StartFailed``, ``EmptyModelInConfig``: start succeeds with a model name;
- ``RawGenerateFailed``: generate sets up a stream for the engine's own request;
- ``RawNoObjectYielded``: the stream yields at least one object and ends
  (within the stream timeout), raising nothing;
- ``RawObjectNotJson``: every object is a JSON object (a dict that
  ``json.dumps`` accepts);
- ``RawStopIgnored``: a request stopped as soon as its stream exists, and
  aborted as the raw adapter does, ends within the cancel deadline;
- ``AbortFailed``: that abort returns within the deadline, raising nothing;
- ``CleanupFailed``, ``SecondCleanupFailed``, ``CleanupWithoutStartFailed``.

The request is the engine's own canary, ``health_check_payload()``, when it
has one (a raw engine declares one for the runtime's health check), else ``{}``.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dynamo_backend_protocol.model.raw_engine import RawAction, RawEvent, RawMachine
from dynamo_backend_protocol.reference.conformance.construction import engine_factory
from dynamo_backend_protocol.reference.conformance.session import (
    EngineFactory,
    check_factory,
    describe_error,
    describe_factory,
    make_engine,
)
from dynamo_backend_protocol.reference.conformance.watchdog import within
from dynamo_backend_protocol.reference.context import Context

CHECKS: tuple[tuple[str, str], ...] = (
    ("StartFailed", "start succeeds"),
    ("EmptyModelInConfig", "start returns a config with a non-empty model"),
    ("RawGenerateFailed", "generate sets up a stream for the engine's own request"),
    ("RawNoObjectYielded", "the stream yields objects and its generator ends"),
    ("RawObjectNotJson", "every yielded object is a JSON object"),
    ("RawStopIgnored", "a request stopped and aborted at once ends within the deadline"),
    ("AbortFailed", "abort for a stopped request returns quietly within the deadline"),
    ("CleanupFailed", "cleanup succeeds after start"),
    ("SecondCleanupFailed", "a second cleanup succeeds"),
    ("CleanupWithoutStartFailed", "cleanup succeeds on a never-started engine"),
)
_TITLES = dict(CHECKS)
_NEEDS_A_STREAM = ("RawNoObjectYielded", "RawObjectNotJson", "RawStopIgnored", "AbortFailed")


def is_raw_engine(factory: object) -> bool:
    """Whether ``factory`` is a raw engine class: one deriving from Dynamo's ``RawEngine`` (told by name,
    so that no Dynamo import is needed; ``DiffusionEngine`` is one)."""
    return isinstance(factory, type) and any(cls.__name__ == "RawEngine" for cls in factory.__mro__)


@dataclass
class RawCheck:
    name: str
    passed: bool | None
    """None: skipped."""
    reason: str = ""

    def line(self) -> str:
        word = "skip" if self.passed is None else "pass" if self.passed else "FAIL"
        text = f"[{word}] {self.name:<26} {_TITLES[self.name]}"
        return f"{text}: {self.reason}" if self.reason else text


@dataclass
class RawReport:
    engine: str
    checks: list[RawCheck] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(check.passed is not False for check in self.checks)

    def failures(self) -> list[str]:
        return [check.name for check in self.checks if check.passed is False]

    def render(self) -> str:
        lines = [check.line() for check in self.checks]
        passed = sum(check.passed is True for check in self.checks)
        skipped = sum(check.passed is None for check in self.checks)
        verdict = "conforms as a raw engine"
        if not self.ok:
            verdict = f"does not conform as a raw engine ({', '.join(self.failures())})"
        lines.append(f"{self.engine} {verdict}: {passed} passed, {len(self.failures())} failed, {skipped} skipped "
                     f"in {self.seconds:.2f} s")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, object]:
        return {"engine": self.engine, "kind": "raw", "ok": self.ok, "seconds": round(self.seconds, 3),
                "checks": [{"name": c.name, "title": _TITLES[c.name],
                            "status": "skipped" if c.passed is None else "passed" if c.passed else "failed",
                            "reason": c.reason} for c in self.checks]}


class _Verdicts:
    def __init__(self) -> None:
        self.found: dict[str, RawCheck] = {}

    def judge(self, name: str, problem: str | None) -> None:
        self.found[name] = RawCheck(name, problem is None, problem or "")

    def skip(self, names: Sequence[str], why: str) -> None:
        for name in names:
            self.found.setdefault(name, RawCheck(name, None, why))


async def _stream(engine: Any, request: dict[str, Any], context: Context) -> AsyncIterator[Any]:
    produced = engine.generate(request, context)
    if inspect.isawaitable(produced):
        produced = await produced
    stream: AsyncIterator[Any] = produced.__aiter__()
    return stream


async def _close(stream: AsyncIterator[Any]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):  # TimeoutError and EngineRaised included
            await within(aclose(), 1.0, "closing the raw stream")


async def _read(stream: AsyncIterator[Any], into: list[object], machine: RawMachine) -> None:
    """Read ``stream`` to its end, each object kept (only its count matters after a stop) and told to the machine."""
    async for item in stream:
        into.append(item)
        machine.fire(RawEvent.OBJECT)


async def _request(engine: Any) -> dict[str, Any]:
    payload = getattr(engine, "health_check_payload", None)
    if callable(payload):
        try:
            found = payload()
            if inspect.isawaitable(found):
                found = await found
        except Exception:
            found = None
        if isinstance(found, Mapping):
            return dict(found)
    return {}


def _not_json(item: object) -> str | None:
    if not isinstance(item, Mapping):
        return f"a {type(item).__name__}, not a JSON object"
    try:
        json.dumps(item)
    except (TypeError, ValueError) as error:
        return f"not serialisable as JSON ({error})"
    return None


async def _plain(engine: Any, request: dict[str, Any], timeout: float, verdicts: _Verdicts) -> bool:
    """RAW-FORWARD, RAW-END-IS-TERMINAL: the engine's own request, read to the generator's end."""
    machine = RawMachine()
    context = Context("conformance-raw-plain")
    try:
        stream = await within(_stream(engine, request, context), timeout, "generate()")
    except Exception as error:
        verdicts.judge("RawGenerateFailed", f"generate raised {describe_error(error)} for the request {request!r}")
        return False
    verdicts.judge("RawGenerateFailed", None)
    machine.fire(RawEvent.SETUP)
    items: list[object] = []
    problem = None
    try:
        await within(_read(stream, items, machine), timeout, "the raw stream")
        machine.fire(RawEvent.END)
    except TimeoutError:
        problem = f"the generator had not ended after {timeout:g} s ({len(items)} object(s)); its end is the terminal"
    except Exception as error:
        problem = f"the stream raised {describe_error(error)} after {len(items)} object(s)"
    finally:
        await _close(stream)
    if problem is None and not items:
        problem = "the generator ended without yielding anything"
    verdicts.judge("RawNoObjectYielded", problem)
    wrong = [f"object #{n}: {why}" for n, item in enumerate(items, start=1) if (why := _not_json(item))]
    verdicts.judge("RawObjectNotJson", wrong[0] if wrong else None)
    return problem is None


async def _stopped(engine: Any, request: dict[str, Any], deadline: float, verdicts: _Verdicts) -> None:
    """RAW-ABORT-IMMEDIATE: stop as soon as the stream exists and abort as the machine says; the
    generator must then end within the deadline."""
    machine = RawMachine()
    context = Context("conformance-raw-stop")
    try:
        stream = await within(_stream(engine, request, context), deadline, "generate()")
    except Exception as error:
        verdicts.judge("AbortFailed", None)
        verdicts.judge("RawStopIgnored", f"generate raised {describe_error(error)} for a request it served before")
        return
    machine.fire(RawEvent.SETUP)
    context.stop_generating()
    abort_problem = None
    if RawAction.CALL_ABORT in machine.fire(RawEvent.STOP):
        try:
            await within(engine.abort(context), deadline, "abort(context)")
        except TimeoutError:
            abort_problem = f"abort(context) did not return within {deadline:g} s"
        except Exception as error:
            abort_problem = f"abort(context) raised {describe_error(error)}"
    verdicts.judge("AbortFailed", abort_problem)
    since: list[object] = []
    problem = None
    try:
        await within(_read(stream, since, machine), deadline, "the stopped raw stream")
    except TimeoutError:
        problem = (f"stopped and aborted, the generator was still running after {deadline:g} s ({len(since)} "
                   "object(s) since): a raw engine must check context.is_stopped() or end at abort()")
    except Exception:
        pass  # ending by raising is ending (RAW-END-IS-TERMINAL)
    finally:
        await _close(stream)
    verdicts.judge("RawStopIgnored", problem)


async def _cleanup(engine: Any, timeout: float, name: str, verdicts: _Verdicts) -> None:
    try:
        await within(engine.cleanup(), timeout, "cleanup()")
    except TimeoutError:
        verdicts.judge(name, f"cleanup did not return within {timeout:g} s")
    except Exception as error:
        verdicts.judge(name, f"cleanup raised {describe_error(error)}")
    else:
        verdicts.judge(name, None)


async def run_raw_conformance(
    factory: EngineFactory,
    *,
    engine_args: str | Sequence[str] | None = None,
    cancel_deadline: float = 2.0,
    start_timeout: float = 900.0,
    cleanup_timeout: float = 60.0,
    stream_timeout: float = 60.0,
    label: str | None = None,
) -> RawReport:
    """Judge the raw engine made by ``factory`` (a class, or a class with ``from_args`` built through it)."""
    began = time.perf_counter()
    label = label or describe_factory(factory)
    check_factory(factory, label)
    build = engine_factory(factory, engine_args, label)
    verdicts = _Verdicts()
    await _cleanup(await make_engine(build, label), cleanup_timeout, "CleanupWithoutStartFailed", verdicts)
    engine = await make_engine(build, label)
    started = False
    try:
        config = await within(engine.start(0), start_timeout, "start()")
        started = True
        verdicts.judge("StartFailed", None)
        model = getattr(config, "model", None)
        verdicts.judge("EmptyModelInConfig", None if isinstance(model, str) and model else
                       f"start returned a config whose model is {model!r}")
    except TimeoutError:
        verdicts.judge("StartFailed", f"start did not return within {start_timeout:g} s")
    except Exception as error:
        verdicts.judge("StartFailed", f"start raised {describe_error(error)}")
    if started:
        request = await _request(engine)
        if await _plain(engine, request, stream_timeout, verdicts):
            await _stopped(engine, request, cancel_deadline, verdicts)
        else:
            verdicts.skip(_NEEDS_A_STREAM, "skipped: needs a stream that yields objects and ends (fix that first)")
    else:
        verdicts.skip(("EmptyModelInConfig", "RawGenerateFailed", *_NEEDS_A_STREAM), "skipped: start failed")
    await _cleanup(engine, cleanup_timeout, "CleanupFailed", verdicts)
    if verdicts.found["CleanupFailed"].passed:
        await _cleanup(engine, cleanup_timeout, "SecondCleanupFailed", verdicts)
    else:
        verdicts.skip(("SecondCleanupFailed",), "skipped: the first cleanup failed")
    checks = [verdicts.found[name] for name, _ in CHECKS]
    return RawReport(label, checks, time.perf_counter() - began)
