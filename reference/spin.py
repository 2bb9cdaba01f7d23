"""Running SPIN on the Promela export of the request table: an independent checker.

The export (``model/explore/promela.py``) is written to a temporary folder,
SPIN generates a verifier, a C compiler builds it, and the verifier checks
each ``ltl`` claim (``pan -a -N claim``, acceptance cycles on, so liveness
counts), as many claims at once as the machine has cores (at most
``MAX_VERIFIERS``).  Every step has a time limit; the folder is removed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from dynamo_backend_protocol.model.engine import Composition
from dynamo_backend_protocol.model.explore.promela import claims, promela_body
from dynamo_backend_protocol.model.explore.promela_engine import engine_claims, engine_promela_body
from dynamo_backend_protocol.model.explore.promela_parts import ALL_SAFETY
from dynamo_backend_protocol.model.explore.promela_raw import raw_claims, raw_promela
from dynamo_backend_protocol.model.machine import DEFAULT_TABLE, CompiledTable
from dynamo_backend_protocol.model.raw_engine import RAW_TABLE, RawTransition
from dynamo_backend_protocol.model.vocabulary import Mode

STEP_TIMEOUT = 120.0
"""Seconds any one of spin, the compiler or one verifier run may take."""
MAX_VERIFIERS = 4
"""Verifiers run at once, at most: each holds a 128 MiB hash table (pan's default -w24)."""

_ERRORS = re.compile(r"errors: (\d+)")


class SpinUnavailable(Exception):
    """SPIN or a C compiler is not installed, or a run failed before it gave a verdict."""


@dataclass(frozen=True)
class SpinVerdict:
    rule: str
    name: str
    holds: bool


def spin_commands() -> tuple[str, str]:
    spin, compiler = shutil.which("spin"), shutil.which("cc") or shutil.which("gcc")
    if spin is None or compiler is None:
        raise SpinUnavailable("check --engine spin needs spin and a C compiler (apt-get install -y spin gcc)")
    return spin, compiler


def _run(argv: list[str], folder: Path) -> str:
    try:
        done = subprocess.run(argv, cwd=folder, capture_output=True, text=True, timeout=STEP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise SpinUnavailable(f"{Path(argv[0]).name} took longer than {STEP_TIMEOUT:.0f} s") from None
    if done.returncode != 0 and Path(argv[0]).name != "pan":
        raise SpinUnavailable(f"{Path(argv[0]).name} failed: {(done.stderr or done.stdout).strip()[:300]}")
    return done.stdout


def spin_check(mode: Mode, table: CompiledTable = DEFAULT_TABLE, with_transfer: bool = False) -> list[SpinVerdict]:
    """SPIN's verdict on every state and step invariant and liveness property of ``mode`` (with
    ``with_transfer``: of the decode request composed with its KV transfer)."""
    return list(_verdicts(promela_body(mode, table, with_transfer), tuple(claims(with_transfer))))


def spin_check_engine(composition: Composition, table: CompiledTable = DEFAULT_TABLE) -> list[SpinVerdict]:
    """SPIN's verdict on every invariant of N requests sharing one engine (the requests', the
    lifecycle's, the ENGINE-* rules) and, for at most two requests, every liveness property."""
    return list(_verdicts(engine_promela_body(composition, table), tuple(engine_claims(composition))))


def spin_check_raw(table: tuple[RawTransition, ...] = RAW_TABLE) -> list[SpinVerdict]:
    """SPIN's verdict on every invariant of the raw engine adapter's machine (model/explore/promela_raw.py)."""
    return list(_verdicts(raw_promela(table), tuple(raw_claims())))


_SAFETY_CLAIM = re.compile(r"^ltl (\w+) \{ \[\] [^<>\n]*\}$", re.MULTILINE)


@cache
def _verdicts(model: str, claims: tuple[tuple[str, str, str], ...]) -> tuple[SpinVerdict, ...]:
    """Modes whose exports are the same text (agg, prefill, encode today) are verified once.
    The safety claims are decided together by the export's conjunction when it holds."""
    spin, compiler = spin_commands()
    safety = set(_SAFETY_CLAIM.findall(model)) - {ALL_SAFETY}
    with tempfile.TemporaryDirectory(prefix="dbp-spin-") as name:
        folder = Path(name)
        (folder / "model.pml").write_text(model)
        _run([spin, "-a", "model.pml"], folder)
        _run([compiler, "-w", "-O0", "-o", "pan", "pan.c"], folder)

        def holds(claim: str) -> bool:
            out = _run([str(folder / "pan"), "-a", "-N", claim], folder)
            found = _ERRORS.search(out)
            if found is None:
                raise SpinUnavailable(f"pan gave no verdict for {claim}: {out.strip()[-300:]}")
            return found.group(1) == "0"

        others = [claim for _, _, claim in claims if claim not in safety]
        first = [ALL_SAFETY] if ALL_SAFETY in model else []
        # Each verifier is one single-threaded process: the claims are independent, so they share the cores.
        with ThreadPoolExecutor(max_workers=min(os.cpu_count() or 1, MAX_VERIFIERS)) as pool:
            decided = dict(zip([*first, *others], pool.map(holds, [*first, *others]), strict=True))
            if decided.get(ALL_SAFETY, False):
                decided.update(dict.fromkeys(safety, True))
            else:
                one_by_one = sorted(safety)
                decided.update(zip(one_by_one, pool.map(holds, one_by_one), strict=True))
        return tuple(SpinVerdict(rule, invariant, decided[claim]) for rule, invariant, claim in claims)
