"""The README is the first thing a user runs; its examples must stay true."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_quickstart_is_two_commands_install_and_run_then_test() -> None:
    """The quickstart promises exactly two commands: the main job, then the whole suite."""
    quickstart = README.read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = [line for block in re.findall(r"```sh\n(.*?)```", quickstart, re.DOTALL) for line in block.splitlines()]
    assert commands == [
        "pip install . && dynamo-backend-protocol conform",
        "pip install '.[test]' && python -m pytest",
    ]


def test_python_examples_run_and_print_what_they_promise() -> None:
    """Every Python example in the README runs as written."""
    blocks = _blocks("python")
    assert blocks, "the README should show the adapter in use"
    for block in blocks:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(block, str(README), "exec"), {"__name__": "readme_example"})
        # The adapter example streams one token chunk and a terminal, then the trace.
        if "EngineAdapter" in block:
            lines = printed.getvalue().splitlines()
            assert "'token_ids': [11]" in lines[0]
            assert "'finish_reason': 'length'" in lines[1]
            assert lines[2] == str(["setup", "token_chunk", "terminal:length+tokens"])
