"""Reading the recorder's lines of one run back: per request, what the engine yielded and how it ended, and
what ``trace``'s engine-side inference refuses in them."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

from dynamo_backend_protocol.model.traces.check import Divergence, RequestSummary, TraceChecker
from dynamo_backend_protocol.model.traces.observed import ObservationDivergence

ENDINGS = frozenset({"engine.end", "engine.raise", "engine.close", "engine.cancel", "engine.interrupt",
                     "engine.setup_failed"})


@dataclasses.dataclass
class EngineRequest:
    """One request as the engine's side recorded it."""

    name: str
    lines: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def items(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if line["obs"] == "engine.item"]

    def tokens(self) -> int:
        """The tokens the engine's items carried (the recorder counts them)."""
        return sum(int(line.get("tokens") or 0) for line in self.items())

    def malformed(self) -> str | None:
        """Which item is the first that is not a well-formed chunk for the mode, or None."""
        item = next((line for line in self.items() if line["item"] == "malformed"), None)
        return None if item is None else f"{self.name}: item #{item['n']} is not a well-formed chunk for the mode"

    def terminal_position(self) -> int | None:
        """The index in :meth:`items` of the first terminal item."""
        return next((i for i, line in enumerate(self.items()) if _is_terminal(line)), None)

    def first(self, obs: str) -> dict[str, Any] | None:
        return next((line for line in self.lines if line["obs"] == obs), None)

    def count(self, obs: str) -> int:
        return sum(1 for line in self.lines if line["obs"] == obs)

    def ending(self) -> dict[str, Any] | None:
        """The line that ended the stream: its first terminal item, else how it ended, else None (still open)."""
        for line in self.lines:
            if (line["obs"] == "engine.item" and _is_terminal(line)) or line["obs"] in ENDINGS:
                return line
        return None

    def ended(self) -> bool:
        return self.ending() is not None

    def finished_showing(self) -> bool:
        """Whether no more of it will show: its stream ended, or went on after a stop or kill (the runtime
        reads no more of a cancelled stream once the engine answers a read with a token)."""
        return self.ended() or self.token_after_cancel() is not None

    def cancel(self) -> dict[str, Any] | None:
        """The first stop or kill the context showed while the stream was still going (None if it ended first)."""
        for line in self.lines:
            if line["obs"] in ("context.stop", "context.kill"):
                return line
            if line is self.ending():
                return None
        return None

    def items_after_cancel(self) -> int:
        """Items the engine yielded after its context first showed a stop or kill, the last one included."""
        cancel = self.cancel()
        if cancel is None:
            return 0
        after = self.lines[self.lines.index(cancel) + 1 :]
        return sum(1 for line in after if line["obs"] == "engine.item")

    def token_after_cancel(self) -> dict[str, Any] | None:
        """The first item the engine gave, not a terminal, in answer to a read the runtime began after the
        stop or kill showed (the recorder notes those reads): the engine went on instead of ending."""
        cancel = self.cancel()
        if cancel is None:
            return None
        asked = False
        for line in self.lines[self.lines.index(cancel) + 1 :]:
            if line["obs"] == "engine.read":
                asked = True
            elif line["obs"] == "engine.item":
                if asked and not _is_terminal(line):
                    return line
                asked = False
        return None

    def answers_after_cancel(self) -> int:
        """Items the engine gave in answer to reads the runtime began after the stop or kill showed."""
        cancel = self.cancel()
        if cancel is None:
            return 0
        answers, asked = 0, False
        for line in self.lines[self.lines.index(cancel) + 1 :]:
            if line["obs"] == "engine.read":
                asked = True
            elif line["obs"] == "engine.item":
                answers += asked
                asked = False
        return answers

    def shows_after_cancel(self) -> bool:
        """Whether what the engine does once stopped or killed shows: its stream ended, the runtime read it again
        after the stop or kill (so the answer, or the silence, is the engine's), or a read under way when the
        stop showed was never answered (silent since)."""
        if self.ending() is not None or self.read_after_cancel():
            return True
        cancel = self.cancel()
        return cancel is not None and bool(cancel.get("reading")) and not any(
            line["obs"] == "engine.item" for line in self.lines[self.lines.index(cancel) + 1 :])

    def read_after_cancel(self) -> bool:
        """Whether the runtime began a read after the stop or kill showed."""
        cancel = self.cancel()
        return cancel is not None and any(line["obs"] == "engine.read"
                                          for line in self.lines[self.lines.index(cancel) + 1 :])

    def ended_cancelled(self) -> bool:
        ending = self.ending()
        return ending is not None and ending["obs"] == "engine.item" and ending["item"].startswith("terminal:cancelled")


def _is_terminal(line: dict[str, Any]) -> bool:
    return str(line.get("item", "")).startswith("terminal")


def describe_ending(line: dict[str, Any] | None) -> str:
    if line is None:
        return "had not ended"
    if line["obs"] == "engine.item":
        return f"ended with {line['item']} (item #{line['n']})"
    if line["obs"] == "engine.raise":
        return f"raised {line.get('error', 'an error')}"
    said: str = {"engine.end": "ran out without a terminal", "engine.close": "was closed by the runtime",
            "engine.cancel": "had its read cancelled by the runtime", "engine.interrupt": "was interrupted",
            "engine.setup_failed": "never started (generate failed)"}.get(line["obs"], str(line["obs"]))
    return said


def refused(lines: Iterable[str]) -> list[tuple[RequestSummary, Divergence | ObservationDivergence]]:
    """Each request in ``lines`` that ``trace``'s engine-side inference refuses, with its first divergence."""
    found: list[tuple[RequestSummary, Divergence | ObservationDivergence]] = []

    def heard(summary: RequestSummary) -> None:
        if summary.divergence is not None:
            found.append((summary, summary.divergence))

    checker = TraceChecker(on_request=heard)
    for number, text in enumerate(lines, start=1):
        checker.feed(number, text)
    checker.report()
    return found


def by_request(lines: Iterable[str]) -> dict[str, EngineRequest]:
    found: dict[str, EngineRequest] = {}
    for text in lines:
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if isinstance(line, dict) and isinstance(line.get("request"), str) and isinstance(line.get("obs"), str):
            found.setdefault(line["request"], EngineRequest(line["request"])).lines.append(line)
    return found
