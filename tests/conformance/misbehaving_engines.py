"""Engines that misbehave the way real engines do, for the kit's reliability tests.

``Engine`` is the bundled SampleEngine with one fault, named by the ``MISBEHAVE``
environment variable when it is built (``conform misbehaving_engines:Engine``).
A fault in a stream hits only the kit's first plain request
(``conformance-plain``), so the run's other checks stay quick.  The other
classes each have an attribute that raises when read.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from dynamo_backend_protocol.reference import SampleEngine
from dynamo_backend_protocol.reference.context import Context

PLAIN = "conformance-plain"
FOREVER = 3600.0
MARK = "MISBEHAVING\n"
"""Written to stderr as a fault begins when MISBEHAVE_MARK is set, so a test knows when to interrupt."""


def mark() -> None:
    if os.environ.get("MISBEHAVE_MARK"):
        os.write(2, MARK.encode())  # Past any redirection of sys.stderr.


class Boom(BaseException):
    """An engine's own BaseException subclass."""


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


async def swallow_cancellation(seconds: float) -> None:
    """Wait ``seconds``, ignoring every cancellation (an engine whose ``finally`` or ``except`` eats it)."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        try:
            await asyncio.sleep(until - time.monotonic())
        except asyncio.CancelledError:
            continue


def block_forever_swallowing_everything() -> None:
    while True:
        try:
            time.sleep(FOREVER)
        except BaseException:  # the fault under test: nothing interrupts it
            continue


START_FAULTS: dict[str, Callable[[], Any]] = {
    "start-swallows-cancellation": lambda: swallow_cancellation(FOREVER),
    "start-blocks-4s": lambda: time.sleep(4),
    "start-blocks-forever": lambda: time.sleep(FOREVER),
    "start-blocks-and-swallows": block_forever_swallowing_everything,
    "start-in-thread-30s": lambda: asyncio.to_thread(time.sleep, 30),
    "start-sys-exit": lambda: sys.exit(3),
    "start-base-exception": lambda: (_ for _ in ()).throw(Boom("engine-defined")),
    "start-cancelled-error": lambda: (_ for _ in ()).throw(asyncio.CancelledError()),
    "start-generator-exit": lambda: (_ for _ in ()).throw(GeneratorExit()),
    "start-unprintable": lambda: (_ for _ in ()).throw(Unprintable()),
}


class Engine(SampleEngine):
    """The SampleEngine with the fault named by ``fault`` (default: the MISBEHAVE environment variable)."""

    def __init__(self, **options: Any) -> None:
        self.fault = os.environ.get("MISBEHAVE", "")
        if self.fault == "factory-sys-exit":
            sys.exit(4)
        super().__init__(**options)

    async def start(self, worker_id: int) -> Any:
        make = START_FAULTS.get(self.fault)
        if make is not None:
            mark()
            pending = make()
            if asyncio.iscoroutine(pending):
                await pending
        return await super().start(worker_id)

    def generate(self, request: dict[str, Any], context: Context) -> AsyncIterator[Any]:
        if self.fault == "generate-sys-exit" and context.id() == PLAIN:
            sys.exit(5)
        return super().generate(request, context)

    async def _stream(self, request: dict[str, Any], context: Context) -> AsyncIterator[Any]:
        if context.id() == PLAIN:
            if self.fault.startswith("stream-"):
                mark()
            if self.fault == "stream-swallows-cancellation":
                await swallow_cancellation(FOREVER)
            if self.fault == "stream-blocks-4s":
                time.sleep(4)
        async for chunk in super()._stream(request, context):
            yield chunk

    async def abort(self, context: Context) -> None:
        if self.fault == "abort-sys-exit":
            sys.exit(6)

    async def cleanup(self) -> None:
        if self.fault == "cleanup-sys-exit":
            sys.exit(7)
        if self.fault == "cleanup-swallows-cancellation":
            await swallow_cancellation(FOREVER)
        await super().cleanup()


class DeclaresModeBadly(SampleEngine):
    """Its ``disaggregation_mode`` raises when read."""

    @property
    def disaggregation_mode(self) -> Any:
        raise RuntimeError("mode unknowable")


class KvSourcesPropertyRaises(SampleEngine):
    @property
    def kv_event_sources(self) -> Any:
        raise Boom("kv_event_sources property")


class AbortPropertyRaises(SampleEngine):
    @property
    def abort(self) -> Any:
        raise KeyError("abort")


class WorkerConfig:
    @property
    def disaggregation_mode(self) -> Any:
        raise ValueError("config mode unreadable")


class FromArgsConfigRaises(SampleEngine):
    """Built by ``from_args``; its worker config's ``disaggregation_mode`` raises."""

    @classmethod
    async def from_args(cls, argv: list[str]) -> tuple[SampleEngine, WorkerConfig]:
        return cls(), WorkerConfig()

