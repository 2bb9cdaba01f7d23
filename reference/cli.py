"""The ``dynamo-backend-protocol`` command: one subcommand per module ``cli_<name>``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol

from dynamo_backend_protocol.reference.cli_support import Subparsers, UsageError

SUBCOMMANDS = ("check", "conform", "diagram", "explain", "trace", "bench")
"""Each name ``n`` is the module ``cli_n`` with ``register(subparsers)``."""


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
    subparsers: Subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in SUBCOMMANDS:
        module: _CommandModule = importlib.import_module(f"dynamo_backend_protocol.reference.cli_{name}")
        module.register(subparsers)
    return parser


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
