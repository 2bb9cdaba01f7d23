"""The engine-side rules, judged on one request driven through the adapter.

Each judge looks at a :class:`RequestRun` (what the client saw) and its
:class:`RequestLog` (what reached the engine and what the engine yielded)
and returns a :class:`Finding` naming the failure and saying what to fix,
or None.  The deterministic checks each apply one judge to a scenario made
for it; the property-based phase applies all of them, plus the model's
invariants, to every request of every drawn schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dynamo_backend_protocol.model import Mode, Step
from dynamo_backend_protocol.model.chunks import ChunkProblem, classify_item
from dynamo_backend_protocol.model.invariants import STATE_INVARIANTS, STEP_INVARIANTS
from dynamo_backend_protocol.model.stopped import AfterStop, Ending, StoppedStream, classify_stopped
from dynamo_backend_protocol.reference.conformance.checks import Failure
from dynamo_backend_protocol.reference.conformance.drive import Action, RequestRun


@dataclass(frozen=True)
class Finding:
    rule: str
    """A failure name, or a model rule ID for a broken model invariant."""
    reason: str


Judge = Callable[[RequestRun, Mode], Finding | None]


def stopped_stream(run: RequestRun) -> StoppedStream:
    """What the kit's client and recorder saw of a stopped request, for the model's :func:`classify_stopped`."""
    log = run.log
    stopped_at = run.stop_seq()
    if log is None or stopped_at is None:
        return StoppedStream(run.ending, run.finish_reason(), len(run.received), _at_limit(run))
    quiet_since = max((call.returned_seq or call.seq for call in log.aborts), default=stopped_at)
    return StoppedStream(
        run.ending, run.finish_reason(), log.items_after(stopped_at), _at_limit(run), log.items_after(quiet_since),
        any(call.returned_seq is None for call in log.aborts),
    )


def _at_limit(run: RequestRun) -> bool:
    return run.tokens_received() >= run.plan.max_tokens


def after_stop(run: RequestRun, mode: Mode) -> AfterStop:
    """How a stopped stream of the kit's ended (:func:`classify_stopped`)."""
    return classify_stopped(stopped_stream(run), mode)


def kill_handled_worse(killed: AfterStop, stopped: AfterStop) -> bool:
    """KillNotHandledLikeStop: a kill not honoured where a stop at the same point was."""
    return not killed.honoured and stopped.honoured


def abort_before_first_read_lost(early: AfterStop, read_at_once: AfterStop) -> bool:
    """AbortBeforeFirstReadLost: a stop whose abort() came before the first read was not honoured (nor ended
    otherwise) where a stop read at once was; an engine that honours no stop at all is the other checks' bug."""
    return not early.honoured and early is not AfterStop.OTHER and read_at_once.honoured


def describe_after_stop(run: RequestRun, deadline: float | None = None) -> str:
    """What the engine did once stopped: items after the stop, what abort() did, how the stream ended."""
    log = run.log
    signal = "context.kill()" if run.plan.action is Action.KILL else "context.stop_generating()"
    stopped_at = run.stop_seq()
    after = log.items_after(stopped_at) if log is not None and stopped_at is not None else None
    yielded = f"the engine yielded {after} more item(s)" if after is not None else "nothing reached the engine"
    aborts = log.describe_aborts() if log is not None else "abort() was not called"
    if run.ending is Ending.TIMED_OUT:
        within = f"{deadline:g} s after the stop" if deadline is not None else "by the deadline"
        how = f"the stream had not ended {within}"
    else:
        how = f"the stream {run.describe_end()}"
    return f"{_who(run)}: after {signal} {aborts}; {yielded}, and {how}"


def _who(run: RequestRun) -> str:
    return f"request {run.request_id!r} ({run.plan.describe()})"


def setup_succeeded(run: RequestRun, mode: Mode) -> Finding | None:
    if run.ending is not Ending.SETUP_FAILED:
        return None
    return Finding(Failure.GENERATE_FAILED, f"{_who(run)}: generate raised {run.setup_error}")


def chunks_well_formed(run: RequestRun, mode: Mode) -> Finding | None:
    """Every item the engine yielded is a chunk the protocol understands, in this mode."""
    if run.log is None:
        return None
    for position, seen in enumerate(run.log.items, start=1):
        verdict = classify_item(seen.item, position, mode)
        if isinstance(verdict, ChunkProblem):
            return Finding(Failure.MALFORMED_CHUNK, f"{_who(run)}: {verdict.message}")
    return None


def no_error_items(run: RequestRun, mode: Mode) -> Finding | None:
    for item in run.received:
        if item.error is not None and not isinstance(item.error, ChunkProblem):
            return Finding(Failure.STREAM_YIELDED_ERROR, f"{_who(run)}: the stream yielded an error: {item.error}")
    return None


