"""SPIN on the raw engine adapter's Promela export agrees with the explorer, on the table and on a wrong one."""

from __future__ import annotations

from dataclasses import replace

from dynamo_backend_protocol.model.explore.promela_raw import raw_promela
from dynamo_backend_protocol.model.explore.raw_engine import explore_raw
from dynamo_backend_protocol.model.raw_engine import RAW_ABORT_IMMEDIATE, RAW_TABLE, RawEvent, RawPhase
from dynamo_backend_protocol.reference.spin import spin_check_raw
from optional_tools import require_commands


def test_the_raw_export_is_generated_from_the_table() -> None:
    """One guarded step per event the table allows in each combination of fields; a row removed is a step gone."""
    text = raw_promela()
    fewer = raw_promela(tuple(row for row in RAW_TABLE if row.trigger is not RawEvent.DROP))
    assert text.count(":: (phase ==") > fewer.count(":: (phase ==") > 0
    assert "ltl raw_abort_in_the_cancelling_step { [] !broke_raw_abort_in_the_cancelling_step }" in text


def test_spin_and_the_explorer_agree_that_a_deferred_raw_abort_breaks_raw_abort_immediate() -> None:
    """RAW-ABORT-IMMEDIATE: SPIN finds every invariant holding on the table, and on a table whose stop
    does not abort (a decode-style deferral the raw adapter does not have) it finds the same
    invariant broken that the explorer does."""
    require_commands("spin", "cc", install="apt-get install -y spin gcc")
    assert all(verdict.holds for verdict in spin_check_raw())
    wrong = tuple(
        replace(row, actions=()) if row.trigger is RawEvent.STOP and RawPhase.STREAMING in row.sources else row
        for row in RAW_TABLE
    )
    by_spin = {(v.rule, v.name) for v in spin_check_raw(wrong) if not v.holds}
    by_explorer = {(failed.rule, failed.name) for failed in explore_raw(wrong).violations()}
    assert (RAW_ABORT_IMMEDIATE, "raw_abort_in_the_cancelling_step") in by_spin
    assert by_spin == by_explorer
