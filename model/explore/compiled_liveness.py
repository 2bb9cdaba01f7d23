"""Liveness on the compiled, symmetry-reduced graph of N requests sharing one engine.

The generic search (:mod:`.liveness`) needs the whole graph with its events and
its strongly connected components, which beyond two requests is too slow.  The
composition has a shape that makes most of that work unnecessary, and this
module checks the shape before it relies on it:

- a request's machine only moves forward: apart from events that change
  nothing, its moves form no cycle (checked on the compiled request machine);
- so in a composed loop no request changes state, and every loop lies inside a
  *frozen component*: the requests where they are, the lifecycle inside one
  strongly connected part of its own events' graph (cleanup removed while a
  request is in flight), taking the engine's own events and the requests'
  events that change nothing.

A property has a fair counterexample iff some reachable state that triggers it,
and is not a goal, lies in a frozen component that is fair: for every fairness
class, an event of the class is taken inside it or the class is disabled at one
of its states (the same test as the generic search, on a component it builds
from a few small tables rather than from the graph).  Triggers must persist
until the goal (checked on the machines' moves), so the first such state in
breadth-first order is the entry of a shortest lasso, as the generic search
finds it.

Fairness is per request: each class covers one request's events or the
engine's own (checked).  With symmetry a state holds request *values*, not
names; a property whose fairness singles one request out (request 3 reaches
Done, or cleanup begins without request 2's fairness) is checked with that
request being any one of the values, and its lasso names it accordingly.  A
property's trigger and goal must read only the lifecycle and the request it
names (``tests/model/test_compiled_liveness.py`` holds the verdicts to the
generic search's where both run).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dynamo_backend_protocol.model.engine import (
    ENGINE_OWN_EVENTS,
    Composition,
    EngineEvent,
    EngineLiveness,
    EngineState,
    RequestMove,
    engine_liveness,
)
from dynamo_backend_protocol.model.exceptions import ProtocolError, ProtocolViolation, TableError
from dynamo_backend_protocol.model.explore.compiled import CompiledGraph
from dynamo_backend_protocol.model.explore.liveness import Lasso, LivenessResult
from dynamo_backend_protocol.model.explore.walk import shortest_walk
from dynamo_backend_protocol.model.lifecycle import LifecycleEvent
from dynamo_backend_protocol.model.liveness import Fairness
from dynamo_backend_protocol.model.machine import CompiledTable
from dynamo_backend_protocol.model.vocabulary import ALL_EVENTS


class UnsupportedLiveness(ProtocolError):
    """The composition or a property lacks the shape this check relies on; the message says which."""


_CLEANUP = ENGINE_OWN_EVENTS.index(LifecycleEvent.CLEANUP_CALLED)


@dataclass(frozen=True)
class _Class:
    """A fairness class as this check reads it: events of one request slot, or the engine's own."""

    name: str
    slot: int
    """The request slot whose events it covers, or -1 for the engine's own events."""
    events: frozenset[int]
    """Indices in ALL_EVENTS (a request's) or in ENGINE_OWN_EVENTS (the engine's)."""


@dataclass(frozen=True)
class _Variant:
    """One fairness assumption set of a property: the distinguished slot's classes, every other slot's, the engine's."""

    classes: tuple[_Class, ...]
    slot: int
    mine: tuple[frozenset[int], ...]
    others: tuple[frozenset[int], ...]
    engine: tuple[frozenset[int], ...]


