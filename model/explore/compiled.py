"""The compiled explorer: N requests sharing one engine, as small integers.

The generic walk (:mod:`.engine`) steps both tables' objects for every
composed state, which costs hundreds of microseconds a state.  Here each
machine is walked once on its own and compiled to integers: a request state
is an index, its enabled moves a list of ``(target, first event, count,
generate?, abort?, broken step invariants)`` with moves that change nothing
folded into a count, its broken state invariants a set; the lifecycle
likewise.  A composed state is then a tuple ``(lifecycle, r1, ..., rN)``
of ints.  Requests of one mode are interchangeable, so with symmetry on the
requests are kept sorted and one state stands for all its permutations; a
counterexample is turned back into a concrete run (``r2:stop``) afterwards.

The composition's invariants are compiled the same way (which request
states are live, which lifecycle states have begun cleanup), so a test can
hold this explorer to the generic one state for state, without symmetry.
"""

from __future__ import annotations

import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from dynamo_backend_protocol.model.engine import (
    CLEANUP_BEGUN,
    CLEANUP_WAITS,
    ENGINE_OWN_EVENTS,
    NO_ABORT_AFTER_CLEANUP,
    NO_LIVE_AFTER_CLEANUP,
    Composition,
)
from dynamo_backend_protocol.model.exceptions import ProtocolError, ProtocolViolation, TableError
from dynamo_backend_protocol.model.explore.checking import InvariantResult
from dynamo_backend_protocol.model.invariants import STATE_INVARIANTS, STEP_INVARIANTS, TABLE_WELL_FORMED
from dynamo_backend_protocol.model.lifecycle import (
    CLEANUP_AFTER_START,
    CLEANUP_REACHABLE,
    LIFECYCLE_STATE_INVARIANTS,
    LIFECYCLE_STEP_INVARIANTS,
    LifecycleEvent,
    LifecycleState,
    Phase,
    lifecycle_step,
)
from dynamo_backend_protocol.model.machine import DEFAULT_TABLE, CompiledTable
from dynamo_backend_protocol.model.state import RequestState
from dynamo_backend_protocol.model.vocabulary import ALL_EVENTS, ActionKind, ControlState

_ENGINE_INVARIANTS: tuple[tuple[str, str], ...] = (
    (NO_LIVE_AFTER_CLEANUP, "no_request_in_flight_once_cleanup_begins"),
    (CLEANUP_WAITS, "cleanup_begins_with_no_request_in_flight"),
    (NO_ABORT_AFTER_CLEANUP, "no_abort_once_cleanup_begins"),
)


@dataclass(frozen=True, slots=True)
class Move:
    target: int
    event: int
    """Index in ALL_EVENTS of the first event that makes this move (for counterexamples)."""
    count: int
    """How many events make exactly this move."""
    generates: bool
    aborts: bool
    broken: tuple[str, ...]
    """Names of the request step invariants this move breaks."""


@dataclass
class CompiledRequests:
    """One request machine of one mode, compiled to indices."""

    states: list[RequestState]
    moves: list[list[Move]]
    """Moves that change the state, or break a step invariant."""
    still: list[int]
    """Per state: how many events leave it unchanged (self-loops), counted as transitions."""
    live: frozenset[int]
    """States of a request in flight: generate was called (not the initial state), not Done."""
    broken: dict[int, list[str]]
    """State index -> request state invariants it breaks."""
    malformed: dict[int, tuple[int, str]]
    """State index -> (event index, message) for a state where the table is faulty."""


def compile_requests(table: CompiledTable, composition: Composition) -> CompiledRequests:
    initial = table.initial(composition.mode)
    index: dict[RequestState, int] = {initial: 0}
    states, moves, still = [initial], [], []
    broken: dict[int, list[str]] = {}
    malformed: dict[int, tuple[int, str]] = {}
    queue: deque[RequestState] = deque([initial])
    while queue:
        state = queue.popleft()
        here = index[state]
        bad = [inv.name for inv in STATE_INVARIANTS if not inv.holds(state)]
        if bad:
            broken[here] = bad
        merged: dict[tuple[int, bool, bool, tuple[str, ...]], list[int]] = {}
        loops = 0
        for event_index, ev in enumerate(ALL_EVENTS):
            try:
                step = table.step(state, ev)
            except ProtocolViolation:
                continue
            except TableError as error:
                malformed.setdefault(here, (event_index, str(error)))
                continue
            after = step.after
            if after not in index:
                index[after] = len(states)
                states.append(after)
                queue.append(after)
            step_broken = tuple(inv.name for inv in STEP_INVARIANTS if not inv.holds(step))
            if after == state and not step_broken:
                loops += 1
                continue
            key = (
                index[after],
                here == 0 and after != state,
                ActionKind.CALL_ABORT in step.actions,
                step_broken,
            )
            merged.setdefault(key, []).append(event_index)
        moves.append([Move(key[0], found[0], len(found), *key[1:]) for key, found in merged.items()])
        still.append(loops)
    live = frozenset(i for i, state in enumerate(states) if i and state.control is not ControlState.DONE)
    return CompiledRequests(states, moves, still, live, broken, malformed)


