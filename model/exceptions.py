"""The package's one error hierarchy.

Every error this package raises on its own account derives from
:class:`ProtocolError`, so a caller can catch them all with one clause and
tell them from a bug (a ``TypeError``) or an engine's own failure.  An error
that refuses something because a rule says so carries that rule's ID in
``rule`` and names it in its message; an error about our own inputs or
tools (a faulty table, a search too large, an unreadable file) has no rule
of the protocol to name, and ``rule`` is then the rule of the model's own
soundness it breaks, or None.

:class:`DynamoError <dynamo_backend_protocol.model.errors.DynamoError>` is
not here: it is Dynamo's typed error as an engine raises it, a value the
protocol carries, not a refusal of ours.
"""

from __future__ import annotations

from dynamo_backend_protocol.model.rules import summary

TABLE_WELL_FORMED = "TABLE-WELL-FORMED"
"""The model's own soundness: in every state, each event has exactly one row or a prohibition."""


class ProtocolError(Exception):
    """Root of every error the package raises on its own account."""

    rule: str | None = None


class RuleRefusal(ProtocolError):
    """Something the protocol forbids, refused by the rule :attr:`rule` (named in the message)."""

    rule: str

    def __init__(self, message: str, rule: str) -> None:
        self.rule = rule
        super().__init__(f"{message} (rule {rule}: {summary(rule)})")


class ProtocolViolation(RuleRefusal):
    """An event a machine's table forbids in the current state.

    ``state`` and ``event`` are the machine's own values and ``where`` its control
    state as text; ``resume`` is where a monitor that keeps watching continues
    from when the prohibition says so (a forbidden *outcome* of a call still
    ends the call), else None.
    """

    def __init__(
        self, state: object, event: object, rule: str, where: str, message: str, resume: object = None
    ) -> None:
        self.state = state
        self.event = event
        self.where = where
        self.resume = resume
        super().__init__(message, rule)


class NotEnabled(RuleRefusal):
    """A composed machine does not offer this event here (a first token before the KV cache
    arrived, a cleanup while a request is in flight): the composition's rule says so."""


class TableError(ProtocolError):
    """A table itself is faulty: no row, or several rows, match a state and event."""

    rule: str = TABLE_WELL_FORMED
