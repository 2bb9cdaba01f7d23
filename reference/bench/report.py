"""One bench run: the chosen sections, their figures, the targets judged on them."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from dynamo_backend_protocol.reference.adapter import EngineAdapter
from dynamo_backend_protocol.reference.bench import adapter_cost, checker, soak, trace_load
from dynamo_backend_protocol.reference.bench.adapter_cost import AdapterSizes
from dynamo_backend_protocol.reference.bench.engines import FLOOR_DESCRIPTION
from dynamo_backend_protocol.reference.bench.profile import ProfileRow, attribution
from dynamo_backend_protocol.reference.bench.rounds import MIN_ROUNDS, Figure
from dynamo_backend_protocol.reference.bench.soak import SoakSizes
from dynamo_backend_protocol.reference.bench.targets import Figures, Target, Verdict, with_bounds
from dynamo_backend_protocol.reference.runtime import recorder_cost

SECTIONS = ("adapter", "explore", "conformance", "profile", "soak", "trace", "recorder", "checker")
CORE = ("adapter", "explore", "conformance")
TARGETS: tuple[Target, ...] = (*adapter_cost.TARGETS, *soak.TARGETS, *trace_load.TARGETS, *recorder_cost.TARGETS)


@dataclass(frozen=True)
class BenchOptions:
    sections: Sequence[str] = CORE
    quick: bool = False
    rounds: int = MIN_ROUNDS
    seed: int = soak.SEED
    bounds: Mapping[str, float] = field(default_factory=dict)
    """Target bounds to use instead of the defaults, by target name."""
    adapter_type: Callable[..., EngineAdapter] = EngineAdapter
    adapter_sizes: AdapterSizes | None = None
    """Chunks per round for the adapter section instead of the ``quick`` choice."""


@dataclass
class Profile:
    chunks: int
    rows: list[ProfileRow]
    bare: Figure
    adapter: Figure

    def as_dict(self) -> dict[str, object]:
        return {
            "chunks_per_round": self.chunks,
            "bare": self.bare.as_dict(),
            "adapter": self.adapter.as_dict(),
            "rows": [row.as_dict() for row in self.rows],
        }


@dataclass
class BenchReport:
    machine: dict[str, object]
    rounds: int
    sections: dict[str, Figures]
    profile: Profile | None
    verdicts: list[Verdict]

    @property
    def ok(self) -> bool:
        return all(verdict.ok for verdict in self.verdicts)

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"machine": self.machine, "rounds": self.rounds}
        for name, figures in self.sections.items():
            out[name] = {key: value.as_dict() if isinstance(value, Figure) else value
                         for key, value in figures.items()}
        if "adapter" in self.sections:
            out["floor"] = FLOOR_DESCRIPTION
        if self.profile is not None:
            out["profile"] = self.profile.as_dict()
        out["targets"] = [verdict.as_dict() for verdict in self.verdicts]
        out["ok"] = self.ok
        return out


def machine_description() -> dict[str, object]:
    return {
        "cpu": _cpu_model() or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "system": f"{platform.system()} {platform.release()}",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


async def run_bench(options: BenchOptions, conformance: Callable[[], Awaitable[None]]) -> BenchReport:
    """``conformance`` is the run the conformance section times."""
    targets = with_bounds(TARGETS, options.bounds)
    sections: dict[str, Figures] = {}
    profile = None
    # The soak goes first so its RSS baseline is not inflated by earlier sections' garbage.
    if "soak" in options.sections:
        sections["soak"] = await soak.soak_figures(SoakSizes.choose(options.quick), options.seed)
    if "adapter" in options.sections:
        sizes = options.adapter_sizes or AdapterSizes.choose(options.quick, options.rounds)
        sections["adapter"] = await adapter_cost.adapter_figures(sizes, options.adapter_type)
    if "explore" in options.sections:
        sections["explore"] = await adapter_cost.explore_figures(options.rounds)
    if "conformance" in options.sections:
        sections["conformance"] = await adapter_cost.conformance_figures(conformance)
    if "profile" in options.sections:
        chunks, slices = (1_000, 2) if options.quick else (6_000, 5)
        rows, bare, adapter = await attribution(chunks, options.rounds, slices)
        profile = Profile(chunks * slices, rows, bare, adapter)
    if "trace" in options.sections:
        sections["trace"] = trace_load.trace_figures(2_000 if options.quick else 500_000)
    if "recorder" in options.sections:
        sections["recorder"] = await recorder_cost.recorder_figures(options.quick, options.rounds)
    if "checker" in options.sections:
        sections["checker"] = checker.checker_figures(options.quick)
    verdicts = [target.judge(sections[target.section]) for target in targets if target.section in sections]
    return BenchReport(machine_description(), options.rounds, sections, profile, verdicts)