@dataclass
class CompiledLifecycle:
    states: list[LifecycleState]
    own: list[list[tuple[int, int]]]
    """Per state: (event index in ENGINE_OWN_EVENTS, target) for each of the engine's own events it allows."""
    generate: list[int]
    """Per state: the target of a generate, or -1 where the engine does not serve it."""
    abort: list[int]
    """Per state: the target of an abort, or -1 (the request calls it all the same)."""
    cleanup_begun: frozenset[int]
    cleaned_up: frozenset[int]
    broken: dict[int, list[str]] = field(default_factory=dict)
    """State index -> lifecycle state invariants it breaks."""
    broken_steps: dict[tuple[int, LifecycleEvent], list[str]] = field(default_factory=dict)
    """(state index, event) -> lifecycle step invariants that event breaks there."""


def compile_lifecycle() -> CompiledLifecycle:
    initial = LifecycleState()
    index = {initial: 0}
    states = [initial]
    own: list[list[tuple[int, int]]] = []
    generate: list[int] = []
    abort: list[int] = []
    broken_steps: dict[tuple[int, LifecycleEvent], list[str]] = {}
    position = 0

    def target(state: LifecycleState, ev: LifecycleEvent) -> int:
        try:
            taken = lifecycle_step(state, ev)
        except (ProtocolViolation, TableError):
            return -1
        bad = [inv.name for inv in LIFECYCLE_STEP_INVARIANTS if not inv.holds(taken)]
        if bad:
            broken_steps[(index[state], ev)] = bad
        after = taken.after
        if after not in index:
            index[after] = len(states)
            states.append(after)
        return index[after]

    while position < len(states):
        state = states[position]
        position += 1
        found = [(i, target(state, ev)) for i, ev in enumerate(ENGINE_OWN_EVENTS)]
        own.append([(i, to) for i, to in found if to >= 0])
        generate.append(target(state, LifecycleEvent.GENERATE))
        abort.append(target(state, LifecycleEvent.ABORT))
    begun = frozenset(i for i, state in enumerate(states) if state.phase in CLEANUP_BEGUN)
    done = frozenset(i for i, state in enumerate(states) if state.phase is Phase.CLEANED_UP)
    broken = {
        i: bad
        for i, state in enumerate(states)
        if (bad := [inv.name for inv in LIFECYCLE_STATE_INVARIANTS if not inv.holds(state)])
    }
    return CompiledLifecycle(states, own, generate, abort, begun, done, broken, broken_steps)


@dataclass(frozen=True)
class ExplorationBounds:
    """How far the explorer may go before it stops and says so (instead of being killed)."""

    max_states: int | None = None
    max_memory: int | None = None
    """Bytes of memory, counted with what the search still allocates once the walk ends."""
    memory: Callable[[], int] | None = None
    """How much memory the process holds now, in bytes (the caller measures: the model does no I/O)."""
    progress: Callable[[int], None] | None = None
    """Called with the number of states stored so far, every :data:`CHECK_EVERY` states."""


CHECK_EVERY = 1 << 15
"""States between two looks at the bounds: measuring memory costs microseconds, a state about ten."""


class BoundReached(ProtocolError):
    """The exploration stopped at one of its bounds, before it saw every reachable state."""

    def __init__(self, bound: str, states: int, transitions: int, memory: int, seconds: float) -> None:
        super().__init__(f"{bound} reached after {states:,} states")
        self.bound = bound
        self.states = states
        self.transitions = transitions
        self.memory = memory
        self.seconds = seconds


