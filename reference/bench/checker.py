"""The model checkers side by side: this package's compiled explorer and SPIN's exhaustive
search on the same composition (N decode requests sharing one engine), safety only.

Both are timed once on the wall clock (a search is seconds, not a hot loop).  The explorer's
memory is the growth of this process's resident set while the explored graph is alive;
SPIN's is what pan reports as its total memory.  The explorer stores the symmetry-reduced
quotient, SPIN every interleaving (with partial-order reduction), so their state counts
differ: the per-state figures are what compares them.
"""

from __future__ import annotations

import gc
import time

from dynamo_backend_protocol.model.engine import Composition
from dynamo_backend_protocol.model.explore.compiled import explore_compiled
from dynamo_backend_protocol.model.vocabulary import Mode
from dynamo_backend_protocol.reference.bench.memory import rss_bytes
from dynamo_backend_protocol.reference.bench.targets import Figures
from dynamo_backend_protocol.reference.spin import SpinUnavailable, spin_exhaustive_safety

QUICK_REQUESTS = 1
REQUESTS = 3
"""The composition the issue measured both checkers on (3 decode requests, one engine)."""


def checker_figures(quick: bool) -> Figures:
    composition = Composition(QUICK_REQUESTS if quick else REQUESTS, Mode.DECODE)
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    report = explore_compiled(composition, keep_graph=True)
    seconds = time.perf_counter() - started
    grown = max(rss_bytes() - before, 0)
    figures: dict[str, float | int | str] = {
        "composition": f"{composition.requests} decode requests, one engine (safety)",
        "explorer_states": report.states,
        "explorer_seconds": round(seconds, 3),
        "explorer_states_per_second": round(report.states / seconds),
        "explorer_bytes_per_state": round(grown / report.states),
    }
    del report
    gc.collect()
    try:
        spin = spin_exhaustive_safety(composition)
    except SpinUnavailable as error:
        figures["spin"] = f"not measured: {error}"
        return figures
    figures.update({
        "spin_states": spin.stored,
        "spin_seconds": round(spin.seconds, 3),
        "spin_states_per_second": round(spin.stored / spin.seconds) if spin.seconds else 0,
        "spin_bytes_per_state": round(spin.memory / spin.stored) if spin.stored else 0,
    })
    return figures
