"""``explain`` on the composed models: listing, narration and the mistakes a reader makes.

What the narration must say (who an event is for, the composed state before and
after, the rule, a refusal's reason) is what the issue asks of it; whether each
scenario's end is right is tests/model/test_composed_scenarios.py's job, and here
the CLI is only held to report that check truthfully.
"""

from __future__ import annotations

import pytest
from dynamo_backend_protocol.model.teach.composed_scenarios import COMPOSED_SCENARIOS, ComposedScenario, Machine
from dynamo_backend_protocol.model.teach.scenarios import SCENARIOS
from dynamo_backend_protocol.reference.cli import main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["explain", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def listed_names(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines() if line.strip() and not line.endswith(":")]


def test_list_shows_the_composed_scenarios_after_the_one_request_ones_marked_by_machine(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One list for a newcomer: every scenario, each composed one saying its composition."""
    code, out, _ = run_cli(capsys, "--list")
    assert code == 0
    assert listed_names(out) == [item.name for item in SCENARIOS] + [item.name for item in COMPOSED_SCENARIOS]
    for item in COMPOSED_SCENARIOS:
        [line] = [line for line in out.splitlines() if line.startswith(item.name + " ")]
        assert line.endswith(f"[{item.where()}]") and item.machine.value in line


@pytest.mark.parametrize(
    ("argv", "machine", "requests"),
    [(["--machine", "disagg"], Machine.DISAGG, None), (["--requests", "2"], Machine.ENGINE, 2)],
    ids=["disagg", "two-requests"],
)
def test_list_of_one_composition_shows_only_its_scenarios(
    capsys: pytest.CaptureFixture[str], argv: list[str], machine: Machine, requests: int | None
) -> None:
    """Someone studying the KV transfer, or two requests, is offered only those."""
    code, out, _ = run_cli(capsys, "--list", *argv)
    assert code == 0
    assert listed_names(out) == [
        item.name for item in COMPOSED_SCENARIOS
        if item.machine is machine and (requests is None or item.requests == requests)
    ]


@pytest.mark.parametrize("scenario", COMPOSED_SCENARIOS, ids=lambda item: item.name)
def test_every_composed_scenario_is_narrated_step_by_step_and_ends_as_expected(
    capsys: pytest.CaptureFixture[str], scenario: ComposedScenario
) -> None:
    """Each event gets a numbered paragraph naming whom it concerns, the state before
    and after, and the rule that decided or refused it; the end is checked against
    the scenario's stated expectation."""
    code, out, err = run_cli(capsys, scenario.name)
    assert code == 0, err
    paragraphs = out.split("\n\n")
    for number, token in enumerate(scenario.events, start=1):
        [paragraph] = [p for p in paragraphs if p.startswith(f"{number}. {token}  (")]
        assert "Decided by " in paragraph or "NOT OFFERED: " in paragraph or "NOT ALLOWED: " in paragraph
        assert "Before: " in paragraph or "Nothing moves: " in paragraph
    assert out.rstrip().endswith("This is the scenario's expected end.")


def test_a_stop_during_the_transfer_is_told_with_both_machines_and_their_rules(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The deferral's reason is the transfer: the narration shows the transfer phase
    beside the request state and names DISAGG-NO-ORPHANED-TRANSFER where it is upheld."""
    code, out, _ = run_cli(capsys, "--machine", "disagg", "--events", "setup,transfer_started,stop")
    assert code == 0
    stop = out.split("\n\n3. stop  (the request)\n", 1)[1]
    assert "Before: request Streaming, transfer in_flight." in stop
    assert "After: request CancelPending, transfer in_flight." in stop
    assert "Decided by DECODE-DEFER" in stop and "Also upholds DISAGG-NO-ORPHANED-TRANSFER" in stop


def test_engine_events_name_the_request_or_the_engine_and_bare_lifecycle_slugs_work(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """check --requests prints counterexamples with bare lifecycle slugs; pasted into
    explain they read as the engine's, exactly as with engine: written out."""
    _, prefixed, _ = run_cli(capsys, "--requests", "2", "--events", "engine:start_called,engine:start_ok,r2:setup")
    _, bare, _ = run_cli(capsys, "--requests", "2", "--events", "start_called,start_ok,r2:setup")
    assert prefixed == bare
    assert "\n3. r2:setup  (request r2)\n" in bare and "\n1. engine:start_called  (the engine)\n" in bare
    assert "This is r2's first step, so it is the engine's generate" in bare


def test_cleanup_under_a_live_request_is_refused_with_its_rule(capsys: pytest.CaptureFixture[str]) -> None:
    """ENGINE-CLEANUP-WAITS: the refusal says which request it waits for, and what is offered."""
    code, out, _ = run_cli(capsys, "--requests", "1", "--events", "start_called,start_ok,r1:setup,cleanup_called")
    assert code == 0
    refused = out.split("\n4. engine:cleanup_called  (the engine)\n", 1)[1]
    assert "NOT OFFERED: cleanup waits while r1 is in flight (rule ENGINE-CLEANUP-WAITS" in refused
    assert "Offered here: engine: drain; r1: " in refused


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["--machine", "disagg", "--events", "setup,transfer_begun"], "--events item 2: 'transfer_begun'"),
        (["--requests", "2", "--events", "engine:start_called,r3:setup"], "--events item 2: 'r3:setup'"),
        (["--requests", "2", "--events", "setup"], "--events item 1: 'setup': a request event needs its request"),
        (["--requests", "2", "--events", "r1:setup,,r2:setup"], "--events item 2: empty"),
        (["--requests", "0", "--events", "r1:setup"], "between 1 and"),
        (["--machine", "disagg", "--requests", "2", "--events", "setup"], "does not take --machine disagg"),
        (["--machine", "disagg", "--mode", "agg", "--events", "setup"], "use --mode decode"),
        (["disagg-happy-path", "--mode", "agg"], "told in mode decode only"),
        (["disagg-happy-path", "--requests", "2"], "drop --machine and --requests"),
        (["clean-completion", "--machine", "disagg"], "tells one request"),
        (["engine-shutdown-waits", "--frames", "out"], "composed narrations have no frames"),
        (["--list", "--requests", "5"], "no engine scenario has 5 requests"),
    ],
    ids=["disagg-bad-token", "no-such-request", "unaddressed", "empty-item", "zero-requests", "both-machines",
         "disagg-wrong-mode", "scenario-wrong-mode", "scenario-with-requests", "single-with-machine",
         "frames", "list-no-such-count"],
)
def test_bad_composed_input_is_one_line_naming_what_is_wrong(
    capsys: pytest.CaptureFixture[str], argv: list[str], complaint: str
) -> None:
    """Exit 2, nothing on stdout, one line on stderr that names the bad token and its position."""
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert complaint in err


def test_an_abort_the_stop_itself_fires_is_not_told_as_the_first_token_it_waited_for(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without the deferral a stop aborts at once; saying a first token released it would teach the
    opposite of what happened, while the real deferral still says so at its first token."""
    _, counter_example, _ = run_cli(capsys, "disagg-without-deferral")
    _, deferred, _ = run_cli(capsys, "disagg-stop-during-transfer")
    released = "first-token signal the deferred abort was waiting for"
    assert released not in counter_example
    assert released in deferred
