"""The check catalogue a user reads (docs/checks.md, ``conform --list-checks``) is the kit's own, complete."""

from __future__ import annotations

from pathlib import Path

import pytest
from dynamo_backend_protocol.reference import ConformanceCheck, cli
from dynamo_backend_protocol.reference.conformance.catalogue import catalogue_markdown

DOCS = Path(__file__).resolve().parents[2] / "docs" / "checks.md"


def test_the_docs_table_is_the_kits_catalogue() -> None:
    """Regenerate the table between the markers with catalogue_markdown() when a check changes."""
    text = DOCS.read_text(encoding="utf-8")
    table = text.split("<!-- checks:start -->\n", 1)[1].split("\n<!-- checks:end -->", 1)[0]
    assert table == catalogue_markdown()


def test_list_checks_names_every_check_with_its_kit_meaning_and_fix(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["conform", "--list-checks"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for check in ConformanceCheck:
        header = next(i for i, line in enumerate(lines) if line.split()[:1] == [str(check)])
        assert "upstream's kit" in lines[header] or "as Dynamo's runtime drives the engine" in lines[header]
        assert lines[header + 1].startswith("    means: ")
        assert any(line.startswith("    fix: ") for line in lines[header + 2 : header + 5])
    assert "StartFailed" in out and "AbortBeforeFirstReadLost" in out
