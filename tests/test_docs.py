"""The README and the guides are what a newcomer runs first.

What they show must exist, and what they quote must say where it came from.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
GUIDES = sorted((ROOT / "docs").glob("*.md"))
DOCS = [README, *GUIDES]
COMMAND = "dynamo-backend-protocol"
README_LIMIT = 10_000

# A figure is a number with a unit of time, memory or count a command measured.
FIGURE = re.compile(r"\b\d[\d,.]*\s?(?:ns|µs|ms|s|MiB|GiB|MB|KiB|states)\b")
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _shell_lines(text: str) -> list[str]:
    """The commands of every ``sh`` block, a command continued with a backslash joined into one line."""
    blocks = re.findall(r"```sh\n(.*?)```", text, re.DOTALL)
    return [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]


def _inline_commands(text: str) -> list[str]:
    return [span for span in re.findall(r"`([^`\n]+)`", text) if span.startswith(COMMAND + " ")]


def _shown_commands() -> list[tuple[str, str]]:
    """Every ``dynamo-backend-protocol ...`` invocation the docs show, with the file it is in."""
    shown: list[tuple[str, str]] = []
    for path in DOCS:
        text = _text(path)
        for line in [*_shell_lines(text), *_inline_commands(text)]:
            for part in re.split(r"&&|\|", line.split("#", 1)[0]):
                part = part.strip()
                if part.startswith(COMMAND + " ") or part == COMMAND:
                    shown.append((path.name, part))
    return shown


@cache
def _help(subcommand: str) -> str:
    args = [sys.executable, "-m", "dynamo_backend_protocol", *([subcommand] if subcommand else []), "--help"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{' '.join(args[2:])} failed: {done.stderr.strip()}"
    return done.stdout


def _lists(help_text: str, option: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", help_text) is not None


def _options(words: list[str]) -> list[str]:
    options = []
    for word in words:
        # A quoted value with a space ("--engine-args '--a b'") is an argument, as argparse reads it.
        if word.startswith("-") and " " not in word and not re.fullmatch(r"-\d.*", word):
            options.append(word.split("=", 1)[0])
    return options


def test_readme_is_a_five_minute_read() -> None:
    """The README stays short: the long material lives in the guides it links."""
    assert len(README.read_bytes()) < README_LIMIT


def test_every_guide_is_linked_from_the_readme() -> None:
    """A guide nobody can find from the README does not exist for a newcomer."""
    readme = _text(README)
    unlinked = [guide.name for guide in GUIDES if f"docs/{guide.name}" not in readme]
    assert not unlinked


def test_every_relative_link_in_the_docs_resolves() -> None:
    """A link to a file that moved is a dead end for a reader."""
    dead = []
    for path in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", _text(path)):
            if "://" in target:
                continue
            if not (path.parent / target).exists():
                dead.append(f"{path.name}: {target}")
    assert not dead


def test_the_docs_show_commands() -> None:
    """The guard below would pass vacuously if the extraction found nothing."""
    assert len(_shown_commands()) >= 20


@pytest.mark.parametrize(("where", "line"), _shown_commands(), ids=lambda value: str(value)[:60])
def test_every_command_and_option_the_docs_show_exists(where: str, line: str) -> None:
    """Each subcommand and option a guide shows is in that command's ``--help``."""
    words = shlex.split(line)[1:]
    subcommand = words[0] if words and not words[0].startswith("-") else ""
    listed = _help(subcommand)
    missing = [option for option in _options(words) if not _lists(listed, option)]
    assert not missing, f"{where}: `{line}` shows options that `{COMMAND} {subcommand} --help` does not list"


def test_every_figure_quoted_names_its_command_and_date() -> None:
    """A measured figure is only worth quoting with the command that produced it and when it ran.

    Figures come in tables in the guides; each table must follow, within its
    section, a line naming a ``dynamo-backend-protocol`` command (or the
    ``pytest`` command for the suite's time) and a date.
    """
    unsourced = []
    for path in DOCS:
        for section in re.split(r"(?m)^#+ ", _text(path)):
            tables = [line for line in section.splitlines() if line.startswith("|") and FIGURE.search(line)]
            if not tables:
                continue
            named = re.search(rf"`(?:{COMMAND}|python -m pytest|pytest)[^`]*`", section)
            if not (named and DATE.search(section)):
                unsourced.append(f"{path.name}: {tables[0][:60]}")
    assert not unsourced
