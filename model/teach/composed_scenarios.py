"""The canonical scenarios of the composed models, as data.

Each scenario teaches one behaviour of a decode request with its KV transfer
(``disagg``) or of requests sharing one engine (``engine``), written in the
syntax of :mod:`.composed_events`.  What must be true at its end is stated
here from the protocol notes, the upstream adapter and the bugs the issue
names (ai-dynamo/dynamo PR #8624, PR #7489, #13993), not by running the
model, so the tests can hold the model to it.  A counter-example scenario
names the fault it is told with; without the fault its expectation fails.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from dynamo_backend_protocol.model.disagg import NO_ORPHANED_TRANSFER, TransferPhase
from dynamo_backend_protocol.model.engine import CLEANUP_WAITS, NO_ABORT_AFTER_CLEANUP, NO_LIVE_AFTER_CLEANUP
from dynamo_backend_protocol.model.lifecycle import START_FIRST, Phase
from dynamo_backend_protocol.model.vocabulary import ControlState, Mode, Slug

_DONE = ControlState.DONE


class Machine(Slug):
    DISAGG = "disagg"
    """A decode request with its prefill peer's KV transfer (``--machine disagg``)."""
    ENGINE = "engine"
    """N requests sharing one engine with its lifecycle (``--requests N``)."""


class PlantedFault(Slug):
    """A fault planted in the model to tell what it would do without a rule."""

    WITHOUT_DECODE_DEFERRAL = "without-decode-deferral"
    """Decode aborts at once on stop or kill, like every other mode."""
    CLEANUP_DOES_NOT_WAIT = "cleanup-does-not-wait"
    """The Worker begins cleanup while requests are in flight (no ENGINE-CLEANUP-WAITS)."""


@dataclass(frozen=True)
class Expected:
    """The end a scenario must reach."""

    requests: tuple[ControlState | None, ...]
    """Each request's final control state; None: it never reached the engine (generate not called)."""
    aborts_at: tuple[int, ...] = ()
    """The 1-based steps that call engine.abort."""
    refused: Mapping[int, str] = field(default_factory=dict)
    """Steps the composition refuses, each with the rule that refuses it."""
    broken: frozenset[str] = frozenset()
    """Rule IDs of the invariants the run breaks (only a counter-example breaks any)."""
    transfer: TransferPhase | None = None
    """disagg: the transfer's final phase."""
    engine: Phase | None = None
    """engine: the lifecycle's final phase."""


@dataclass(frozen=True)
class ComposedScenario:
    name: str
    machine: Machine
    title: str
    description: str
    events: tuple[str, ...]
    expected: Expected
    requests: int = 1
    mode: Mode = Mode.DECODE
    fault: PlantedFault | None = None

    def where(self) -> str:
        """The composition, as ``--list`` marks it."""
        told = f"{self.machine.value}, {self.mode.value}"
        if self.machine is Machine.ENGINE:
            told += f", {self.requests} request" + ("s" if self.requests > 1 else "")
        if self.fault is not None:
            told += f", counter-example: {self.fault.value}"
        return told


_ENGINE_UP = ("engine:start_called", "engine:start_ok")
_ENGINE_DOWN = ("engine:cleanup_called", "engine:cleanup_ok")