class _Machines:
    """The small tables a frozen component is judged from."""

    def __init__(self, graph: CompiledGraph, composition: Composition, table: CompiledTable) -> None:
        req, life = graph.requests, graph.lifecycle
        self.graph, self.composition = graph, composition
        self.n = composition.requests
        self.live = req.live
        self.loops: list[frozenset[int]] = []
        """Per request state: the events that change nothing (always allowed)."""
        self.moving: list[frozenset[int]] = []
        """Per request state: the events that move it (out of the initial state: only where generate is served)."""
        for state in req.states:
            loops: set[int] = set()
            moving: set[int] = set()
            for index, ev in enumerate(ALL_EVENTS):
                try:
                    after = table.step(state, ev).after
                except (ProtocolViolation, TableError):
                    continue
                (loops if after == state else moving).add(index)
            self.loops.append(frozenset(loops))
            self.moving.append(frozenset(moving))
        self.serves = [target >= 0 for target in life.generate]
        self.waits = composition.cleanup_waits_for_requests
        self.own = life.own
        self.life = life
        _check_requests_move_forward(graph)
        self._components: dict[tuple[frozenset[int], bool], dict[int, frozenset[int]]] = {}

    def enabled(self, value: int, lc: int) -> frozenset[int]:
        return self.loops[value] | self.moving[value] if value or self.serves[lc] else self.loops[value]

    def own_enabled(self, lc: int, live: bool) -> list[tuple[int, int]]:
        return [(e, to) for e, to in self.own[lc] if not (e == _CLEANUP and live and self.waits)]

    def component(self, allowed: frozenset[int], live: bool, lc: int) -> frozenset[int]:
        """The strongly connected part of the engine's own events' graph on ``allowed`` holding ``lc``."""
        key = (allowed, live)
        found = self._components.get(key)
        if found is None:
            found = self._components[key] = self._strong_parts(allowed, live)
        return found[lc]

    def _strong_parts(self, allowed: frozenset[int], live: bool) -> dict[int, frozenset[int]]:
        reach = {lc: self._reachable(lc, allowed, live) for lc in allowed}
        return {lc: frozenset(other for other in reach[lc] if lc in reach[other]) for lc in allowed}

    def _reachable(self, start: int, allowed: frozenset[int], live: bool) -> frozenset[int]:
        seen, queue = {start}, deque([start])
        while queue:
            lc = queue.popleft()
            for _, to in self.own_enabled(lc, live):
                if to in allowed and to not in seen:
                    seen.add(to)
                    queue.append(to)
        return frozenset(seen)


def _check_requests_move_forward(graph: CompiledGraph) -> None:
    moves = graph.requests.moves
    colour = [0] * len(moves)
    for root in range(len(moves)):
        if colour[root]:
            continue
        stack = [(root, iter(moves[root]))]
        colour[root] = 1
        while stack:
            state, pending = stack[-1]
            move = next(pending, None)
            if move is None:
                colour[state] = 2
                stack.pop()
            elif move.target != state:
                if colour[move.target] == 1:
                    raise UnsupportedLiveness(
                        "the request machine has a cycle of moves; the compiled liveness check needs it to move forward"
                    )
                if colour[move.target] == 0:
                    colour[move.target] = 1
                    stack.append((move.target, iter(moves[move.target])))


class _Property:
    """One liveness property on request values: trigger and goal as tables, its fairness variants."""

    def __init__(self, prop: EngineLiveness, machines: _Machines) -> None:
        self.prop = prop
        self.m = machines
        graph, n = machines.graph, machines.n
        states = graph.requests.states
        initial = states[0]

        def tables(slot: int) -> tuple[list[list[bool]], list[list[bool]]]:
            triggers, goals = [], []
            for life_state in graph.lifecycle.states:
                row = [
                    EngineState(life_state, tuple(value if j == slot else initial for j in range(n)))
                    for value in states
                ]
                triggers.append([prop.trigger(state) for state in row])
                goals.append([prop.goal(state) for state in row])
            return triggers, goals

        per_slot = [tables(slot) for slot in range(n)]
        reads = [slot for slot, (t, g) in enumerate(per_slot) if any(len(set(row)) > 1 for row in (*t, *g))]
        if len(reads) > 1:
            raise UnsupportedLiveness(f"{prop.name}: its trigger or goal reads more than one request")
        self.home = reads[0] if reads else None
        """The request the trigger and goal read, if any."""
        self.trigger, self.goal = per_slot[self.home or 0]
        self._allowed: dict[int, frozenset[int]] = {}
        fairness = list(prop.fairness)
        self.variants = [_variant(fairness, n, prop.name, self.home),
                         *(_variant([f for f in fairness if f is not dropped], n, prop.name, self.home)
                           for dropped in fairness)]
        if fairness:
            self.variants.append(_variant([], n, prop.name, self.home))
        self.triggers = [frozenset(v for v, hit in enumerate(row) if hit) for row in self.trigger]
        self.opens = [
            frozenset(v for v in range(len(states)) if self.open(lc, v)) for lc in range(len(self.trigger))
        ]
        self._check_trigger_persists()

    def allowed(self, value: int) -> frozenset[int]:
        """The lifecycle states where the property's goal is not reached with this value."""
        found = self._allowed.get(value)
        if found is None:
            found = self._allowed[value] = frozenset(lc for lc, goals in enumerate(self.goal) if not goals[value])
        return found

    def open(self, lc: int, value: int) -> bool:
        """Triggered and not yet at the goal."""
        return self.trigger[lc][value] and not self.goal[lc][value]

    def _check_trigger_persists(self) -> None:
        life, moves = self.m.life, self.m.graph.requests.moves
        for lc in range(len(life.states)):
            through_others = {lc, *(t for t in (life.generate[lc], life.abort[lc]) if t >= 0)}
            if life.generate[lc] >= 0 and life.abort[life.generate[lc]] >= 0:
                through_others.add(life.abort[life.generate[lc]])
            through_others.update(to for _, to in self.m.own[lc])
            for value in range(len(moves)):
                if not self.open(lc, value):
                    continue
                after = [(to, value) for to in through_others]
                for move in moves[value]:
                    to = life.generate[lc] if move.generates else lc
                    if to < 0:
                        continue
                    if move.aborts and life.abort[to] >= 0:
                        to = life.abort[to]
                    after.append((to, move.target))
                if any(not (self.trigger[a][v] or self.goal[a][v]) for a, v in after):
                    raise UnsupportedLiveness(f"{self.prop.name}: its trigger can lapse before its goal")


