"""The ``dynamo-backend-protocol`` command: one subcommand per module of this package."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib import metadata
from typing import Protocol

from dynamo_backend_protocol.reference.cli.support import Subparsers, UsageError

SUBCOMMANDS = ("check", "mutate", "export", "conform", "diagram", "explain", "teach", "trace", "bench", "differential")
"""Each name ``n`` is the module ``cli.n`` with ``register(subparsers)``."""


class _CommandModule(Protocol):
    def register(self, subparsers: Subparsers) -> None: ...


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse prints usage plus a message; one clear line is friendlier.
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dynamo-backend-protocol",
        description="Formal model, reference adapter and conformance kit for the dynamo-backend-common protocol.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {distribution_version()}")
    parser.set_defaults(run=lambda _args: _print_usage(parser))
    subparsers: Subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in SUBCOMMANDS:
        module: _CommandModule = importlib.import_module(f"{__name__}.{name}")
        module.register(subparsers)
    return parser


def distribution_version() -> str:
    """The installed distribution's version: pyproject.toml is the one source of it."""
    try:
        return metadata.version("dynamo-backend-protocol")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _print_usage(parser: argparse.ArgumentParser) -> int:
    """The bare command: what it does and its subcommands, then exit 2 as for any incomplete usage."""
    parser.print_help(sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        code: int = args.run(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
