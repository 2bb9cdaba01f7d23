"""Reading one request's engine stream: what each item, raise or end does to the request.

The adapter reads; :class:`StreamReader` decides.  For every item the engine
yields, the adapter makes one call, :meth:`StreamReader.read`: the item is
classified (:func:`~.chunks.classify_item`), the request's machine steps on the
event, and the actions come back for the adapter to perform; the error a
forward-error action delivers is :attr:`StreamReader.error`.  The stream
raising (:meth:`StreamReader.raised`, by the fault table of :mod:`.faults`)
and ending (:meth:`StreamReader.ended`) are one call each too.

Before any event that ends the stream the reader calls ``hear_signals``, the
adapter's way of firing the signals the context already shows: a stop that the
engine acted on (it yielded a cancelled terminal) is then in the trace before
the terminal, so the model's view of the request is never later than the engine's.

**The compiled common case.**  Nearly every item of a healthy stream is a plain
``dict`` holding one non-negative ``int`` token, alone or with an index of 0,
read in a state whose token step only forwards and stays put.  :meth:`read`
settles exactly that: one identity test that the machine is in the state whose
token step it learned when that step was first taken through the table, then a
handful of type tests; it appends that step and returns
:data:`~.machine.FORWARD_ONLY`.  For those items this is the verdict
:func:`~.chunks.classify_item` and :meth:`~.machine.CompiledTable.step` give
(tests/adapter/test_fast_path_agreement.py compares a plain dict, which may take
it, with a dict subclass, which never does).  Every other item, and every item
in any other state, goes through them.

Two choices in it were measured (thread CPU time of the check alone, 61
interleaved rounds, 2026-12-07): taking the one token by unpacking the list,
rather than measuring it and indexing, and testing the index by identity with
0 (CPython keeps one object for each small int, however it was made), rather
than by its type and sign, made the check about a tenth cheaper.  Unpacking
raises for a list of another size, so after the first such list a reader
measures its lists instead; an index other than 0 takes the full
classification.  What the whole call costs per chunk is the ``read`` rung of
``bench --profile``.
"""

from __future__ import annotations

from collections.abc import Callable

from dynamo_backend_protocol.model.chunks import ERROR, TOKEN_CHUNK, classify_item, unreadable_item
from dynamo_backend_protocol.model.errors import DynamoError
from dynamo_backend_protocol.model.faults import ITEM_UNREADABLE, stream_error, stream_fault
from dynamo_backend_protocol.model.machine import FORWARD_ONLY, RequestMachine, Step
from dynamo_backend_protocol.model.vocabulary import ActionKind, Event, EventKind, event

Actions = tuple[ActionKind, ...]
END = event(EventKind.END)
STOP_ONLY: Actions = (ActionKind.STOP_READING,)
_FIRST_CHOICE = 0


class StreamReader:
    """The model's side of reading one request's engine stream."""

    __slots__ = (
        "_cancellation",
        "_hear_signals",
        "_history",
        "_keeping",
        "_token_state",
        "_token_step",
        "_unpacking",
        "_validate",
        "error",
        "machine",
        "position",
    )

    def __init__(
        self,
        machine: RequestMachine,
        *,
        validate: bool,
        cancellation: type[BaseException],
        hear_signals: Callable[[], object],
    ) -> None:
        """``cancellation`` is the exception the I/O framework cancels a task with
        (asyncio's ``CancelledError``): the model names no framework."""
        self.machine = machine
        self.error: DynamoError | None = None
        """The error the last forward-error action delivers."""
        self.position = 0
        """Items read so far; a malformed item is named by its position."""
        self._validate = validate
        self._cancellation = cancellation
        self._hear_signals = hear_signals
        self._keeping = machine.keeps_history
        self._history = machine.history
        self._token_state: object = None
        self._token_step: Step | None = None
        self._unpacking = True

    def read(self, item: object) -> Actions:
        """The actions for one item the engine yielded."""
        self.position += 1
        try:
            try:
                if self.machine.state is self._token_state and type(item) is dict:
                    token_ids = item["token_ids"]
                    if type(token_ids) is list:
                        if self._unpacking:
                            [token] = token_ids
                        elif len(token_ids) == 1:
                            token = token_ids[0]
                        else:
                            token = None
                        if type(token) is int and token >= 0:
                            keys = len(item)
                            if keys == 1 or (keys == 2 and item["index"] is _FIRST_CHOICE):
                                if self._keeping:
                                    self._history.append(self._token_step)  # type: ignore[arg-type]
                                return FORWARD_ONLY
            except ValueError:
                self._unpacking = False  # a list of another size: measure lists from now on
            except KeyError:
                pass  # a field of the common shape is missing: not the common shape
            ev = self._classify(item)
        except Exception as exc:
            # Looking at the item raised: even a plain dict runs the ``==`` of a key whose
            # hash is the field name's, and a hostile mapping's accessors may raise.
            self.error = unreadable_item(self.position, exc)
            ev = ITEM_UNREADABLE
        return self._fire(ev)

    def _classify(self, item: object) -> Event:
        verdict = classify_item(item, self.position, self.machine.mode, self._validate)
        if type(verdict) is Event:
            if verdict is ERROR:
                self.error = item  # type: ignore[assignment]
            return verdict
        self.error = verdict  # type: ignore[assignment]
        return ERROR

    def raised(self, exc: BaseException, consumer_cancelling: bool) -> Actions | None:
        """The actions for the engine's stream raising ``exc`` while being read; None when
        ``exc`` must go on unchanged (the consumer's own cancellation, an interrupt)."""
        response = stream_fault(exc, self._cancellation, consumer_cancelling)
        if response is None or response.propagates:
            return None
        self.error = stream_error(exc, self._cancellation)
        return self._fire(response.event)

    def ended(self) -> Actions:
        """The actions for the engine's stream ending without a terminal item."""
        return self._fire(END)

    def _fire(self, ev: Event) -> Actions:
        machine = self.machine
        if machine.over:
            # The request ended while this read was pending (the consumer dropped it from
            # another task): the item is neither fired nor forwarded, and reading stops.
            return STOP_ONLY
        if ev.ends_stream:
            self._hear_signals()
        before = machine.state
        step = machine.advance(ev)
        if ev is TOKEN_CHUNK and step.actions is FORWARD_ONLY and step.after is before:
            # This state's token step only forwards and stays put: the common case may take it.
            self._token_state, self._token_step = before, step
        return step.actions
