"""The health-check probe path (from Dynamo 1.3.1): what a canary request gets.

When a worker's endpoint has been idle for the canary wait time, the runtime
sends the engine's own ``health_check_payload()`` (stamped ``_HEALTH_CHECK``)
through the same adapter as any request, and the answer decides the
endpoint's health (``/health`` on the system port: ready or notready).  What
the engine's stream does decides it, as data here; ``differential --probe``
plays each answer against Dynamo's worker.  Measured on 1.6.1 (spec section
15.3): a stream of data items is healthy, and so is one that ends with an
*error terminal chunk* (``finish_reason: "error: ..."``), which is still a
response; a stream that raises (an error item) makes the endpoint notready.
Pure.
"""

from __future__ import annotations

from dynamo_backend_protocol.model.vocabulary import Slug


class CanaryAnswer(Slug):
    """How the engine's stream answers a canary request."""

    TOKENS_THEN_TERMINAL = "tokens_then_terminal"
    """A token chunk, then a terminal chunk (``length``)."""
    ERROR_TERMINAL_CHUNK = "error_terminal_chunk"
    """A token chunk, then a terminal whose ``finish_reason`` is ``error: <message>`` (the string form)."""
    RAISES = "raises"
    """The stream raises before its first item (an error item reaches the runtime)."""


class EndpointHealth(Slug):
    READY = "ready"
    NOT_READY = "notready"


CANARY_HEALTH: dict[CanaryAnswer, EndpointHealth] = {
    CanaryAnswer.TOKENS_THEN_TERMINAL: EndpointHealth.READY,
    # The string form of an error is a data item: the canary got a response, so the endpoint stays ready.
    CanaryAnswer.ERROR_TERMINAL_CHUNK: EndpointHealth.READY,
    CanaryAnswer.RAISES: EndpointHealth.NOT_READY,
}
"""The endpoint's health once the canary has been answered this way."""