COMPOSED_SCENARIOS: tuple[ComposedScenario, ...] = (
    ComposedScenario(
        name="disagg-happy-path",
        machine=Machine.DISAGG,
        title="The KV transfer completes, then the first token",
        description=(
            "A decode request's stream is set up while its prefill peer's KV blocks are still on the "
            "way. The transfer starts, completes, and only then can the decode engine compute the first "
            "token from the transferred cache; the stream ends with a 'stop' terminal. No abort."
        ),
        events=("setup", "transfer_started", "transfer_completed", "token_chunk", "terminal:stop+tokens"),
        expected=Expected(requests=(_DONE,), transfer=TransferPhase.COMPLETED),
    ),
    ComposedScenario(
        name="disagg-stop-during-transfer",
        machine=Machine.DISAGG,
        title="A stop while the transfer is in flight: the abort waits for the first token",
        description=(
            "The client stops a decode request before its first token, while the KV transfer is in "
            "flight. Aborting now would pull the memory out from under the transfer (vLLM's engine core "
            "crashed on exactly this, PR #8624), so the abort is deferred; the transfer completes, the "
            "first token chunk releases the abort, and the engine's 'cancelled' terminal ends the request."
        ),
        events=("setup", "transfer_started", "stop", "transfer_completed", "token_chunk", "terminal:cancelled"),
        expected=Expected(requests=(_DONE,), aborts_at=(5,), transfer=TransferPhase.COMPLETED),
    ),
    ComposedScenario(
        name="disagg-stop-then-stream-ends",
        machine=Machine.DISAGG,
        title="A stop during the transfer, and the stream ends before any token",
        description=(
            "Stopped while the transfer is in flight, the request waits with its abort deferred. The "
            "engine notices the stop and ends its stream with a token-less 'cancelled' terminal before "
            "the transfer has even completed: the deferred abort is dropped, the transfer is never "
            "orphaned, and freeing its blocks is the engine's own job inside the stream."
        ),
        events=("setup", "transfer_started", "stop", "terminal:cancelled"),
        expected=Expected(requests=(_DONE,), transfer=TransferPhase.IN_FLIGHT),
    ),
    ComposedScenario(
        name="disagg-disconnect-during-transfer",
        machine=Machine.DISAGG,
        title="The client disconnects during the transfer: a kill, deferred like a stop",
        description=(
            "The remote client goes away while the KV transfer is in flight; the runtime turns that into "
            "a kill, and in decode mode its abort is deferred like a stop's. The transfer completes, the "
            "engine ends with a token-less 'cancelled' terminal, and abort is never called: releasing the "
            "transferred blocks must happen in the engine's stream (a disconnect during the transfer "
            "leaked them until a hang, PR #7489)."
        ),
        events=("setup", "transfer_started", "disconnect", "transfer_completed", "terminal:cancelled"),
        expected=Expected(requests=(_DONE,), transfer=TransferPhase.COMPLETED),
    ),
    ComposedScenario(
        name="disagg-transfer-failed",
        machine=Machine.DISAGG,
        title="The KV transfer fails: no first token, the stream ends in an error",
        description=(
            "The transfer starts and fails. Without the cache the decode engine cannot compute a first "
            "token, so a token chunk is not possible now; the engine's stream ends with a typed error, "
            "which is forwarded. Nothing was cancelled, so nothing is aborted."
        ),
        events=("setup", "transfer_started", "transfer_failed", "token_chunk", "error"),
        expected=Expected(
            requests=(_DONE,), refused={4: NO_ORPHANED_TRANSFER}, transfer=TransferPhase.FAILED
        ),
    ),
    ComposedScenario(
        name="disagg-without-deferral",
        machine=Machine.DISAGG,
        title="Counter-example: without the decode deferral the transfer is orphaned",
        description=(
            "The same stop during the transfer, told with a request table whose decode mode aborts at "
            "once like every other mode. The abort fires while the cache is still arriving and the "
            "transfer is orphaned: the crash of PR #8624, and the shortest counterexample check finds "
            "when the deferral rows are removed."
        ),
        events=("setup", "transfer_started", "stop"),
        expected=Expected(
            requests=(ControlState.ABORTED,),
            aborts_at=(3,),
            broken=frozenset({NO_ORPHANED_TRANSFER, "DECODE-DEFER"}),
            transfer=TransferPhase.ORPHANED,
        ),
        fault=PlantedFault.WITHOUT_DECODE_DEFERRAL,
    ),
    ComposedScenario(
        name="engine-two-requests",
        machine=Machine.ENGINE,
        title="Two requests interleaved on one engine, one of them stopped",
        description=(
            "The engine starts; two requests arrive and their events interleave. r2 is stopped: outside "
            "decode its abort fires at once and only r2 is aborted, while r1 completes untouched. The "
            "engine then drains and cleans up with nothing in flight."
        ),
        events=(
            *_ENGINE_UP, "r1:setup", "r2:setup", "r1:token_chunk", "r2:stop", "r1:terminal:stop+tokens",
            "r2:terminal:cancelled", "engine:drain", *_ENGINE_DOWN,
        ),
        expected=Expected(requests=(_DONE, _DONE), aborts_at=(6,), engine=Phase.CLEANED_UP),
        requests=2,
        mode=Mode.AGGREGATED,
    ),
    ComposedScenario(
        name="engine-shutdown-waits",
        machine=Machine.ENGINE,
        title="Shutdown waits for the request still in flight",
        description=(
            "r2 finishes, the engine drains, and cleanup is asked for while r1 is still streaming. "
            "Cleanup waits (ENGINE-CLEANUP-WAITS): it is refused until r1's stream has ended, then runs "
            "and succeeds, and no request is left live on a cleaned-up engine."
        ),
        events=(
            *_ENGINE_UP, "r1:setup", "r2:setup", "r2:terminal:stop+tokens", "engine:drain",
            "engine:cleanup_called", "r1:token_chunk", "r1:terminal:length+tokens", *_ENGINE_DOWN,
        ),
        expected=Expected(requests=(_DONE, _DONE), refused={7: CLEANUP_WAITS}, engine=Phase.CLEANED_UP),
        requests=2,
        mode=Mode.AGGREGATED,
    ),
    ComposedScenario(
        name="engine-abort-during-shutdown",
        machine=Machine.ENGINE,
        title="Requests stopped by a shutdown are aborted before cleanup begins",
        description=(
            "The engine drains with two requests in flight and both are stopped, as a shutdown does. "
            "Their aborts reach an engine that still serves abort while draining; cleanup waits until "
            "both cancelled streams have ended, so no abort reaches a cleaned-up engine (the race of "
            "#13993, where the abort's EngineShutdown error was lost, cannot happen)."
        ),
        events=(
            *_ENGINE_UP, "r1:setup", "r2:setup", "r1:token_chunk", "engine:drain", "r1:stop", "r2:stop",
            "engine:cleanup_called", "r2:terminal:cancelled", "r1:terminal:cancelled", *_ENGINE_DOWN,
        ),
        expected=Expected(
            requests=(_DONE, _DONE), aborts_at=(7, 8), refused={9: CLEANUP_WAITS}, engine=Phase.CLEANED_UP
        ),
        requests=2,
        mode=Mode.AGGREGATED,
    ),
    ComposedScenario(
        name="engine-shutdown-race",
        machine=Machine.ENGINE,
        title="Counter-example: cleanup that does not wait races the abort (#13993)",
        description=(
            "Told with a Worker that begins cleanup while a request is in flight. Cleanup starts under "
            "r1's live stream, and r1's stop then calls abort on an engine already cleaning up: the "
            "shutdown race of ai-dynamo/dynamo #13993, and check's shortest counterexample without "
            "ENGINE-CLEANUP-WAITS."
        ),
        events=(*_ENGINE_UP, "r1:setup", "engine:cleanup_called", "r1:stop"),
        expected=Expected(
            requests=(ControlState.ABORTED,),
            aborts_at=(5,),
            broken=frozenset({CLEANUP_WAITS, NO_LIVE_AFTER_CLEANUP, NO_ABORT_AFTER_CLEANUP}),
            engine=Phase.CLEANING_UP,
        ),
        mode=Mode.AGGREGATED,
        fault=PlantedFault.CLEANUP_DOES_NOT_WAIT,
    ),
    ComposedScenario(
        name="engine-generate-before-start",
        machine=Machine.ENGINE,
        title="No generate before start has succeeded, nor once the engine drains",
        description=(
            "A request's first step is the engine's generate, which only a running engine serves: r1 "
            "is refused before start and while start runs, served once start returned; after drain "
            "began, r2 is refused in its turn and never reaches the engine."
        ),
        events=(
            "r1:setup", "engine:start_called", "r1:setup", "engine:start_ok", "r1:setup",
            "r1:terminal:stop+tokens", "engine:drain", "r2:setup", *_ENGINE_DOWN,
        ),
        expected=Expected(
            requests=(_DONE, None),
            refused={1: START_FIRST, 3: START_FIRST, 8: START_FIRST},
            engine=Phase.CLEANED_UP,
        ),
        requests=2,
        mode=Mode.AGGREGATED,
    ),
    ComposedScenario(
        name="engine-start-failed",
        machine=Machine.ENGINE,
        title="start raised: generate is refused, cleanup still runs",
        description=(
            "The engine's start raises. It never serves a request, so r1's generate is refused; the "
            "Worker still calls cleanup on the partial state, which must succeed, and a second start "
            "is not allowed."
        ),
        events=(
            "engine:start_called", "engine:start_raised", "r1:setup", "engine:start_called", *_ENGINE_DOWN,
        ),
        expected=Expected(
            requests=(None,), refused={3: START_FIRST, 4: START_FIRST}, engine=Phase.CLEANED_UP
        ),
        mode=Mode.AGGREGATED,
    ),
)

_BY_NAME = {item.name: item for item in COMPOSED_SCENARIOS}


def composed_scenario(name: str) -> ComposedScenario | None:
    return _BY_NAME.get(name.strip().lower())


def expected_text(item: ComposedScenario) -> str:
    """The expected end in one sentence, as ``explain`` prints it before the narration."""
    expected = item.expected
    if item.machine is Machine.DISAGG:
        [request] = expected.requests
        parts = [f"request {_control(request)}", f"transfer {expected.transfer}"]
    else:
        ends = ", ".join(f"r{index + 1} {_control(end)}" for index, end in enumerate(expected.requests))
        parts = [f"engine {expected.engine}", ends]
    steps = ", ".join(map(str, expected.aborts_at))
    parts.append(f"engine.abort at step {steps}" if steps else "engine.abort never called")
    if expected.refused:
        parts.append("refused: " + ", ".join(f"step {n} ({rule})" for n, rule in sorted(expected.refused.items())))
    if expected.broken:
        parts.append("breaks " + ", ".join(sorted(expected.broken)))
    return "; ".join(parts) + "."


def _control(end: ControlState | None) -> str:
    return "never reaches the engine" if end is None else end.value
