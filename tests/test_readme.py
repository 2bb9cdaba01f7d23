"""The README and the guides are the first things a user runs; their examples must stay true."""

from __future__ import annotations

import ast
import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]


def _blocks(language: str) -> list[tuple[Path, str]]:
    return [(path, block) for path in DOCS
            for block in re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.DOTALL)]


def _awaits_at_top_level(block: str) -> bool:
    try:
        compile(block, "<example>", "exec")
    except SyntaxError as error:
        return "'await' outside function" in str(error)
    return False


def test_quickstart_is_two_commands_install_and_run_then_test() -> None:
    """The quickstart promises exactly two commands: the main job, then the whole suite."""
    quickstart = README.read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = [line for block in re.findall(r"```sh\n(.*?)```", quickstart, re.DOTALL) for line in block.splitlines()]
    assert commands == [
        "pip install . && dynamo-backend-protocol conform",
        "pip install '.[test]' && python -m pytest",
    ]


def test_python_examples_run_and_print_what_they_promise() -> None:
    """Every Python example in the README and the guides runs as written."""
    blocks = _blocks("python")
    assert any("EngineAdapter" in block for _, block in blocks), "the docs should show the adapter in use"
    for path, block in blocks:
        if _awaits_at_top_level(block):
            # A deployment snippet (awaiting Dynamo's Worker): valid Python, shown, not run here.
            compile(block, str(path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
            continue
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(block, str(path), "exec"), {"__name__": "readme_example"})
        # The adapter example streams one token chunk and a terminal, then the trace.
        if "EngineAdapter" in block:
            lines = printed.getvalue().splitlines()
            assert "'token_ids': [11]" in lines[0]
            assert "'finish_reason': 'length'" in lines[1]
            assert lines[2] == str(["setup", "token_chunk", "terminal:length+tokens"])