def _variant(fairness: Sequence[Fairness[EngineEvent]], n: int, name: str, home: int | None) -> _Variant:
    """The variant's classes by slot; its distinguished slot is ``home`` (the request the
    property reads) wherever every other slot is treated alike, else the one slot treated
    differently from the rest."""
    classes: list[_Class] = []
    for fair in fairness:
        slots = {
            slot: frozenset(i for i, ev in enumerate(ALL_EVENTS) if fair.covers(RequestMove(slot, ev)))
            for slot in range(n)
        }
        touched = {slot: events for slot, events in slots.items() if events}
        own = frozenset(i for i, ev in enumerate(ENGINE_OWN_EVENTS) if fair.covers(ev))
        if len(touched) + bool(own) > 1:
            raise UnsupportedLiveness(
                f"{name}: fairness {fair.name} covers more than one request's or the engine's events"
            )
        slot, events = next(iter(touched.items())) if touched else (-1, own)
        classes.append(_Class(fair.name, slot, events))
    per_slot = [tuple(sorted((c.events for c in classes if c.slot == slot), key=sorted)) for slot in range(n)]
    def alike_but(slot: int) -> bool:
        return len({per_slot[other] for other in range(n) if other != slot}) <= 1

    candidates = [slot for slot in ([] if home is None else [home]) + list(range(n)) if alike_but(slot)]
    if not candidates:
        raise UnsupportedLiveness(f"{name}: its fairness treats more than one request differently from the rest")
    slot = candidates[0]
    if home is not None and slot != home:
        raise UnsupportedLiveness(f"{name}: its fairness singles out another request than the one it reads")
    others = next((per_slot[other] for other in range(n) if other != slot), per_slot[slot])
    engine = tuple(c.events for c in classes if c.slot < 0)
    return _Variant(tuple(classes), slot, per_slot[slot], others, engine)


@dataclass
class _Found:
    state: int
    value: int


