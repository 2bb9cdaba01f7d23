"""Running SPIN on the Promela export of the request table: an independent checker.

The export (``model/explore/promela.py``) is written to a temporary folder,
SPIN generates a verifier, a C compiler builds it, and the verifier checks
each ``ltl`` claim (``pan -a -N claim``, acceptance cycles on, so liveness
counts), as many claims at once as the machine has cores (at most
``MAX_VERIFIERS``).  Every step has a time limit; the folder is removed.

Past what an exact search can store, :func:`spin_search` runs SPIN's
approximate searches: bitstate hashing (a state is a few bits in a hash
array, so some states may be missed: SPIN's *hash factor*, bits per stored
state, says how likely) or hash compaction, and a *swarm*: several bitstate
verifiers that differ in hash functions, seeds and search order, each under a
time limit, whose union covers more than any one of them.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from dynamo_backend_protocol.model.engine import Composition
from dynamo_backend_protocol.model.exceptions import ProtocolError
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


class SpinUnavailable(ProtocolError):
    """SPIN or a C compiler is not installed, or a run failed before it gave a verdict."""


@dataclass(frozen=True)
class SpinVerdict:
    rule: str
    name: str
    holds: bool


def spin_commands() -> tuple[str, str]:
    spin, compiler = shutil.which("spin"), shutil.which("cc") or shutil.which("gcc")
    if spin is None or compiler is None:
        raise SpinUnavailable("check --checker spin needs spin and a C compiler (apt-get install -y spin gcc)")
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


# --------------------------------------------------------------------------- approximate searches

SEARCHES = ("bitstate", "hashcompact")
_COMPILE_FLAGS = {
    # PERMUTED lets -rhash also vary the order in which processes are scheduled.
    "bitstate": ["-DBITSTATE", "-DT_RAND", "-DP_RAND", "-DPERMUTED"],
    "hashcompact": ["-DHC4"],
}
MAX_DEPTH = 100_000
"""pan's depth bound (-m): far past the deepest run of eight requests' composition."""
_STORED = re.compile(r"^\s*(\d+) states, stored", re.MULTILINE)
_DEPTH = re.compile(r"depth reached (\d+)")
_HASH_FACTOR = re.compile(r"hash factor: ([0-9.e+]+)")
_RATE = re.compile(r"elapsed time ([0-9.e+]+) seconds")
_TRUNCATED = ("max search depth too small", "out of memory")


@dataclass(frozen=True)
class VerifierRun:
    """One verifier of an approximate search: its options and what pan reported."""

    options: tuple[str, ...]
    errors: int
    stored: int
    depth: int
    seconds: float
    hash_factor: float | None
    """Bits of the hash array per stored state (bitstate): SPIN calls it good past 100."""
    hashes: int
    truncated: str | None
    """Why the search stopped before it ended (time limit, depth, memory), if it did."""

    @property
    def miss_chance(self) -> float | None:
        """The chance that a state this run met was wrongly taken for one already seen, with k
        hash functions and a hash factor of h bits per stored state: (1 - e^(-k/h))^k."""
        if self.hash_factor is None or self.hash_factor <= 0 or self.hashes <= 0:
            return None
        return (-math.expm1(-self.hashes / self.hash_factor)) ** self.hashes

    @property
    def coverage(self) -> float | None:
        miss = self.miss_chance
        return None if miss is None else 1.0 - miss


@dataclass
class SearchReport:
    """An approximate search of the composition's invariants: one verifier, or a swarm."""

    search: str
    claim: str
    runs: list[VerifierRun] = field(default_factory=list)

    @property
    def violated(self) -> bool:
        return any(run.errors for run in self.runs)

    @property
    def complete(self) -> bool:
        """Every verifier ran to the end of its search (each may still have missed states)."""
        return all(run.truncated is None for run in self.runs)

    @property
    def stored(self) -> int:
        return max((run.stored for run in self.runs), default=0)

    @property
    def miss_chance(self) -> float | None:
        """The worst verifier's chance of taking a state it met for one already seen."""
        found = [run.miss_chance for run in self.runs if run.miss_chance is not None]
        return max(found) if found else None

    @property
    def coverage(self) -> float | None:
        miss = self.miss_chance
        return None if miss is None else 1.0 - miss


