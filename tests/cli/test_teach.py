"""``teach``: the interactive page is self-contained and says only what the model says."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest
from dynamo_backend_protocol.model import FORBIDDEN, Mode, parse_event
from dynamo_backend_protocol.model.exceptions import ProtocolViolation
from dynamo_backend_protocol.model.machine import DEFAULT_TABLE
from dynamo_backend_protocol.reference.cli import main
from optional_tools import require_commands

SPEC = Path(__file__).resolve().parents[2] / "spec" / "protocol.md"


def write_page(tmp_path: Path, *argv: str) -> Path:
    require_commands("dot", install="apt-get install graphviz")
    target = tmp_path / "protocol.html"
    assert main(["teach", "-o", str(target), "--spec", str(SPEC), *argv]) == 0
    return target


def embedded(page: Path) -> dict[str, Any]:
    [data] = re.findall(r'<script type="application/json" id="protocol-data">(.*?)</script>', page.read_text(), re.S)
    loaded: dict[str, Any] = json.loads(data)
    return loaded


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["teach", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_page_loads_nothing_from_elsewhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Opened from disk on a machine without network, the page is all there is:
    no external scripts, styles, fonts or requests."""
    text = write_page(tmp_path).read_text()
    assert "<link" not in text and "@import" not in text and "url(" not in text
    assert not re.findall(r"\ssrc\s*=", text)
    assert all(target.startswith("#") for target in re.findall(r'\shref\s*=\s*"([^"]*)"', text))
    assert "fetch(" not in text and "XMLHttpRequest" not in text
    assert "wrote " in capsys.readouterr().out


def test_every_move_on_the_page_is_the_models_step(tmp_path: Path) -> None:
    """The page only navigates its data; that data must be the machine itself:
    for every state and event, the same target, actions and rule as the table,
    and for a forbidden event the rule that forbids it."""
    data = embedded(write_page(tmp_path))
    for machine in (m for m in data["machines"] if m["key"] != "lifecycle"):
        mode = Mode.parse(machine["key"])
        frontier, seen = [(0, DEFAULT_TABLE.initial(mode))], {0}
        while frontier:
            index, state = frontier.pop()
            page_state = machine["states"][index]
            assert page_state["control"] == state.control.value
            assert page_state["vars"]["aborts"] == state.aborts
            for move in page_state["moves"]:
                event = parse_event(machine["events"][move["e"]])
                try:
                    step = DEFAULT_TABLE.step(state, event)
                except ProtocolViolation:
                    assert move["to"] is None
                    assert move["r"][0] == FORBIDDEN[(state.control, event.kind)]
                    continue
                assert (move["r"][0], move["a"]) == (step.rule, [a.value for a in step.actions])
                if move["to"] not in seen:
                    seen.add(move["to"])
                    frontier.append((move["to"], step.after))
        assert seen == set(range(len(machine["states"])))


def test_each_step_lights_a_drawn_element(tmp_path: Path) -> None:
    """Every allowed move names an element of its machine's diagram to highlight."""
    data = embedded(write_page(tmp_path))
    for machine in data["machines"]:
        ids = {html.unescape(found) for found in re.findall(r'<g id="([^"]+)"', machine["svg"])}
        for state in machine["states"]:
            assert state["node"] in ids
            for move in state["moves"]:
                assert (move["el"] in ids) if move["to"] is not None else move["el"] is None


def test_rules_link_to_their_text_from_the_spec(tmp_path: Path) -> None:
    """A reader who clicks a rule reads the rule itself, not only its one-line summary."""
    data = embedded(write_page(tmp_path))
    defer = " ".join(data["rules"]["DECODE-DEFER"]["section"])
    assert "In decode mode the adapter must not call `engine.abort` before first-token." in defer
    assert data["specLink"].endswith("spec/protocol.md")


def test_one_mode_gives_that_mode_and_the_lifecycle(tmp_path: Path) -> None:
    data = embedded(write_page(tmp_path, "--mode", "decode"))
    assert [machine["key"] for machine in data["machines"]] == ["decode", "lifecycle"]
    [decode] = [m for m in data["machines"] if m["key"] == "decode"]
    assert "aggregated-cancel" not in {s["name"] for s in decode["scenarios"]}


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["-o", "{dir}/protocol.txt"], "give a path ending in .html"),
        (["-o", "{dir}/protocol.html", "--mode", "bogus"], "unknown mode 'bogus'"),
        (["-o", "{dir}/missing/protocol.html"], "does not exist"),
        (["-o", "{dir}/protocol.html", "--spec", "{dir}/nope.md"], "no such file"),
    ],
    ids=["not-html", "bad-mode", "no-directory", "no-spec"],
)
def test_bad_options_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], complaint: str
) -> None:
    code, out, err = run_cli(capsys, *(arg.format(dir=tmp_path) for arg in argv))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and complaint in err


def test_without_dot_the_page_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The page draws its diagrams with dot; without it the user learns how to get it."""
    monkeypatch.setenv("PATH", str(tmp_path))
    code, _, err = run_cli(capsys, "-o", str(tmp_path / "protocol.html"))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "apt-get install graphviz" in err
    assert not (tmp_path / "protocol.html").exists()
