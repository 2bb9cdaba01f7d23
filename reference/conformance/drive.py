"""Driving one request through the reference adapter the way a client would.

A :class:`RequestPlan` says what the client does: read to the end, or stop,
kill or drop the request after it has read so many chunks.  :func:`drive`
carries the plan out and returns a :class:`RequestRun`: what the client
received, how the stream ended, and what reached the engine for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dynamo_backend_protocol.model import DynamoError, FinishReason, Mode, Step
from dynamo_backend_protocol.model.chunks import finish_reason_meaning
from dynamo_backend_protocol.model.stopped import Ending
from dynamo_backend_protocol.reference.adapter import EngineAdapter, ResponseStream, TraceSink
from dynamo_backend_protocol.reference.annotated import Annotated
from dynamo_backend_protocol.reference.conformance.kept import kept_annotated
from dynamo_backend_protocol.reference.conformance.recording import RecordingEngine, RequestLog
from dynamo_backend_protocol.reference.conformance.watchdog import within
from dynamo_backend_protocol.reference.context import Context
from dynamo_backend_protocol.reference.traces.boundary import ObservationWriter, ObservingSink

PLAIN_MAX_TOKENS = 8
ABORT_FIRST_TURNS = 5
"""Event-loop turns the client lets pass between a stop and its first read, for the abort to run first."""
CANCEL_MAX_TOKENS = 1000
"""Asked of requests that get cancelled: the engine still has plenty to say when the cancellation
comes, yet the number stays within any real model's context, so no engine rejects it."""


FALLBACK_MODEL = "conformance-kit"
"""The model requests name when the engine's start() gave no usable one (StartFailed says why)."""
PROMPT = (101, 102, 103, 104)
SYNTHETIC_PREFILL_RESULT: dict[str, Any] = {
    "disaggregated_params": {"conformance_kit": "synthetic prefill hand-off", "prompt_tokens": len(PROMPT)}
}
"""Dynamo's ``PrefillResult`` shape, for when no prefill run of the engine could supply a real one."""
MULTI_MODAL_DATA: dict[str, Any] = {"image": [{"Url": "data:image/png;base64,AA=="}]}
"""Dynamo's ``multi_modal_data`` shape ({part type: [MultimodalData]}), as upstream's encode kit sends it."""
MM_PROCESSOR_KWARGS: dict[str, Any] = {"min_pixels": 64}


@dataclass(frozen=True)
class RequestShape:
    """What every kit request carries besides its token limit: the served model's name (from
    ``start()``) and what the mode needs (decode: a prefill result; encode: media to encode)."""

    mode: Mode
    model: str = FALLBACK_MODEL
    prefill_result: dict[str, Any] | None = None
    """Decode only; None means the synthetic one."""
    prefill_source: str = "synthetic"
    """Where the decode requests' prefill result came from, for the report."""
    bootstrap_info: dict[str, Any] | None = None
    """Prefill and decode: Dynamo's ``BootstrapInfo``, when the prefill engine advertised a bootstrap endpoint."""

    def describe(self) -> str:
        said = f"model {self.model!r}"
        if self.mode is Mode.DECODE:
            said += f"; prefill_result {self.prefill_source}"
        elif self.bootstrap_info is not None:
            said += "; bootstrap_info for the bootstrap endpoint start() advertised"
        elif self.mode is Mode.ENCODE:
            said += "; multi_modal_data with one image"
        return said

    def request(self, max_tokens: int) -> dict[str, Any]:
        """A fresh request shaped like the preprocessor's (engines may change what they get)."""
        request: dict[str, Any] = {
            "model": self.model,
            "token_ids": list(PROMPT),
            "stop_conditions": {"max_tokens": max_tokens},
            "sampling_options": {"temperature": 0.0},
            "output_options": {},
        }
        if self.mode is Mode.DECODE:
            request["prefill_result"] = copy.deepcopy(self.prefill_result or SYNTHETIC_PREFILL_RESULT)
        if self.bootstrap_info is not None:
            request["bootstrap_info"] = dict(self.bootstrap_info)
        elif self.mode is Mode.ENCODE:
            request["multi_modal_data"] = copy.deepcopy(MULTI_MODAL_DATA)
            request["mm_processor_kwargs"] = dict(MM_PROCESSOR_KWARGS)
        return request


class Action(enum.Enum):
    FINISH = "finish"
    STOP = "stop"
    KILL = "kill"
    DROP = "drop"


