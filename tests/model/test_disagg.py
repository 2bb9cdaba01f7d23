"""A decode request composed with its KV transfer: the deferral is what keeps
the transfer from being orphaned, and removing it shows the crash upstream hit."""

from __future__ import annotations

import pytest
from dynamo_backend_protocol.model import ActionKind, CompiledTable, ControlState, EventKind, Mode, parse_event
from dynamo_backend_protocol.model.disagg import (
    NO_ORPHANED_TRANSFER,
    TRANSFER_ENDS,
    DisaggEvent,
    DisaggState,
    TransferEvent,
    TransferPhase,
    disagg_step,
    initial_disagg_state,
)
from dynamo_backend_protocol.model.exceptions import NotEnabled
from dynamo_backend_protocol.model.explore import explore
from dynamo_backend_protocol.model.explore.disagg import explore_disagg
from test_model_mutations import Rows, mutate


def without_decode_deferral() -> Rows:
    """Decode treats a stop or kill before first-token like every other mode: abort at once."""
    rows = mutate(ControlState.STREAMING, EventKind.STOP, "decode, before first-token",
                  target=ControlState.ABORTED, actions=(ActionKind.CALL_ABORT,))
    return mutate(ControlState.STREAMING, EventKind.KILL, "decode, before first-token", rows,
                  target=ControlState.ABORTED, actions=(ActionKind.CALL_ABORT,))


def event_named(name: str) -> DisaggEvent:
    transfers = {ev.value: ev for ev in TransferEvent}
    return transfers[name] if name in transfers else parse_event(name)


def replay(table: CompiledTable, names: list[str]) -> DisaggState:
    state = initial_disagg_state(table)
    for name in names:
        state = disagg_step(table, state, event_named(name)).after
    return state


def test_the_shipped_table_never_orphans_the_transfer() -> None:
    """With the deferral in place every reachable composition holds every
    request invariant and the transfer's; the transfer adds states to decode."""
    report = explore_disagg()
    assert report.ok, [(r.rule, r.counterexample) for r in report.violations()]
    assert NO_ORPHANED_TRANSFER in {result.rule for result in report.invariants}
    assert report.states > explore(Mode.DECODE).states


def test_removing_the_decode_deferral_orphans_the_transfer() -> None:
    """DISAGG-NO-ORPHANED-TRANSFER: the shortest run is setup (the stream must
    exist before the transfer starts), transfer_started, stop (abort at once
    while the cache is arriving); replaying it orphans the transfer."""
    table = CompiledTable(without_decode_deferral())
    report = explore_disagg(table)
    [failure] = [result for result in report.violations() if result.rule == NO_ORPHANED_TRANSFER]
    assert failure.counterexample == ["setup", "transfer_started", "stop"]
    assert replay(CompiledTable(without_decode_deferral()), failure.counterexample).transfer is TransferPhase.ORPHANED


def test_no_first_token_before_the_transfer_completed() -> None:
    """The first token is computed from the transferred cache, so a token chunk
    is not offered until the transfer completed, and then it is."""
    table = CompiledTable()
    streaming = replay(table, ["setup", "transfer_started"])
    with pytest.raises(NotEnabled) as refused:
        disagg_step(table, streaming, parse_event("token_chunk"))
    assert refused.value.rule == NO_ORPHANED_TRANSFER
    completed = disagg_step(table, streaming, TransferEvent.COMPLETED).after
    assert disagg_step(table, completed, parse_event("token_chunk")).after.request.first_token


def test_the_transfer_starts_only_once_the_stream_exists() -> None:
    """Before setup there is no decode engine stream to pull the cache into."""
    table = CompiledTable()
    with pytest.raises(NotEnabled) as refused:
        disagg_step(table, initial_disagg_state(table), TransferEvent.STARTED)
    assert refused.value.rule == NO_ORPHANED_TRANSFER


def test_a_transfer_in_flight_ends_only_if_the_transport_does() -> None:
    """DISAGG-TRANSFER-ENDS holds under its fairness, and needs it: dropped, the transfer
    stays in flight for ever while the engine keeps streaming (the leaked KV blocks of
    ai-dynamo/dynamo PR #7489)."""
    [result] = [found for found in explore_disagg().liveness if found.rule == TRANSFER_ENDS]
    assert result.holds and result.needs == ["transfer-completes-or-fails"]
    lasso = result.without["transfer-completes-or-fails"]
    assert "transfer_started" in lasso.prefix
    assert not any(name.startswith("transfer_") for name in lasso.cycle)


def test_the_request_ends_with_its_transfer_without_assuming_the_transfer_ends() -> None:
    """DONE-EVENTUALLY and DECODE-WAIT-ENDS hold in the composition, and neither needs
    the transfer's fairness: a stream that ends never waits for the KV cache."""
    results = {found.rule: found for found in explore_disagg().liveness}
    for rule in ("DONE-EVENTUALLY", "DECODE-WAIT-ENDS"):
        assert results[rule].holds
        assert not {"transfer-starts", "transfer-completes-or-fails"} & set(results[rule].needs)