@dataclass
class CompiledGraph:
    """The explored quotient graph, kept for the liveness check (:mod:`.compiled_liveness`)."""

    order: list[tuple[int, ...]]
    """Every stored state, in breadth-first order: ``(lifecycle, r1, ..., rN)``."""
    expanded: list[bool]
    paths: _Paths
    requests: CompiledRequests
    lifecycle: CompiledLifecycle
    symmetry: bool
    table: CompiledTable
    composition: Composition


@dataclass
class CompiledReport:
    requests: int
    symmetry: bool
    states: int
    transitions: int
    seconds: float
    invariants: list[InvariantResult] = field(default_factory=list)
    graph: CompiledGraph | None = None
    """With ``keep_graph``: what the liveness check reads."""

    @property
    def ok(self) -> bool:
        return all(result.holds for result in self.invariants)

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "requests": self.requests,
            "symmetry": self.symmetry,
            "states": self.states,
            "transitions": self.transitions,
            "seconds": round(self.seconds, 6),
            "states_per_second": round(self.states / self.seconds) if self.seconds else None,
            "invariants": [result.as_dict() for result in self.invariants],
        }


# A move is encoded as one int: the engine's own event e is ``-1 - e``; a request's k-th move
# out of request state ``source`` is ``source * width + k`` (k past its moves: the faulty row).


