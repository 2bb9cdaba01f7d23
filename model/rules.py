"""Rule IDs of the protocol.  ``spec/protocol.md`` states each rule in full;
here each ID has a one-line summary so errors and reports can name it."""

from __future__ import annotations

RULES: dict[str, str] = {
    # The request stream.
    "STREAM-SETUP-FAILURE": "a setup failure is returned as that error: no stream, no abort",
    "STREAM-FORWARD-ORDER": "every engine item before the terminal is forwarded once, in order",
    "STREAM-TERMINAL-LAST": "nothing is forwarded or read after a terminal item",
    "STREAM-CANCELLED-TERMINAL": "the engine's terminal 'cancelled' chunk after a stop is forwarded",
    "STREAM-EVENT-ORDER": "engine items only arrive on a live stream; setup happens once, first",
    "STREAM-SETUP": "once the engine's stream exists the adapter watches the request for cancellation",
    "STREAM-END-WITHOUT-TERMINAL": "a stream that ends without a terminal ends the request; nothing is invented for it",
    "STREAM-DROP": "a drop of a live request stops reading the engine's stream and ends the request",
    "ACTIONS-IN-ORDER": "a step performs each action at most once, in the spec's order",
    "IGNORED-CHANGES-NOTHING": "an ignored event changes no state and performs no action",
    # Cancellation and abort.
    "CANCEL-OBSERVED": "stop and kill are observed once (a kill is also a stop); later ones change nothing",
    "ABORT-ONCE": "engine.abort is called at most once per request",
    "ABORT-NEEDS-CANCEL": "engine.abort is only called after stop or kill was observed on a live request",
    "ABORT-IMMEDIATE": "abort fires in the step that observes cancellation, unless decode mode defers it",
    "ABORT-EVENTUALLY": "a cancelled live request is eventually aborted or Done, if a first token or the end comes",
    "RUNTIME-DISCONNECT-KILLS": (
        "a remote client that goes away reaches the worker as a kill: it is cancellation, not a silent drop"
    ),
    # Decode-mode deferral.
    "DECODE-DEFER": "in decode mode abort never fires before first-token",
    "DECODE-FIRST-TOKEN": "first-token is a chunk with tokens or a side-channel notice, nothing else",
    "DECODE-DROP": "a deferred abort is dropped when the stream ends before first-token",
    "DECODE-TIE": "first-token and stream-end in the same step resolve to abort",
    "DISAGG-NO-ORPHANED-TRANSFER": "no abort while the decode request's KV transfer is in flight",
    "DISAGG-TRANSFER-ENDS": (
        "a KV transfer in flight eventually completes, fails or is orphaned, if the network does not hang"
    ),
    "DECODE-WAIT-ENDS": "a deferred abort is eventually fired or dropped, if a first token or the stream's end comes",
    # Request teardown.
    "WATCH-RELEASED": "a finished request holds no cancellation watch",
    "DONE-ABSORBING": "Done is final: nothing leaves it and nothing happens in it",
    "DONE-WHEN-ENDED": "a request is Done exactly when its stream ended, in the step of the event that ended it",
    "DONE-REACHABLE": "from every state some event sequence reaches Done",
    "DONE-EVENTUALLY": "every request eventually reaches Done, if setup returns and the engine's stream ends",
    "TABLE-WELL-FORMED": "every event the protocol allows in a state matches exactly one row of the table",
    # Faults (spec section 14).
    "FAULT-ENGINE-RAISES": (
        "an engine exception at setup, mid-stream or in an item's accessors ends the request with one typed error"
    ),
    "FAULT-INTERRUPT": "a BaseException passing through the adapter propagates unchanged, and the request still ends",
    "FAULT-CLEANUP-BOUNDED": "a raising or overrunning abort or stream close is abandoned at its bound and counted",
    "FAULT-SINK-ISOLATED": "a failing trace sink is counted and logged once; the stream does not depend on it",
    "FAULT-SIGNAL-ANY-THREAD": (
        "a signal from any thread is heard before the next stream-ending event; the signaller never sees an error"
    ),
    "FAULT-TRACE-INPUT": (
        "trace answers any input with a report and an exit code, never a traceback, in memory bounded by open requests"
    ),
    "FAULT-STREAM-LOOP": (
        "a response stream read under another event loop than the one it was set up on is refused at the first read"
    ),
    "FAULT-KIT-BOUNDED": (
        "every bound of the conformance kit holds whatever the engine does with its cancellation or the event loop"
    ),
    "FAULT-KIT-ENGINE-FAILS": (
        "anything an engine raises is a named failure of the check that met it, or one line and exit 2 while building"
    ),
    "FAULT-KIT-OPTIONS": "every option value conform accepts runs to a verdict within its bounds, or is a usage error",
    "FAULT-KIT-MEMORY": "the kit keeps what judges each item it sees, not the item's payload",
    # Engine lifecycle.
    "LIFECYCLE-START-FIRST": (
        "start is called once, first; generate, abort and drain are served only after it succeeded, before cleanup"
    ),
    "LIFECYCLE-CLEANUP-AFTER-START": (
        "cleanup runs after a start, successful or not, never concurrently with start or itself, and succeeds"
    ),
    "LIFECYCLE-CLEANUP-IDEMPOTENT": "a second cleanup is a no-op that succeeds",
    "LIFECYCLE-NO-CLEANUP-WITHOUT-START": (
        "cleanup is not required when start was never invoked, and must succeed if called"
    ),
    # The raw engine adapter (section 15.2; from Dynamo 1.3.1).
    "RAW-FORWARD": "every JSON object a raw engine yields is forwarded once, in order, until its generator ends",
    "RAW-END-IS-TERMINAL": "a raw request ends when the engine's generator ends or raises; no item is a terminal",
    "RAW-ABORT-IMMEDIATE": (
        "a stop or kill on a raw request aborts once, in the step that observes it, in every mode: no deferral"
    ),
    "RAW-DROP": "a raw stream that goes away without a stop or kill ends the request and is never aborted",
    "RAW-SETUP-FAILURE": "a raw engine's setup failure is returned as that error: no stream, no abort",
    # The first-token notifier's publish of prefill completion (section 15.4; from Dynamo 1.5.1).
    "FIRST-TOKEN-PUBLISH": (
        "prefill completion is published once per request, at its first first-token signal, whatever its cancellation"
    ),
    "FIRST-TOKEN-PUBLISH-WHERE": (
        "only agg and decode workers with a publisher publish, for requests carrying a DP rank, from 1.5.1"
    ),
    "FIRST-TOKEN-PUBLISH-NEEDS-TOKEN": "a request whose stream ends before any first-token signal publishes nothing",
    # N requests sharing one engine (section 12.1).
    "ENGINE-CLEANUP-WAITS": (
        "the Worker begins cleanup only once no request on the engine is in flight (generate called, not Done)"
    ),
    "ENGINE-NO-LIVE-AFTER-CLEANUP": "no request is in flight on an engine whose cleanup has begun",
    "ENGINE-NO-ABORT-AFTER-CLEANUP": "no request calls engine.abort once the engine's cleanup has begun",
    "ENGINE-CLEANUP-EVENTUALLY": (
        "once start has returned, the engine's cleanup eventually begins, if requests end and the owner calls it"
    ),
}


def summary(rule_id: str) -> str:
    return RULES.get(rule_id, "(unknown rule)")