def spin_search(
    composition: Composition,
    *,
    search: str = "bitstate",
    verifiers: int = 1,
    memory: int = 256 * 1024**2,
    minutes: int = 2,
    seed: int = 1,
    table: CompiledTable = DEFAULT_TABLE,
) -> SearchReport:
    """The composition's safety claims (their conjunction) under an approximate search:
    ``verifiers`` bitstate verifiers (a swarm: each its own seed, hash functions, bits per
    state and search order) or one hash-compact verifier.  ``memory`` is what all the
    verifiers running at once may use for their hash arrays; each is interrupted after ``minutes``
    on the wall clock and reports what it searched until then."""
    if search not in SEARCHES:
        raise ValueError(f"search is one of {', '.join(SEARCHES)}, not {search!r}")
    spin, compiler = spin_commands()
    model = engine_promela_body(composition, table)
    at_once = max(1, min(verifiers, os.cpu_count() or 1, MAX_VERIFIERS))
    with tempfile.TemporaryDirectory(prefix="dbp-spin-") as name:
        folder = Path(name)
        (folder / "model.pml").write_text(model)
        _run([spin, "-a", "model.pml"], folder)
        _run([compiler, "-w", "-O0", "-DSAFETY", *_COMPILE_FLAGS[search], "-o", "pan", "pan.c"], folder)
        plans = [_plan(search, index, seed, memory // at_once, minutes) for index in range(verifiers)]

        def verify(options: tuple[str, ...]) -> VerifierRun:
            return _verify(folder, options, minutes)

        with ThreadPoolExecutor(max_workers=at_once) as pool:
            runs = list(pool.map(verify, plans))
    return SearchReport(search, ALL_SAFETY, runs)


def _plan(search: str, index: int, seed: int, memory: int, minutes: int) -> tuple[str, ...]:
    """Verifier ``index``'s options: the swarm's diversity is in the seed (which also randomises
    the order of transitions and processes), the hash polynomial, the bits per state and the
    direction in which each process's transitions are tried."""
    common = ("-N", ALL_SAFETY, "-n", f"-m{MAX_DEPTH}")
    if search == "hashcompact":
        slots = max(16, min(30, int(math.log2(max(memory, 1) // 16))))
        return (*common, f"-w{slots}")
    bits = max(20, min(35, int(math.log2(max(memory, 1) * 8))))
    options = [*common, f"-w{bits}", f"-k{3 + index % 3}", f"-RS{seed + 7919 * index}"]
    if index:
        options.append("-rhash")
    if index % 2:
        options.append("-t_reverse")
    return tuple(options)


def _verify(folder: Path, options: tuple[str, ...], minutes: int) -> VerifierRun:
    """One verifier, interrupted at its time limit: pan checks its own limit (-Q) only now and
    then, but on an interrupt it prints what it searched so far and ends, as on a finished search."""
    started = time.perf_counter()
    pan = subprocess.Popen(
        [str(folder / "pan"), *options], cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    interrupted = False
    try:
        out, _ = pan.communicate(timeout=60.0 * minutes)
    except subprocess.TimeoutExpired:
        interrupted = True
        pan.send_signal(signal.SIGINT)
        try:
            out, _ = pan.communicate(timeout=STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pan.kill()
            pan.communicate()
            raise SpinUnavailable(f"pan {' '.join(options)} did not stop when interrupted") from None
    errors = _ERRORS.search(out)
    stored = _STORED.search(out)
    if errors is None or stored is None:
        raise SpinUnavailable(f"pan gave no verdict ({' '.join(options)}): {out.strip()[-300:]}")
    depth = _DEPTH.search(out)
    factor = _HASH_FACTOR.search(out)
    hashes = next((int(option[2:]) for option in options if option.startswith("-k")), 0)
    truncated = "time limit" if interrupted else next((reason for reason in _TRUNCATED if reason in out), None)
    return VerifierRun(
        options=options,
        errors=int(errors.group(1)),
        stored=int(stored.group(1)),
        depth=int(depth.group(1)) if depth else 0,
        seconds=time.perf_counter() - started,
        hash_factor=float(factor.group(1)) if factor else None,
        hashes=hashes,
        truncated=truncated,
    )


_MEMORY = re.compile(r"([0-9.]+)\s+total actual memory usage")


@dataclass(frozen=True)
class ExhaustiveRun:
    stored: int
    seconds: float
    """pan's own elapsed time, not the compile."""
    memory: int
    """Bytes, as pan reports its total actual memory usage."""


def spin_exhaustive_safety(composition: Composition, table: CompiledTable = DEFAULT_TABLE) -> ExhaustiveRun:
    """SPIN's exact search of the composition's safety claims (their conjunction), for the bench."""
    spin, compiler = spin_commands()
    with tempfile.TemporaryDirectory(prefix="dbp-spin-") as name:
        folder = Path(name)
        (folder / "model.pml").write_text(engine_promela_body(composition, table))
        _run([spin, "-a", "model.pml"], folder)
        _run([compiler, "-w", "-O0", "-DSAFETY", "-o", "pan", "pan.c"], folder)
        out = _run([str(folder / "pan"), "-N", ALL_SAFETY, "-n", f"-m{MAX_DEPTH}"], folder)
    stored, seconds, memory = _STORED.search(out), _RATE.search(out), _MEMORY.search(out)
    if stored is None or seconds is None or memory is None:
        raise SpinUnavailable(f"pan gave no figures: {out.strip()[-300:]}")
    return ExhaustiveRun(int(stored.group(1)), float(seconds.group(1)), int(float(memory.group(1)) * 1024**2))
