"""Shared pieces of the subcommands: the usage error, the help layout, mode options, colour and safe output.

Kept light on purpose: the command imports this module before it knows which subcommand runs, so
anything heavy (the model, rich) is imported inside the function that needs it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import textwrap
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any, TypeAlias

from dynamo_backend_protocol.model.exceptions import ProtocolError

if TYPE_CHECKING:
    from dynamo_backend_protocol.model import Mode

PROG = "dynamo-backend-protocol"

Subparsers: TypeAlias = "argparse._SubParsersAction[Any]"
"""What each subcommand module's ``register`` receives."""


class UsageError(ProtocolError):
    """Input the user can fix; the CLI prints it as one line and exits 2."""


class OutputFailed(ProtocolError):
    """Writing the command's output failed (a full disk, a closed device); one line and exit 2."""

    def __init__(self, where: str, error: OSError) -> None:
        self.where = where
        super().__init__(f"cannot write {where}: {error.strerror or error}")


# ---------------------------------------------------------------------------------------------- help layout


class HelpFormatter(argparse.HelpFormatter):
    """argparse's layout, except that option help never breaks inside a word or at a hyphen
    (``--disaggregation-mode`` stays whole), and description and epilog paragraphs whose lines are
    indented (examples, exit codes) are kept line for line."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False, break_long_words=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = re.split(r"\n\s*\n", text.strip("\n"))
        shown = []
        for paragraph in paragraphs:
            lines = paragraph.splitlines()
            if any(line.startswith(" ") for line in lines[1:]):
                shown.append("\n".join(indent + line for line in lines))
            else:
                shown.append(textwrap.fill(" ".join(paragraph.split()), width, initial_indent=indent,
                                           subsequent_indent=indent, break_on_hyphens=False,
                                           break_long_words=False))
        return "\n\n".join(shown)


_EXPECTED_ONE = re.compile(r"argument (?P<option>-[^/:\s]+)(?:/\S+)?: expected one argument")


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (raised as :class:`UsageError`) and whose help
    keeps words whole."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse prints usage plus a message; one clear line is friendlier.
        found = _EXPECTED_ONE.match(message)
        if found:
            option = found["option"]
            message += f" (a value that starts with '-' is written {option}=VALUE, e.g. {option}=\"--flag x\")"
        raise UsageError(message)


# ---------------------------------------------------------------------------------------------- modes


def parse_mode(text: str) -> Mode:
    from dynamo_backend_protocol.model import DynamoError, Mode

    try:
        return Mode.parse(text)
    except DynamoError as error:
        raise UsageError(error.message) from None


def parse_modes(text: str | None) -> list[Mode]:
    """``None`` or ``all`` means every mode."""
    from dynamo_backend_protocol.model import DynamoError, Mode

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


def absolute_path(text: str) -> str:
    """An argparse ``type`` for a file the command writes while user code runs: resolved against the
    directory the command was started in, whatever directory the engine changes to when imported."""
    return text if text == "-" else os.path.abspath(text)


def writable_file(option: str, path: str) -> str:
    """Checked before any work: ``path`` can be written as a file (not a directory, in a directory
    that exists and may be written), so a bad ``-o`` costs the user nothing."""
    where = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a directory; give a file name inside it")
    if not os.path.isdir(where):
        raise UsageError(f"{option} {path}: directory {where} does not exist")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise UsageError(f"{option} {path}: not writable")
    if not os.path.exists(path) and not os.access(where, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: directory {where} is not writable")
    return path


def read_text_file(option: str, path: str) -> str:
    """The UTF-8 text of a file the user names, or one line saying why it is not one."""
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a directory, not a file")
    if not os.path.exists(path):
        raise UsageError(f"{option} {path}: no such file")
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError as error:
        raise UsageError(f"{option} {path}: cannot read it: {error.strerror or error}") from None
    if b"\x00" in data:
        raise UsageError(f"{option} {path}: not a text file (it holds NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(f"{option} {path}: not UTF-8 text (byte {error.start} is {data[error.start]:#04x})") from None


# ---------------------------------------------------------------------------------------------- colour


def colour_wanted(stream: IO[str]) -> bool:
    """Colour only on a terminal, and never with ``NO_COLOR`` set (https://no-color.org) or ``TERM=dumb``."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


_BAD_WORDS = (
    r"\b(?:VIOLATED|DIVERGES?|MALFORMED|MISSED|FAILED|FAIL|BLIND SPOTS|TRACE DOES NOT CONFORM|"
    r"PROPERTIES VIOLATED|INVARIANTS VIOLATED|SOME TARGETS MISSED)\b"
)
_GOOD_WORDS = (
    r"(?<![\w-])(?:holds|conforms|trace conforms|all targets met|all properties hold|all invariants hold)(?![\w-])"
)


def emit(text: str, stream: IO[str] | None = None) -> None:
    """Print a report: verdict words coloured on a terminal (red for a failure, green for a pass),
    the plain text elsewhere, so a pipe or a log gets exactly the characters a test reads."""
    out = sys.stdout if stream is None else stream
    if not colour_wanted(out):
        print(text, file=out)
        return
    # rich only on a terminal: a pipe never pays for importing it.
    from rich.console import Console
    from rich.text import Text

    shown = Text(text)
    shown.highlight_regex(_BAD_WORDS, "bold red")
    shown.highlight_regex(_GOOD_WORDS, "green")
    Console(file=out, highlight=False, soft_wrap=True).print(shown)


def error_line(command: str | None, message: str) -> str:
    """The one shape of every error the command prints: ``dynamo-backend-protocol CMD: error: …``."""
    where = PROG if command is None else f"{PROG} {command}"
    return f"{where}: error: {message}"


def print_error(command: str | None, message: str) -> None:
    if command is not None:
        # Messages that name their command already (``check: ...``) are not told it twice.
        message = message.removeprefix(f"{command}: ")
    line = error_line(command, " ".join(message.split()))
    try:
        if colour_wanted(sys.stderr):
            from rich.console import Console
            from rich.text import Text

            head, _, rest = line.partition(" error: ")
            shown = Text.assemble(head + " ", ("error:", "bold red"), " " + rest)
            Console(file=sys.stderr, highlight=False, soft_wrap=True).print(shown)
        else:
            print(line, file=sys.stderr, flush=True)
    except OSError:
        pass  # standard error itself is gone: the exit status still says it


# ---------------------------------------------------------------------------------------------- output


class GuardedOutput:
    """A text stream whose write failures are :class:`OutputFailed` (not an ``OSError`` a command
    might take for trouble reading its input); ``EPIPE`` stays a ``BrokenPipeError``, which the
    command treats as a reader that has had enough."""

    def __init__(self, inner: IO[str], where: str) -> None:
        self._inner = inner
        self._where = where

    def write(self, text: str) -> int:
        try:
            return self._inner.write(text)
        except BrokenPipeError:
            raise
        except OSError as error:
            raise OutputFailed(self._where, error) from None

    def flush(self) -> None:
        try:
            self._inner.flush()
        except BrokenPipeError:
            raise
        except OSError as error:
            raise OutputFailed(self._where, error) from None

    def isatty(self) -> bool:
        return self._inner.isatty()

    def fileno(self) -> int:
        return self._inner.fileno()

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        # encoding, errors, buffer...: whatever a caller asks of a text stream.
        return getattr(self._inner, name)


class DeferredOutputFile:
    """A file the command writes as it goes (``conform --trace``): a write error stops the writing
    and is remembered, so the run and its report go on, and the command ends with one line and exit 2."""

    def __init__(self, path: str, what: str) -> None:
        self.where = f"{what} {path}"
        self.failure: OutputFailed | None = None
        self._file: IO[str] | None = None
        try:
            self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
        except OSError as error:
            raise UsageError(f"cannot write {self.where}: {error.strerror or error}") from None
        _DEFERRED.append(self)

    def write(self, text: str) -> int:
        if self._file is None or self.failure is not None:
            return 0
        try:
            return self._file.write(text)
        except OSError as error:
            self.failure = OutputFailed(self.where, error)
            return 0

    def flush(self) -> None:
        if self._file is not None and self.failure is None:
            try:
                self._file.flush()
            except OSError as error:
                self.failure = OutputFailed(self.where, error)

    def close(self) -> None:
        if self._file is None:
            return
        file, self._file = self._file, None
        try:
            file.close()
        except OSError as error:
            self.failure = self.failure or OutputFailed(self.where, error)


_DEFERRED: list[DeferredOutputFile] = []


def deferred_failures() -> list[OutputFailed]:
    """The write failures of the files opened with :class:`DeferredOutputFile` since the last call
    (closing any still open), for the command to report once its output is out."""
    found = []
    for file in _DEFERRED:
        file.close()
        if file.failure is not None:
            found.append(file.failure)
    _DEFERRED.clear()
    return found


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Everything written to standard output inside the block (an engine's prints, at the Python and at
    the file-descriptor level) goes to standard error, so the JSON printed after it is alone on stdout."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:
        yield  # no file descriptor 1 to move: nothing an engine prints can reach stdout either
        return
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        with contextlib.suppress(OSError):
            sys.stderr.flush()
        os.dup2(saved, 1)
        os.close(saved)