def explore_compiled(
    composition: Composition,
    table: CompiledTable = DEFAULT_TABLE,
    symmetry: bool = True,
    explore_past_violations: bool = False,
    bounds: ExplorationBounds = ExplorationBounds(),
    keep_graph: bool = False,
) -> CompiledReport:
    """Breadth-first over the composed integer states; the first counterexample of each
    invariant is a shortest one (of the quotient, with symmetry: as short as any).
    Raises :class:`BoundReached` at the first of ``bounds`` it reaches."""
    started = time.perf_counter()
    req = compile_requests(table, composition)
    life = compile_lifecycle()
    n = composition.requests
    results = {name: InvariantResult(rule, name) for rule, name in [
        *((inv.rule, inv.name) for inv in STATE_INVARIANTS),
        *((inv.rule, inv.name) for inv in STEP_INVARIANTS),
        *((inv.rule, inv.name) for inv in LIFECYCLE_STATE_INVARIANTS),
        *((inv.rule, inv.name) for inv in LIFECYCLE_STEP_INVARIANTS),
        *_ENGINE_INVARIANTS,
    ]}
    well_formed = InvariantResult(TABLE_WELL_FORMED, "table_is_deterministic_and_complete")
    can_finish = InvariantResult(CLEANUP_AFTER_START, CLEANUP_REACHABLE)
    width = max(len(moves) for moves in req.moves) + 1
    moves, still, live = req.moves, req.still, req.live
    own, generate, abort = life.own, life.generate, life.abort
    begun = life.cleanup_begun
    waits = composition.cleanup_waits_for_requests
    cleanup_index = ENGINE_OWN_EVENTS.index(LifecycleEvent.CLEANUP_CALLED)
    broken_requests = frozenset(req.broken)
    malformed = frozenset(req.malformed)

    rows = [tuple((k, *_row(move)) for k, move in enumerate(moves[r])) for r in range(len(moves))]
    total = [sum(move.count for move in moves[r]) for r in range(len(moves))]
    generating = [sum(move.count for move in moves[r] if move.generates) for r in range(len(moves))]

    initial = (0, *([0] * n))
    index: dict[tuple[int, ...], int] = {initial: 0}
    parent = array("q", [-1])
    via = array("q", [0])
    order: list[tuple[int, ...]] = [initial]
    transitions = 0
    edges = array("i")
    """Successors of every state, state after state; ``ends[i]`` is where state i's end."""
    ends = array("q")
    pending: list[tuple[str, int, int | None, str]] = []
    """(invariant name, state index, encoded move or None, detail): turned into paths at the end."""

    def state_ok(state: tuple[int, ...], at: int) -> bool:
        ok = True
        lc, requests = state[0], state[1:]
        if lc in begun and not live.isdisjoint(requests):
            pending.append(("no_request_in_flight_once_cleanup_begins", at, None, "a request is in flight"))
            ok = False
        if lc in life.broken:
            for name in life.broken[lc]:
                pending.append((name, at, None, f"reaches {life.states[lc].describe()}"))
            ok = False
        if broken_requests and not broken_requests.isdisjoint(requests):
            for r in sorted(set(requests) & broken_requests):
                for name in req.broken[r]:
                    pending.append((name, at, None, f"reaches {req.states[r].describe()}"))
            ok = False
        return ok or explore_past_violations

    expand = [state_ok(initial, 0)]
    position = 0
    next_look = CHECK_EVERY
    while position < len(order):
        if len(order) >= next_look:
            next_look = len(order) + CHECK_EVERY
            _look_at_bounds(bounds, len(order), len(edges), transitions, started)
        state = order[position]
        here = position
        position += 1
        if not expand[here]:
            ends.append(len(edges))
            continue
        lc = state[0]
        requests = state[1:]
        for event_index, to in own[lc]:
            if event_index == cleanup_index and not live.isdisjoint(requests):
                if waits:
                    continue
                detail = "a request is in flight"
                pending.append(("cleanup_begins_with_no_request_in_flight", here, -1 - event_index, detail))
            lifecycle_broken = life.broken_steps.get((lc, ENGINE_OWN_EVENTS[event_index]))
            for name in lifecycle_broken or ():
                pending.append((name, here, -1 - event_index, "an engine step breaks it"))
            transitions += 1
            after = (to, *requests)
            found = index.get(after)
            if found is None:
                found = index[after] = len(order)
                order.append(after)
                parent.append(here)
                via.append(-1 - event_index)
                expand.append(state_ok(after, found) and (not lifecycle_broken or explore_past_violations))
            edges.append(found)
        serves = generate[lc] >= 0
        previous = -1
        for slot, r in enumerate(requests):
            transitions += still[r]
            if symmetry and r == previous:
                # An interchangeable request in the same state (they are sorted): the same successors.
                transitions += total[r] if serves else total[r] - generating[r]
                continue
            previous = r
            if malformed and r in malformed:
                faulty = r * width + len(moves[r])
                pending.append(("table_is_deterministic_and_complete", here, faulty, req.malformed[r][1]))
            for k, target, count, generates, aborts, broken in rows[r]:
                next_lc = lc
                clean = True
                if generates:
                    if not serves:
                        continue
                    for name in life.broken_steps.get((lc, LifecycleEvent.GENERATE), ()):
                        pending.append((name, here, r * width + k, "the request's generate breaks it"))
                        clean = False
                    next_lc = generate[lc]
                if aborts:
                    if abort[next_lc] >= 0:
                        for name in life.broken_steps.get((next_lc, LifecycleEvent.ABORT), ()):
                            pending.append((name, here, r * width + k, "the request's abort breaks it"))
                            clean = False
                        next_lc = abort[next_lc]
                    if lc in begun:
                        pending.append(("no_abort_once_cleanup_begins", here, r * width + k, "abort after cleanup"))
                        clean = False
                if broken:
                    for name in broken:
                        pending.append((name, here, r * width + k, "a request step breaks it"))
                    clean = False
                transitions += count
                moved = list(requests)
                moved[slot] = target
                if symmetry:
                    moved.sort()
                after = (next_lc, *moved)
                found = index.get(after)
                if found is None:
                    found = index[after] = len(order)
                    order.append(after)
                    parent.append(here)
                    via.append(r * width + k)
                    expand.append(state_ok(after, found) and (clean or explore_past_violations))
                edges.append(found)
        ends.append(len(edges))

    stuck = _first_stuck(order, edges, ends, expand, life.cleaned_up)
    if stuck is not None:
        pending.append((CLEANUP_REACHABLE, stuck, None, "cleanup is no longer reachable"))

    _look_at_bounds(bounds, len(order), len(edges), transitions, started)
    paths = _Paths(order, parent, via, req, width, n)
    for name, state_index, move, detail in pending:
        result = can_finish if name == CLEANUP_REACHABLE else results.get(name, well_formed)
        if name == "table_is_deterministic_and_complete":
            result = well_formed
        if result.holds:
            result.fail(paths.run(state_index, move), detail)
    # Violations were recorded in breadth-first order, so each result keeps a shortest one.
    invariants = [*results.values(), well_formed, can_finish]
    graph = CompiledGraph(order, expand, paths, req, life, symmetry, table, composition) if keep_graph else None
    return CompiledReport(n, symmetry, len(order), transitions, time.perf_counter() - started, invariants, graph)


BYTES_AFTER_PER_STATE = 24
BYTES_AFTER_PER_EDGE = 4
"""What the search allocates once the walk ends (its backward pass over the edges), per state and per edge."""