@dataclass(frozen=True)
class RequestPlan:
    action: Action
    after_chunks: int = 0
    """How many chunks the client reads before it acts (ignored for FINISH)."""
    max_tokens: int = PLAIN_MAX_TOKENS
    while_waiting: bool = False
    """Act while the client waits for the next chunk (the engine is mid-await), not between reads."""
    read_after_abort: bool = False
    """With ``after_chunks`` 0: the first read starts only once the abort the stop caused has run, as when
    Dynamo's monitor aborts a request stopped at setup before its reader pulls the first item."""

    def describe(self) -> str:
        if self.action is Action.FINISH:
            what = "read to the end"
        elif self.read_after_abort:
            what = f"{self.action.value} right after generate() returned, first read only after the abort"
        elif self.while_waiting:
            what = f"{self.action.value} while waiting for chunk {self.after_chunks + 1}"
        else:
            when = "before reading" if self.after_chunks == 0 else f"after {_chunks(self.after_chunks)}"
            what = f"{self.action.value} {when}"
        return f"{what} (max_tokens {self.max_tokens})"


def _chunks(count: int) -> str:
    return f"{count} chunk" if count == 1 else f"{count} chunks"


@dataclass
class RequestRun:
    request_id: str
    plan: RequestPlan
    received: list[Annotated] = field(default_factory=list)
    ending: Ending = Ending.TIMED_OUT
    setup_error: DynamoError | None = None
    cancelled_by_client: bool = False
    """The plan's stop or kill actually happened (the stream may have ended before its turn)."""
    dropped_by_client: bool = False
    acted_after: int | None = None
    """How many items the client had received when it stopped, killed or dropped the request."""
    trace: list[Step] = field(default_factory=list)
    log: RequestLog | None = None

    def terminal(self) -> dict[str, Any] | None:
        if self.ending is Ending.TERMINAL and self.received and self.received[-1].data is not None:
            return self.received[-1].data
        return None

    def finish_reason(self) -> object:
        terminal = self.terminal()
        return terminal.get("finish_reason") if terminal is not None else None

    def ended_before_cancel(self) -> bool:
        """The terminal had already arrived when the client stopped or killed the request: it was over,
        so the stop was absorbed and says nothing about how the engine handles one."""
        return (
            self.cancelled_by_client
            and self.ending is Ending.TERMINAL
            and self.acted_after is not None
            and self.acted_after >= len(self.received)
        )

    def stop_seq(self) -> int | None:
        """When the engine's context heard the stop or kill (the recorder's observation number)."""
        if self.log is None:
            return None
        return next((seq for seq, signal in self.log.signals if signal in ("stop", "kill")), None)

    def tokens_received(self) -> int:
        return sum(len(item.data.get("token_ids") or []) for item in self.received if item.data is not None)

    def cancelled(self) -> bool:
        """Whether the stream ended with a terminal Dynamo reads as cancelled (``cancelled`` or ``abort``)."""
        return finish_reason_meaning(self.finish_reason()) is FinishReason.CANCELLED

    def describe_end(self) -> str:
        """How the stream ended, for a reason: 'ended with finish_reason 'stop'', 'ended with an error item: ...'."""
        if self.ending is Ending.TERMINAL:
            return f"ended with finish_reason {self.finish_reason()!r}"
        if self.ending is Ending.ERROR_ITEM and self.received and self.received[-1].error is not None:
            return f"ended with an error item: {self.received[-1].error}"
        if self.ending is Ending.EXHAUSTED:
            return f"ended after {_chunks(len(self.received))} without a terminal chunk"
        if self.ending is Ending.SETUP_FAILED:
            return f"failed at setup: {self.setup_error}"
        return str(self.ending.value)


class TraceCollector(ObservingSink):
    """A trace sink keeping each finished request's steps, and passing them on to another sink."""

    def __init__(self, forward: TraceSink | None = None) -> None:
        self.traces: dict[str, list[Step]] = {}
        self._forward = forward

    def open_observations(self, request: str) -> ObservationWriter | None:
        # A sink taking observations (JsonlTraceWriter) still gets them through this collector.
        return self._forward.open_observations(request) if isinstance(self._forward, ObservingSink) else None

    def __call__(self, request: str, steps: Sequence[Step]) -> None:
        self.traces[request] = list(steps)
        if self._forward is not None:
            self._forward(request, steps)


