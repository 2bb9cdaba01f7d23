"""What the bench promises: each target names a figure, a statistic of it, and a bound."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from dynamo_backend_protocol.model.exceptions import ProtocolError
from dynamo_backend_protocol.reference.bench.rounds import Figure

Value = Figure | float | int | str | None
Figures = Mapping[str, Value]
"""One section's figures by name; a Figure is judged by one of its statistics."""

_RELATIONS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
    "==": operator.eq,
}


@dataclass(frozen=True)
class Target:
    section: str
    figure: str
    relation: str
    bound: float
    statistic: str = "median"
    """For a :class:`Figure`: ``median``, ``q1`` or ``q3``."""

    @property
    def name(self) -> str:
        return f"{self.section}.{self.figure}"

    def value(self, figures: Figures) -> float | None:
        found = figures.get(self.figure)
        if isinstance(found, Figure):
            return float(getattr(found, self.statistic))
        return None if found is None or isinstance(found, str) else float(found)

    def judge(self, figures: Figures) -> Verdict:
        value = self.value(figures)
        ok = value is not None and _RELATIONS[self.relation](value, self.bound)
        return Verdict(self, value, ok, isinstance(figures.get(self.figure), Figure))

    def describe(self) -> str:
        of = "" if self.statistic == "median" else f" (its {self.statistic})"
        return f"{self.relation} {self.bound:,.4g}{of}"


@dataclass(frozen=True)
class Verdict:
    target: Target
    value: float | None
    ok: bool
    of_figure: bool
    """Whether the value is a statistic of a timed :class:`Figure` (else a plain count or size)."""

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.target.name,
            "statistic": self.target.statistic if self.of_figure else None,
            "relation": self.target.relation,
            "bound": self.target.bound,
            "value": self.value,
            "ok": self.ok,
        }


class UnknownTarget(ProtocolError, ValueError):
    """A target override names no target of the bench."""


def with_bounds(targets: Sequence[Target], bounds: Mapping[str, float]) -> list[Target]:
    """The targets with some bounds replaced, by target name (``section.figure``)."""
    known = {target.name for target in targets}
    unknown = sorted(set(bounds) - known)
    if unknown:
        raise UnknownTarget(f"unknown target {unknown[0]!r}; known targets: {', '.join(sorted(known))}")
    return [replace(target, bound=bounds[target.name]) if target.name in bounds else target for target in targets]
