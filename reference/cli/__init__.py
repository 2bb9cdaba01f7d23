"""The ``dynamo-backend-protocol`` command: one subcommand per module of this package.

Only the subcommand that runs is imported (the others are listed from :mod:`.commands`), so
``--version`` and ``COMMAND --help`` start at once.  Whatever happens, the command ends with one
of four exit codes: 0 done (and, for a checker, all is well), 1 the checker found a problem,
2 a usage error or an output that could not be written (one line on standard error), 130
interrupted; never with a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import sys
from collections.abc import Sequence
from typing import Protocol, TextIO

from dynamo_backend_protocol.model.exceptions import ProtocolError
from dynamo_backend_protocol.reference.cli.commands import COMMANDS
from dynamo_backend_protocol.reference.cli.support import (
    PROG,
    GuardedOutput,
    OutputFailed,
    Parser,
    Subparsers,
    UsageError,
    deferred_failures,
    print_error,
)

SUBCOMMANDS = tuple(COMMANDS)
"""Each name ``n`` is the module ``cli.n`` with ``register(subparsers)``."""
EXIT_CODES = (0, 1, 2, 130)


class _CommandModule(Protocol):
    def register(self, subparsers: Subparsers) -> None: ...


class _ParserExit(ProtocolError):
    """argparse finished on its own (``--help``, ``--version``) with this status."""

    def __init__(self, status: int) -> None:
        self.status = status


class _TopParser(Parser):
    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        # Raised rather than SystemExit, so that a SystemExit reaching main is known to come from
        # code the command ran (an engine's sys.exit), not from argparse.
        if message:
            sys.stderr.write(message)
        raise _ParserExit(status)


class _Version(argparse.Action):
    """``--version``, its version looked up only when asked: importlib.metadata costs every start otherwise."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(f"{parser.prog} {distribution_version()}")
        parser.exit()


def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names: its first word that is not an option (the top level has no
    option that takes a value)."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: the subcommand it names is imported and registered in full; the others
    are listed by name and summary.  Without ``argv`` every subcommand is registered in full."""
    parser = _TopParser(
        prog=PROG,
        description="Formal model, reference adapter and conformance kit for the dynamo-backend-common protocol.",
        epilog=f"Run '{PROG} COMMAND --help' for a command's options, examples and exit status. "
        "Colour is used on a terminal only, and never with NO_COLOR set.",
    )
    parser.add_argument("--version", action=_Version, help="show the installed version and exit")
    parser.set_defaults(run=lambda _args: _print_usage(parser))
    subparsers: Subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_TopParser)
    wanted = None if argv is None else chosen_command(argv)
    for name, command in COMMANDS.items():
        if argv is not None and name != wanted:
            subparsers.add_parser(name, help=command.summary)
            continue
        module: _CommandModule = importlib.import_module(f"{__name__}.{name}")
        module.register(subparsers)
        registered: argparse.ArgumentParser = subparsers.choices[name]
        registered.description = registered.description or f"{command.summary[0].upper()}{command.summary[1:]}."
        registered.epilog = registered.epilog or command.epilog(name)
    return parser


def distribution_version() -> str:
    """The installed distribution's version: pyproject.toml is the one source of it."""
    from importlib import metadata

    try:
        return metadata.version("dynamo-backend-protocol")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _print_usage(parser: argparse.ArgumentParser) -> int:
    """The bare command: what it does and its subcommands, then exit 2 as for any incomplete usage."""
    parser.print_help(sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    command = chosen_command(words)
    real_stdout = sys.stdout
    sys.stdout = GuardedOutput(_escaping(real_stdout), "standard output")
    try:
        code = _run(words, command)
        sys.stdout.flush()
    except UsageError as error:
        print_error(command, str(error))
        code = 2
    except OutputFailed as failed:
        print_error(command, str(failed))
        code = 2
    except BrokenPipeError:
        # The reader has had enough (``| head``): stop quietly, as a filter does.
        _silence(real_stdout)
        code = 1
    except KeyboardInterrupt:
        # The one line a Ctrl-C leaves: the user knows why, so no "error:" shape.
        with contextlib.suppress(OSError):
            print("interrupted", file=sys.stderr, flush=True)
        code = 130
    except SystemExit as exit:
        # argparse's own exits are _ParserExit; this came from code the command ran (an engine).
        print_error(command, f"stopped: code the command ran called sys.exit({exit.code!r})")
        code = 2
    except BaseException as error:  # the last resort: one line, never a traceback
        print_error(command, f"internal error: {_describe(error)}")
        code = 2
    finally:
        sys.stdout = real_stdout
    failures = deferred_failures()
    for failure in failures:
        print_error(command, str(failure))
    if failures and code in (0, 1):
        code = 2
    return code if code in EXIT_CODES else 2


def _run(words: list[str], command: str | None) -> int:
    try:
        args = build_parser(words).parse_args(words)
    except _ParserExit as finished:
        return 0 if finished.status == 0 else 2
    code: int = args.run(args)
    return code


def _escaping(stream: TextIO) -> TextIO:
    """Standard output that escapes what its encoding cannot show, rather than failing halfway."""
    if isinstance(stream, io.TextIOWrapper):
        with contextlib.suppress(ValueError, OSError):
            stream.reconfigure(errors="backslashreplace")
    return stream


def _silence(stream: object) -> None:
    """After EPIPE: point standard output at /dev/null, so the interpreter's last flush cannot fail loudly."""
    try:
        fileno = stream.fileno()  # type: ignore[attr-defined]
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fileno)
        os.close(null)
    except (AttributeError, OSError, ValueError):
        pass


def _describe(error: BaseException) -> str:
    """``Type: message (file:line)``, where the message itself may be what raises."""
    try:
        message = str(error)
    except Exception:  # an exception whose str() raises still gets its line
        message = "(its message cannot be printed)"
    where = ""
    trace = error.__traceback__
    while trace is not None and trace.tb_next is not None:
        trace = trace.tb_next
    if trace is not None:
        where = f" (at {os.path.basename(trace.tb_frame.f_code.co_filename)}:{trace.tb_lineno})"
    return f"{type(error).__name__}: {message}{where}" if message else f"{type(error).__name__}{where}"


if __name__ == "__main__":
    sys.exit(main())