def ends_with_terminal(run: RequestRun, mode: Mode) -> Finding | None:
    if run.ending is not Ending.EXHAUSTED:
        return None
    return Finding(
        Failure.NO_TERMINAL_CHUNK,
        f"{_who(run)}: the stream {run.describe_end()}; end every stream with a chunk that has a finish_reason "
        "('cancelled' after a stop or kill)",
    )


def ends_in_time_after_cancel(run: RequestRun, mode: Mode) -> Finding | None:
    """Through the adapter, so after abort(): a stream left waiting is AbortedStreamNotEnded, one that kept
    going MidStreamCancellationIgnored (upstream's CancellationNotObserved judges the raw stream, unaborted)."""
    if not run.cancelled_by_client or run.ending is not Ending.TIMED_OUT:
        return None
    outcome = after_stop(run, mode)
    failure = Failure.ABORTED_STREAM_NOT_ENDED if outcome is AfterStop.STRANDED else (
        Failure.MID_STREAM_CANCELLATION_IGNORED)
    return Finding(failure, f"{describe_after_stop(run)} (it {outcome.value})")


def abort_at_most_once(run: RequestRun, mode: Mode) -> Finding | None:
    aborts = run.log.aborts if run.log is not None else []
    if len(aborts) <= 1:
        return None
    by_engine = sum(1 for call in aborts if call.caller == "engine")
    hint = (
        f"{by_engine} of them by the engine's own code (self.abort): leave abort to the runtime"
        if by_engine
        else "all from the runtime"
    )
    return Finding(Failure.ABORT_CALLED_TWICE, f"{_who(run)}: engine.abort ran {len(aborts)} times, {hint}")


def no_abort_without_cancel(run: RequestRun, mode: Mode) -> Finding | None:
    log = run.log
    if run.cancelled_by_client or log is None or not log.aborts:
        return None
    self_stopped = any(signal in ("stop", "kill") for _, signal in log.signals)
    if self_stopped:
        cause = (
            "the client never cancelled it, yet its context was stopped: the engine called "
            "context.stop_generating() (or kill()) itself; just end the stream with a terminal chunk instead"
        )
    elif any(call.caller == "engine" for call in log.aborts):
        cause = "the engine's own code called self.abort"
    else:
        cause = "the client never cancelled it"
    return Finding(Failure.ABORT_ON_CLEAN_COMPLETION, f"{_who(run)}: engine.abort was called although {cause}")


def no_abort_before_first_token(run: RequestRun, mode: Mode) -> Finding | None:
    if mode is not Mode.DECODE or run.log is None or not run.log.aborts:
        return None
    first_token = run.log.first_token_seq()
    early = [call for call in run.log.aborts if first_token is None or call.seq < first_token]
    if not early:
        return None
    by = "the engine's own code (self.abort)" if early[0].caller == "engine" else "the runtime"
    return Finding(
        Failure.ABORT_BEFORE_FIRST_TOKEN,
        f"{_who(run)}: engine.abort reached the engine before its first token, called by {by}; in decode mode "
        "an early abort orphans the prefill worker's KV transfer: leave abort to the runtime, which defers it",
    )


def dropped_stream_closed(run: RequestRun, mode: Mode) -> Finding | None:
    if not run.dropped_by_client or run.log is None or not run.log.generator_still_open():
        return None
    return Finding(
        Failure.DROPPED_STREAM_NOT_CLOSED,
        f"{_who(run)}: after the client dropped the stream the engine's generator is still suspended: "
        "its finally never ran",
    )


ENGINE_RULES: tuple[Judge, ...] = (
    setup_succeeded,
    chunks_well_formed,
    no_error_items,
    ends_with_terminal,
    ends_in_time_after_cancel,
    abort_at_most_once,
    no_abort_without_cancel,
    no_abort_before_first_token,
    dropped_stream_closed,
)


def judge_all(run: RequestRun, mode: Mode) -> list[Finding]:
    """Every engine-side rule and every model invariant, on one request."""
    findings = [finding for judge in ENGINE_RULES if (finding := judge(run, mode)) is not None]
    findings += model_findings(run)
    return findings


def model_findings(run: RequestRun) -> list[Finding]:
    """The model's state and step invariants over the request's trace."""
    return [Finding(rule, f"{_who(run)}: {text}") for rule, text in invariant_breaks(run.trace)]


def invariant_breaks(trace: Sequence[Step]) -> list[tuple[str, str]]:
    breaks: list[tuple[str, str]] = []
    for index, step in enumerate(trace, start=1):
        for state_invariant in STATE_INVARIANTS:
            if not state_invariant.holds(step.after):
                breaks.append((state_invariant.rule, f"model invariant {state_invariant.name} broken after step "
                                                     f"{index} ({step.event.name}): {step.after.describe()}"))
        for step_invariant in STEP_INVARIANTS:
            if not step_invariant.holds(step):
                breaks.append((step_invariant.rule, f"model invariant {step_invariant.name} broken at step {index} "
                                                    f"({step.event.name} in {step.before.describe()})"))
    return breaks

