"""spec/protocol.md and the model must tell the same story.

Every rule in the spec needs an invariant that enforces it and a test that
exercises it; every invariant must cite a rule the spec states; the rules the
spec states are exactly the model's rule IDs.  Invariants are found in every
registry the model has (any ``*INVARIANTS`` collection in any model module)
plus the whole-graph checks of the two explorers, so a new machine's rules
are covered as soon as it registers its invariants.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import dynamo_backend_protocol.model as model_package
import pytest
from dynamo_backend_protocol.model import (
    Mode,
)
from dynamo_backend_protocol.model.disagg import DISAGG_LIVENESS
from dynamo_backend_protocol.model.engine import Composition, engine_liveness
from dynamo_backend_protocol.model.explore import explore
from dynamo_backend_protocol.model.explore.lifecycle import explore_lifecycle
from dynamo_backend_protocol.model.rules import RULES

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "spec" / "protocol.md"
TESTS = ROOT / "tests"
RULE_HEADING = re.compile(r"^#### ([A-Z][A-Z0-9]*(?:-[A-Z0-9]+)+)\s*$", re.M)


@dataclass(frozen=True)
class SpecRule:
    rule: str
    text: str

    def field(self, label: str) -> str | None:
        found = re.search(rf"^- \*\*{label}:\*\*(.*(?:\n  .*)*)", self.text, re.M)
        return None if found is None else " ".join(found.group(1).split())

    def quoted(self, label: str) -> list[str]:
        return re.findall(r"`([^`]+)`", self.field(label) or "")


@cache
def spec_rules() -> dict[str, SpecRule]:
    text = SPEC.read_text()
    headings = list(RULE_HEADING.finditer(text))
    rules: dict[str, SpecRule] = {}
    for index, heading in enumerate(headings):
        end = headings[index + 1].start() if index + 1 < len(headings) else len(text)
        body = text[heading.end() : end]
        body = re.split(r"^#{1,3} ", body, maxsplit=1, flags=re.M)[0]
        assert heading.group(1) not in rules, f"rule {heading.group(1)} is stated twice"
        rules[heading.group(1)] = SpecRule(heading.group(1), body)
    return rules


def _model_modules() -> Iterable[object]:
    for info in pkgutil.walk_packages(model_package.__path__, prefix=f"{model_package.__name__}."):
        yield importlib.import_module(info.name)


@cache
def registered_invariants() -> dict[str, set[str]]:
    """Rule ID -> names of the invariants enforcing it, from every registry the model
    has, plus the whole-graph checks the explorer makes itself."""
    by_rule: dict[str, set[str]] = {}
    for module in _model_modules():
        for attribute, value in vars(module).items():
            if "INVARIANTS" not in attribute or not isinstance(value, (list, tuple, dict)):
                continue
            members = value.values() if isinstance(value, dict) else value
            for invariant in members:
                rule, name = getattr(invariant, "rule", None), getattr(invariant, "name", None)
                if isinstance(rule, str) and isinstance(name, str):
                    by_rule.setdefault(rule, set()).add(name)
    # Whole-graph properties and liveness are checked by the explorers, not registered.
    request, lifecycle = explore(Mode.AGGREGATED), explore_lifecycle()
    checked = [(result.rule, result.name) for result in [*request.invariants, *lifecycle.invariants]]
    checked += [(result.rule, result.name) for result in [*request.liveness, *lifecycle.liveness]]
    # The compositions' liveness properties (one per request for N requests: the first stands for all).
    checked += [(prop.rule, prop.name) for prop in DISAGG_LIVENESS]
    checked += [(prop.rule, prop.name) for prop in engine_liveness(Composition(1))]
    for rule, name in checked:
        by_rule.setdefault(rule, set()).add(name)
    return by_rule


@cache
def rule_aliases() -> dict[str, set[str]]:
    """Each rule ID and the names of model constants holding it (``DONE_REACHABLE``)."""
    aliases: dict[str, set[str]] = {rule: {rule} for rule in RULES}
    for module in _model_modules():
        for attribute, value in vars(module).items():
            if isinstance(value, str) and value in aliases and attribute.isupper():
                aliases[value].add(attribute)
    return aliases


def mentions(text: str, rule: str) -> bool:
    aliases = rule_aliases().get(rule, {rule})
    return any(re.search(rf"(?<![\w-]){re.escape(alias)}(?![\w-])", text) for alias in aliases)


@cache
def _test_file_sources() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(TESTS.rglob("test_*.py")) if path.name != "test_spec.py"}


def function_source(path: Path, name: str) -> str | None:
    source = path.read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return ast.get_source_segment(source, node)
    return None


SPEC_RULE_IDS = sorted(spec_rules())


def test_the_spec_states_exactly_the_model_rules() -> None:
    """An ID printed by check, explain or trace must lead to a rule in the spec, and
    the spec must not state rules the model does not know."""
    assert set(spec_rules()) == set(RULES)


def test_every_invariant_cites_a_rule_the_spec_states() -> None:
    """An invariant citing an ID the spec lacks would send readers nowhere."""
    missing = {rule: names for rule, names in registered_invariants().items() if rule not in spec_rules()}
    assert not missing


def test_rule_ids_mentioned_anywhere_in_the_spec_exist() -> None:
    """A cross-reference with a typo (DECODE-DEFFER) is caught."""
    prefixes = sorted({rule.split("-")[0] for rule in RULES})
    pattern = rf"\b(?:{'|'.join(prefixes)})-[A-Z][A-Z-]*[A-Z]\b"
    assert set(re.findall(pattern, SPEC.read_text())) <= set(RULES)


@pytest.mark.parametrize("rule", SPEC_RULE_IDS)
def test_every_rule_says_why_it_exists(rule: str) -> None:
    why = spec_rules()[rule].field("Why")
    assert why and len(why.split()) >= 8, f"{rule} needs a one-sentence reason"


def shell_obligation(rule: str) -> bool:
    """A rule of the fault model that binds the I/O shell (the adapter's tasks and threads, the trace
    reader), where the model has no state to state an invariant over: its spec says
    ``Invariants: none`` and it must cite the tests that hold it instead."""
    invariants = spec_rules()[rule].field("Invariants") or ""
    return invariants.startswith("none") and any("::" in cited for cited in spec_rules()[rule].quoted("Tests"))


@pytest.mark.parametrize("rule", SPEC_RULE_IDS)
def test_every_rule_is_enforced_by_an_invariant(rule: str) -> None:
    """A rule nothing checks is a wish, not a rule: an invariant enforces it, or, for an obligation
    of the I/O shell, the named tests do."""
    if shell_obligation(rule):
        return
    assert registered_invariants().get(rule), (
        f"{rule} has no invariant in any model registry (or explorer check); "
        "for LIFECYCLE-* rules this passes once model/lifecycle.py registers its invariants"
    )


@pytest.mark.parametrize("rule", SPEC_RULE_IDS)
def test_the_invariants_the_spec_names_are_the_ones_enforcing_the_rule(rule: str) -> None:
    """The spec's 'Invariants' line names every invariant of the rule, and only real
    ones, so a reader can find the predicate that checks it."""
    named = spec_rules()[rule].quoted("Invariants")
    assert set(named) == registered_invariants().get(rule, set())


@pytest.mark.parametrize("rule", SPEC_RULE_IDS)
def test_every_rule_has_a_test(rule: str) -> None:
    """Some test besides this file exercises the rule by ID (or by its model constant)."""
    assert any(mentions(text, rule) for text in _test_file_sources().values()), f"no test mentions {rule}"


@pytest.mark.parametrize("rule", SPEC_RULE_IDS)
def test_the_tests_the_spec_cites_exist_and_exercise_the_rule(rule: str) -> None:
    """A cited test file or test function must exist and mention the rule, so the
    spec's 'Tests' line cannot rot silently."""
    for cited in spec_rules()[rule].quoted("Tests"):
        file_name, _, function = cited.partition("::")
        path = ROOT / file_name
        if not path.exists():
            pytest.fail(f"{rule} cites {file_name}, which does not exist")
        source = path.read_text() if not function else function_source(path, function)
        assert source is not None, f"{rule} cites {cited}, which does not exist"
        assert mentions(source, rule), f"{cited} does not mention {rule}"


def test_every_committed_diagram_is_embedded_in_the_spec() -> None:
    """Diagrams are generated to be read; one that the spec does not show is dead weight."""
    text = SPEC.read_text()
    for svg in sorted((SPEC.parent / "diagrams").glob("*.svg")):
        assert f"(diagrams/{svg.name})" in text, svg.name
