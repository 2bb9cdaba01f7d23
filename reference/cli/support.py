"""Shared pieces of the subcommands: the usage error and mode options."""

from __future__ import annotations

import argparse
from typing import Any, TypeAlias

from dynamo_backend_protocol.model import DynamoError, Mode

Subparsers: TypeAlias = "argparse._SubParsersAction[Any]"
"""What each subcommand module's ``register`` receives."""


class UsageError(Exception):
    """Input the user can fix; the CLI prints it as one line and exits 2."""


def parse_mode(text: str) -> Mode:
    try:
        return Mode.parse(text)
    except DynamoError as error:
        raise UsageError(error.message) from None


def parse_modes(text: str | None) -> list[Mode]:
    """``None`` or ``all`` means every mode."""
    if text is None or text.strip().lower() == "all":
        return list(Mode)
    try:
        return [Mode.parse(text)]
    except DynamoError:
        valid = ", ".join(mode.value for mode in Mode)
        raise UsageError(f"--mode: unknown mode {text!r}; valid values: {valid}, all") from None


def add_mode_option(parser: argparse.ArgumentParser, *, allow_all: bool, default: str | None) -> None:
    choices = "agg|prefill|decode|encode" + ("|all" if allow_all else "")
    parser.add_argument("--mode", metavar=choices, default=default, help=f"disaggregation mode ({choices})")


MAX_REQUESTS = 8
"""Past this even the compiled explorer's space outgrows a laptop's memory."""


def request_count(text: str) -> int:
    """``--requests N``: how many concurrent requests share the engine, 1 to MAX_REQUESTS."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= count <= MAX_REQUESTS:
        raise argparse.ArgumentTypeError(f"between 1 and {MAX_REQUESTS}, not {count}")
    return count