def check_compiled_liveness(graph: CompiledGraph) -> list[LivenessResult]:
    """Every liveness property of the graph's composition (:func:`engine_liveness`) under its
    fairness, under each assumption dropped in turn and under none, as the generic search reports
    them.  Raises :class:`UnsupportedLiveness` where the composition lacks the shape it needs."""
    composition = graph.composition
    machines = _Machines(graph, composition, graph.table)
    properties = [_Property(prop, machines) for prop in engine_liveness(composition)]
    # A property that is another with two requests' names swapped has its verdicts, renamed.
    mirrors = {p: _mirror_of(prop, properties[:p]) for p, prop in enumerate(properties)}
    checked = [p for p, mirror in mirrors.items() if mirror is None]
    judge = _Judge(machines, [properties[p] for p in checked])
    # Request values that no condition tells apart are one kind: a state is judged by its
    # lifecycle state and the kinds it holds, and few such pairs exist.
    kind, representative = judge.kinds()
    unresolved = {(p, v) for p in range(len(checked)) for v in range(len(properties[checked[p]].variants))}
    found: dict[tuple[int, int], _Found] = {}
    untriggered = set(range(len(checked)))
    memo: dict[tuple[int, frozenset[int]], tuple[list[tuple[int, int, int, bool]], list[int]]] = {}
    kind_of = kind.__getitem__
    for index, state in enumerate(graph.order):
        if not graph.expanded[index]:
            continue
        values = state[1:]
        kinds = frozenset(map(kind_of, values))
        entry = memo.get((state[0], kinds))
        if entry is None:
            entry = memo[(state[0], kinds)] = judge.candidates(
                state[0], frozenset(representative[k] for k in kinds), unresolved
            )
        candidates, triggering = entry
        untriggered.difference_update(triggering)
        for p, v, value, fine_as_other in candidates:
            if (p, v) not in unresolved:
                continue
            alike = [other for other in values if kind[other] == kind[value]]
            if fine_as_other or len(alike) == 1:
                unresolved.discard((p, v))
                found[(checked[p], v)] = _Found(index, min(alike))
        if not unresolved and not untriggered:
            break
    untriggered = {checked[p] for p in untriggered}
    results: dict[int, LivenessResult] = {}
    for p in checked:
        prop = properties[p]
        lassos = [
            None if (p, v) not in found else _lasso(machines, prop, prop.variants[v], found[(p, v)])
            for v in range(len(prop.variants))
        ]
        results[p] = _result(prop.prop, p not in untriggered, lassos)
    for p, mirror in mirrors.items():
        if mirror is not None:
            source, swap = mirror
            results[p] = _renamed(results[source], properties[p].prop, swap)
    return [results[p] for p in range(len(properties))]


def _result(prop: EngineLiveness, triggered: bool, lassos: list[Lasso | None]) -> LivenessResult:
    result = LivenessResult(prop.rule, prop.name, [f.name for f in prop.fairness])
    result.triggered = triggered
    result.counterexample = lassos[0]
    if result.counterexample is None:
        for dropped, lasso in zip(prop.fairness, lassos[1:], strict=False):
            if lasso is not None:
                result.without[dropped.name] = lasso
        result.without_fairness = lassos[-1] if prop.fairness else None
    return result


def _mirror_of(prop: _Property, earlier: list[_Property]) -> tuple[int, tuple[int, int]] | None:
    """An earlier property this one is, with the requests in two slots swapped (and the slots)."""
    for p, other in enumerate(earlier):
        if prop.home is None or other.home is None or len(prop.variants) != len(other.variants):
            continue
        swap = (other.home, prop.home)
        if prop.trigger != other.trigger or prop.goal != other.goal:
            continue
        if all(_swapped(a, swap) == _shape(b) for a, b in zip(other.variants, prop.variants, strict=True)):
            return p, swap
    return None


def _shape(variant: _Variant) -> list[tuple[int, frozenset[int]]]:
    return [(c.slot, c.events) for c in variant.classes]


def _swapped(variant: _Variant, swap: tuple[int, int]) -> list[tuple[int, frozenset[int]]]:
    a, b = swap
    return [(b if slot == a else a if slot == b else slot, events) for slot, events in _shape(variant)]


_REQUEST_NAME = re.compile(r"^r(\d+):")


def _renamed(result: LivenessResult, prop: EngineLiveness, swap: tuple[int, int]) -> LivenessResult:
    a, b = (f"r{slot + 1}" for slot in swap)

    def name(event: str) -> str:
        match = _REQUEST_NAME.match(event)
        if match is None:
            return event
        request = f"r{match.group(1)}"
        return (b if request == a else a if request == b else request) + event[match.end() - 1 :]

    def lasso(found: Lasso | None) -> Lasso | None:
        return None if found is None else Lasso([name(e) for e in found.prefix], [name(e) for e in found.cycle])

    renamed = LivenessResult(prop.rule, prop.name, [f.name for f in prop.fairness], result.triggered)
    renamed.counterexample = lasso(result.counterexample)
    names = dict(zip(result.fairness, renamed.fairness, strict=True))
    renamed.without = {names[k]: found for k, v in result.without.items() if (found := lasso(v)) is not None}
    renamed.without_fairness = lasso(result.without_fairness)
    return renamed


