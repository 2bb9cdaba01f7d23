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
    # Cancellation and abort.
    "CANCEL-OBSERVED": "stop and kill are observed once (a kill is also a stop); later ones change nothing",
    "ABORT-ONCE": "engine.abort is called at most once per request",
    "ABORT-NEEDS-CANCEL": "engine.abort is only called after stop or kill was observed on a live request",
    "ABORT-IMMEDIATE": "abort fires in the step that observes cancellation, unless decode mode defers it",
    "RUNTIME-DISCONNECT-KILLS": (
        "a remote client that goes away reaches the worker as a kill: it is cancellation, not a silent drop"
    ),
    # Decode-mode deferral.
    "DECODE-DEFER": "in decode mode abort never fires before first-token",
    "DECODE-FIRST-TOKEN": "first-token is a chunk with tokens or a side-channel notice, nothing else",
    "DECODE-DROP": "a deferred abort is dropped when the stream ends before first-token",
    "DECODE-TIE": "first-token and stream-end in the same step resolve to abort",
    # Request teardown.
    "WATCH-RELEASED": "a finished request holds no cancellation watch",
    "DONE-ABSORBING": "Done is final: nothing leaves it and nothing happens in it",
    "DONE-REACHABLE": "from every state some event sequence reaches Done",
    "TABLE-WELL-FORMED": "every event the protocol allows in a state matches exactly one row of the table",
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
}


def summary(rule_id: str) -> str:
    return RULES.get(rule_id, "(unknown rule)")