def _look_at_bounds(bounds: ExplorationBounds, states: int, edges: int, transitions: int, started: float) -> None:
    if bounds.progress is not None:
        bounds.progress(states)
    if bounds.max_states is not None and states > bounds.max_states:
        memory = bounds.memory() if bounds.memory is not None else 0
        raise BoundReached("the state bound", states, transitions, memory, time.perf_counter() - started)
    if bounds.max_memory is not None and bounds.memory is not None:
        memory = bounds.memory()
        if memory + BYTES_AFTER_PER_STATE * states + BYTES_AFTER_PER_EDGE * edges > bounds.max_memory:
            raise BoundReached("the memory bound", states, transitions, memory, time.perf_counter() - started)


def _row(move: Move) -> tuple[int, int, bool, bool, tuple[str, ...]]:
    return move.target, move.count, move.generates, move.aborts, move.broken


def _first_stuck(
    order: list[tuple[int, ...]], edges: array[int], ends: array[int], expanded: list[bool], goal: frozenset[int]
) -> int | None:
    """The first expanded state from which no path reaches a lifecycle state in ``goal``:
    backward from the goal over the edges, reversed once into flat arrays."""
    count = len(order)
    starts = array("q", bytes(8 * (count + 1)))
    for target in edges:
        starts[target + 1] += 1
    for i in range(count):
        starts[i + 1] += starts[i]
    fill = array("q", starts)
    sources = array("i", bytes(4 * len(edges)))
    begin = 0
    for source in range(count):
        end = ends[source]
        for e in range(begin, end):
            target = edges[e]
            sources[fill[target]] = source
            fill[target] += 1
        begin = end
    reaches = bytearray(count)
    frontier: deque[int] = deque()
    for i, state in enumerate(order):
        if state[0] in goal:
            reaches[i] = 1
            frontier.append(i)
    while frontier:
        target = frontier.popleft()
        for e in range(starts[target], starts[target + 1]):
            source = sources[e]
            if not reaches[source]:
                reaches[source] = 1
                frontier.append(source)
    return next((i for i in range(count) if not reaches[i] and expanded[i]), None)


class _Paths:
    """Turns a composed state's discovery chain back into named, concrete events."""

    def __init__(
        self,
        order: list[tuple[int, ...]],
        parent: array[int],
        via: array[int],
        req: CompiledRequests,
        width: int,
        n: int,
    ) -> None:
        self.order, self.parent, self.via, self.req, self.width, self.n = order, parent, via, req, width, n

    def run(self, state_index: int, then: int | None) -> list[str]:
        chain: list[tuple[int, int]] = []
        at = state_index
        while self.parent[at] >= 0:
            chain.append((self.parent[at], self.via[at]))
            at = self.parent[at]
        chain.reverse()
        concrete = [0] * self.n
        events: list[str] = []
        for _, move in [*chain, *([] if then is None else [(state_index, then)])]:
            events.append(self._name(concrete, move))
        return events

    def steps(self, state_index: int) -> tuple[list[tuple[int, int]], list[int]]:
        """A shortest run to the state, as ``(request slot, event index in ALL_EVENTS)`` or, for
        the engine's own events, ``(-1, index in ENGINE_OWN_EVENTS)``; with the concrete request
        states it ends in, slot by slot (which request a symmetric state's value belongs to)."""
        chain: list[int] = []
        at = state_index
        while self.parent[at] >= 0:
            chain.append(self.via[at])
            at = self.parent[at]
        concrete = [0] * self.n
        steps: list[tuple[int, int]] = []
        for move in reversed(chain):
            if move < 0:
                steps.append((-1, -1 - move))
                continue
            source, k = divmod(move, self.width)
            slot = concrete.index(source)
            step = self.req.moves[source][k]
            concrete[slot] = step.target
            steps.append((slot, step.event))
        return steps, concrete

    def _name(self, concrete: list[int], move: int) -> str:
        if move < 0:
            return ENGINE_OWN_EVENTS[-1 - move].value
        source, k = divmod(move, self.width)
        slot = concrete.index(source)
        if k < len(self.req.moves[source]):
            step = self.req.moves[source][k]
            concrete[slot] = step.target
            event = ALL_EVENTS[step.event]
        else:
            event = ALL_EVENTS[self.req.malformed[source][0]]
        return f"r{slot + 1}:{event.name}"