class _Judge:
    """Which request values of a (lifecycle, set of values) pair can be a property's
    distinguished request in a fair frozen component."""

    def __init__(self, machines: _Machines, properties: list[_Property]) -> None:
        self.m = machines
        self.properties = properties
        self.loopers = frozenset(value for value, loops in enumerate(machines.loops) if loops)
        self._sets: dict[tuple[int, int, frozenset[int], bool], tuple[bool, frozenset[int], frozenset[int]]] = {}
        self._inner: dict[tuple[frozenset[int], bool], bool] = {}

    def kinds(self) -> tuple[list[int], list[int]]:
        """Each request value's kind (values alike in everything :meth:`candidates` reads), and one value per kind."""
        m = self.m
        count = len(m.loops)
        combos: list[tuple[int, int, frozenset[int], bool]] = []
        for p, prop in enumerate(self.properties):
            for allowed in {prop.allowed(value) for value in range(count)}:
                for live in (False, True):
                    components = {m.component(allowed, live, lc) for lc in allowed}
                    combos += [(p, v, c, live) for c in components for v in range(len(prop.variants))]
        signatures: dict[tuple[object, ...], int] = {}
        kind: list[int] = []
        representative: list[int] = []
        for value in range(count):
            signature: tuple[object, ...] = (
                value in m.live,
                value in self.loopers,
                *(
                    (
                        prop.allowed(value),
                        tuple(value in row for row in prop.triggers),
                        tuple(value in row for row in prop.opens),
                    )
                    for prop in self.properties
                ),
                *((value in sets[1], value in sets[2]) for sets in map(self._fair_sets_of, combos)),
            )
            found = signatures.get(signature)
            if found is None:
                found = signatures[signature] = len(representative)
                representative.append(value)
            kind.append(found)
        return kind, representative

    def _fair_sets_of(
        self, combo: tuple[int, int, frozenset[int], bool]
    ) -> tuple[bool, frozenset[int], frozenset[int]]:
        return self._fair_sets(*combo)

    def candidates(
        self, lc: int, values: frozenset[int], wanted: set[tuple[int, int]]
    ) -> tuple[list[tuple[int, int, int, bool]], list[int]]:
        """``(property, variant, value, fine as another request too)`` for a fair choice of the
        property's request among ``values`` (for each variant still ``wanted``), and the
        properties some value triggers here."""
        m = self.m
        live = not m.live.isdisjoint(values)
        loops_somewhere = not self.loopers.isdisjoint(values)
        found: list[tuple[int, int, int, bool]] = []
        triggering: list[int] = []
        for p, prop in enumerate(self.properties):
            if not prop.triggers[lc].isdisjoint(values):
                triggering.append(p)
            opened = prop.opens[lc] & values
            if not opened:
                continue
            variants = [v for v in range(len(prop.variants)) if (p, v) in wanted]
            by_component: dict[frozenset[int], list[int]] = {}
            for value in sorted(opened):
                by_component.setdefault(m.component(prop.allowed(value), live, lc), []).append(value)
            for component, chosen in by_component.items():
                if not (loops_somewhere or self._has_inner(component, live)):
                    continue
                for v in variants:
                    engine_fair, fair_mine, fair_other = self._fair_sets(p, v, component, live)
                    if not engine_fair:
                        continue
                    blocking = values - fair_other
                    if not blocking:
                        mine = next((value for value in chosen if value in fair_mine), None)
                        if mine is not None:
                            found.append((p, v, mine, True))
                    elif len(blocking) == 1:
                        (value,) = blocking
                        if value in fair_mine and value in chosen:
                            found.append((p, v, value, False))
        return found, triggering

    def _has_inner(self, component: frozenset[int], live: bool) -> bool:
        key = (component, live)
        known = self._inner.get(key)
        if known is None:
            known = self._inner[key] = any(
                to in component for lc in component for _, to in self.m.own_enabled(lc, live)
            )
        return known

    def _fair_sets(
        self, p: int, v: int, component: frozenset[int], live: bool
    ) -> tuple[bool, frozenset[int], frozenset[int]]:
        """Whether the engine's classes are fair in the component, and which request values are
        fair there as the property's request and as any other."""
        key = (p, v, component, live)
        known = self._sets.get(key)
        if known is None:
            variant = self.properties[p].variants[v]
            values = range(len(self.m.loops))
            known = self._sets[key] = (
                self._engine_fair(component, live, variant.engine),
                frozenset(value for value in values if self._request_fair(value, component, variant.mine)),
                frozenset(value for value in values if self._request_fair(value, component, variant.others)),
            )
        return known

    def _request_fair(self, value: int, component: frozenset[int], classes: tuple[frozenset[int], ...]) -> bool:
        m = self.m
        return all(
            bool(m.loops[value] & events) or any(not (m.enabled(value, lc) & events) for lc in component)
            for events in classes
        )

    def _engine_fair(self, component: frozenset[int], live: bool, classes: tuple[frozenset[int], ...]) -> bool:
        m = self.m
        for events in classes:
            taken = any(e in events and to in component for lc in component for e, to in m.own_enabled(lc, live))
            idle = any(all(e not in events for e, _ in m.own_enabled(lc, live)) for lc in component)
            if not (taken or idle):
                return False
        return True