@dataclass(frozen=True)
class DriveLimits:
    stream_timeout: float
    cancel_deadline: float


async def drive(
    adapter: EngineAdapter,
    recorder: RecordingEngine,
    collector: TraceCollector,
    plan: RequestPlan,
    request_id: str,
    limits: DriveLimits,
    shape: RequestShape,
) -> RequestRun:
    run = RequestRun(request_id, plan)
    context = Context(request_id)
    try:
        # within(), not asyncio.timeout: an engine that swallows its cancellation is abandoned at the bound.
        stream = await within(adapter.generate(shape.request(plan.max_tokens), context), limits.stream_timeout,
                              "generate")
    except DynamoError as error:
        run.setup_error, run.ending = error, Ending.SETUP_FAILED
    except TimeoutError:
        run.ending = Ending.TIMED_OUT
    else:
        await _consume(stream, context, plan, run, limits)
    run.trace = collector.traces.get(request_id, [])
    run.log = recorder.requests.get(request_id)
    return run


async def _consume(
    stream: ResponseStream, context: Context, plan: RequestPlan, run: RequestRun, limits: DriveLimits
) -> None:
    await _Client(stream, context, plan, run, limits).consume()


class _Client:
    """Reads one response stream and carries out the plan's action when its turn comes."""

    def __init__(
        self, stream: ResponseStream, context: Context, plan: RequestPlan, run: RequestRun, limits: DriveLimits
    ) -> None:
        self.stream = stream
        self.context = context
        self.plan = plan
        self.run = run
        self.limits = limits
        self.acted = plan.action is Action.FINISH
        self.cancelled_at: float | None = None

    def action_due(self) -> bool:
        return not self.acted and len(self.run.received) == self.plan.after_chunks

    async def act(self) -> bool:
        """Stop, kill or drop; returns whether the client is done with the stream."""
        self.acted = True
        self.run.acted_after = len(self.run.received)
        if self.plan.action is Action.DROP:
            self.run.dropped_by_client, self.run.ending = True, Ending.DROPPED
            await self.stream.aclose()
            return True
        self.cancelled_at = time.perf_counter()
        self.run.cancelled_by_client = True
        if self.plan.action is Action.STOP:
            self.context.stop_generating()
        else:
            self.context.kill()
        return False

    def budget(self) -> float:
        if self.cancelled_at is None:
            return self.limits.stream_timeout
        return max(self.cancelled_at + self.limits.cancel_deadline - time.perf_counter(), 0.0)

    async def consume(self) -> None:
        while True:
            pending: asyncio.Future[Annotated] | None = None
            if self.action_due():
                if self.plan.while_waiting:
                    # The read is under way (the engine is parked on whatever it awaits) when the action lands.
                    pending = asyncio.ensure_future(self.stream.__anext__())
                    for _ in range(3):
                        await asyncio.sleep(0)
                    if self.plan.action is Action.DROP:
                        # A client that goes away mid-read: its read is cancelled.
                        pending.cancel()
                        with contextlib.suppress(BaseException):
                            await pending
                elif not self.plan.read_after_abort and self.plan.action is not Action.DROP:
                    # A client reading on has asked for its next item when the stop lands.  Reads run as
                    # tasks under the watchdog, so the read is started first: started after the stop, it
                    # would run behind the abort the stop starts, turning every stop before the first
                    # read into AbortBeforeFirstReadLost's window.
                    pending = asyncio.ensure_future(self.stream.__anext__())
                if await self.act():
                    return
                if self.plan.read_after_abort:
                    # The adapter started the abort when the stop came; a few loop turns let it run first.
                    for _ in range(ABORT_FIRST_TURNS):
                        await asyncio.sleep(0)
            try:
                read = pending if pending is not None else self.stream.__anext__()
                item: Annotated = await within(read, self.budget(), "the stream")
            except StopAsyncIteration:
                self.run.ending = _ending_of(self.run.received)
                break
            except TimeoutError:
                self.run.ending = Ending.TIMED_OUT
                await self.stream.aclose()
                break
            self.run.received.append(kept_annotated(item))  # what judges it, not its payload


def _ending_of(received: list[Annotated]) -> Ending:
    if not received:
        return Ending.EXHAUSTED
    last = received[-1]
    if last.error is not None:
        return Ending.ERROR_ITEM
    if last.data is not None and last.data.get("finish_reason") is not None:
        return Ending.TERMINAL
    return Ending.EXHAUSTED
