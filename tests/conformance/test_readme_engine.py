"""The README's example engine, the one a newcomer copies, passes ``conform``."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from dynamo_backend_protocol.reference import run_conformance

README = Path(__file__).resolve().parents[2] / "README.md"


def contract_example() -> str:
    """The one Python block of the section headed "The engine contract", at whatever heading level the README
    gives it; the section runs to the next heading of the same or a higher level."""
    text = README.read_text()
    heading = re.search(r"^(#{1,6}) The engine contract[ \t]*$", text, flags=re.MULTILINE)
    assert heading is not None, "README.md has a section headed 'The engine contract'"
    level = len(heading[1])
    following = re.compile(rf"^#{{1,{level}}} ", flags=re.MULTILINE).search(text, heading.end())
    section = text[heading.end():following.start() if following is not None else len(text)]
    blocks: list[str] = re.findall(r"^```python\n(.*?)^```", section, flags=re.DOTALL | re.MULTILINE)
    assert len(blocks) == 1, "the engine contract section shows one example engine"
    return blocks[0]


def test_the_readme_example_engine_conforms() -> None:
    """Every check applicable in agg mode passes on the README's engine (none failed, none skipped for a
    failure): an example that fails the kit teaches the wrong engine."""
    namespace: dict[str, Any] = {"__name__": "readme_engine"}
    exec(compile(contract_example(), str(README), "exec"), namespace)
    report = asyncio.run(run_conformance(namespace["MyEngine"], examples=5))
    assert report.failures() == []
    assert all("mode" in result.reason for result in report.checks if result.skipped)