Step = tuple[int, int]
"""``(request slot, event index)``, or ``(-1, index in ENGINE_OWN_EVENTS)`` for the engine's own."""


def _lasso(machines: _Machines, prop: _Property, variant: _Variant, found: _Found) -> Lasso:
    """The run to the entry, with the distinguished value's request renamed to the variant's
    slot, then a loop inside the frozen component: a witness per fairness class, as the
    generic search builds it, then back to the entry."""
    m = machines
    steps, concrete = m.graph.paths.steps(found.state)
    source, target = concrete.index(found.value), variant.slot

    def rename(slot: int) -> int:
        return target if slot == source else source if slot == target else slot

    named = [concrete[rename(slot)] for slot in range(m.n)]
    prefix = [_name((rename(slot), e) if slot >= 0 else (slot, e)) for slot, e in steps]
    entry = m.graph.order[found.state][0]
    live = not m.live.isdisjoint(named)
    component = m.component(prop.allowed(found.value), live, entry)

    def moves(lc: int) -> list[tuple[Step, int]]:
        own = [((-1, e), to) for e, to in m.own_enabled(lc, live) if to in component]
        loops = [((slot, e), lc) for slot in range(m.n) for e in sorted(m.loops[named[slot]])]
        return own + loops

    def enabled(lc: int) -> list[Step]:
        own = [(-1, e) for e, _ in m.own_enabled(lc, live)]
        return own + [(slot, e) for slot in range(m.n) for e in sorted(m.enabled(named[slot], lc))]

    def covers(fair: _Class, step: Step) -> bool:
        return step[0] == fair.slot and step[1] in fair.events

    def disabled(fair: _Class, lc: int) -> bool:
        return not any(covers(fair, step) for step in enabled(lc))

    def walk(start: int, goal: Callable[[Step, int], bool]) -> tuple[list[Step], int]:
        found = shortest_walk(start, moves, goal)
        if found is None:
            raise AssertionError("a fair frozen component has a witness for every fairness class")
        return found

    cycle: list[Step] = []
    here = entry
    for fair in variant.classes:
        if disabled(fair, here):
            continue
        path, here = walk(here, _witness(fair, covers, disabled))
        cycle += path
    if here != entry or not cycle:
        path, here = walk(here, lambda step, after: after == entry)
        cycle += path
    return Lasso(prefix, [_name(step) for step in cycle])


def _witness(
    fair: _Class, covers: Callable[[_Class, Step], bool], disabled: Callable[[_Class, int], bool]
) -> Callable[[Step, int], bool]:
    """A step that takes an event of the class, or reaches a state where the class is disabled."""
    return lambda step, after: covers(fair, step) or disabled(fair, after)


def _name(step: Step) -> str:
    slot, e = step
    return ENGINE_OWN_EVENTS[e].value if slot < 0 else f"r{slot + 1}:{ALL_EVENTS[e].name}"
