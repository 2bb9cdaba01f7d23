"""The ``mutate`` command: the mutation score of check as figures a user reads."""

from __future__ import annotations

import json

import pytest
from dynamo_backend_protocol.reference.cli import main
from dynamo_backend_protocol.reference.cli import mutate as cli_mutate
from shipped_score import shipped_score as score


@pytest.fixture(autouse=True)
def computed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The score takes seconds; these tests read the one the model tests computed."""
    monkeypatch.setattr(cli_mutate, "mutation_score", score)


def test_mutate_prints_mutants_kills_and_equivalent_survivors_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    """The first line carries the figures; every survivor is listed by name as
    equivalent; no blind spot, so exit 0."""
    code = main(["mutate"])
    out = capsys.readouterr().out
    assert code == 0
    first = out.splitlines()[0]
    result = score()
    assert first == (
        f"{len(result.verdicts)} mutants of the request table; check alone kills {len(result.killed)}; "
        f"{len(result.equivalent)} survivors shown equivalent; 0 blind spots"
    )
    for verdict in result.equivalent:
        assert f"  {verdict.mutant.name}\n" in out + "\n"
    assert "BLIND SPOTS" not in out


def test_mutate_json_has_the_figures_and_each_survivor(capsys: pytest.CaptureFixture[str]) -> None:
    """The JSON form adds up: kills plus equivalent survivors are all the mutants,
    and each survivor says how many state pairs were compared."""
    code = main(["mutate", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["blind_spots"] == 0
    assert data["killed"] + data["equivalent"] == data["mutants"]
    assert len(data["survivors"]) == data["equivalent"]
    assert all(item["equivalent"] and item["state_pairs_compared"] > 0 for item in data["survivors"])
    assert all(item["rules"] for item in data["kills"])
