"""One exception hierarchy: every error the package raises on its own account is a ProtocolError.

A caller (a backend author's harness, the CLI, the pytest plugin) can then tell
our refusals from a bug with one ``except`` clause, and a refusal by a rule of
the protocol names that rule, so a user can look it up in spec/protocol.md.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil

import dynamo_backend_protocol
import pytest
from dynamo_backend_protocol.model.errors import DynamoError
from dynamo_backend_protocol.model.exceptions import ProtocolError, RuleRefusal
from dynamo_backend_protocol.model.rules import RULES

PACKAGE = dynamo_backend_protocol.__name__

NOT_EXCEPTIONS = {
    # Signals sent through engine or Hypothesis code that must not be caught by its
    # ``except Exception``; each says why in its docstring or a comment.
    f"{PACKAGE}.reference.conformance.watchdog.BlockedLoop",
    f"{PACKAGE}.reference.conformance.fuzz._Interrupted",
    f"{PACKAGE}.reference.conformance.fuzz._OutOfTime",
}
"""The package's own BaseExceptions that are deliberately no ``Exception``, so no ProtocolError."""


def package_modules() -> list[str]:
    """Every module of the installed package.  None needs Dynamo's packages to import (they are
    imported inside the functions that use them), so a failing import here is a real failure.
    ``__main__`` runs the CLI when imported, so it is left out (it defines no class)."""
    walked = pkgutil.walk_packages(dynamo_backend_protocol.__path__, f"{PACKAGE}.")
    return sorted(module.name for module in walked if not module.name.endswith(".__main__"))


def package_exception_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in the package, wherever it is defined (a module, a class, a function
    that has run), by qualified name."""
    for name in package_modules():
        importlib.import_module(name)
    found: dict[str, type[BaseException]] = {}
    pending: list[type[BaseException]] = [BaseException]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            if sub.__module__.startswith(f"{PACKAGE}."):
                found[f"{sub.__module__}.{sub.__qualname__}"] = sub
            pending.append(sub)
    return found


def test_every_exception_the_package_defines_is_a_protocol_error() -> None:
    """One ``except ProtocolError`` catches every error of ours; DynamoError alone stands outside, as the engine's
    typed error the protocol carries, and so do the signals that must pass through ``except Exception``."""
    classes = package_exception_classes()
    assert len(classes) > 30, sorted(classes)  # the walk found the package's classes, not just the root's
    outside = {
        name for name, cls in classes.items()
        if not issubclass(cls, ProtocolError) and cls is not DynamoError and name not in NOT_EXCEPTIONS
    }
    assert outside == set()


def test_the_signals_outside_the_hierarchy_are_no_exceptions() -> None:
    """A class is only excused from the hierarchy for being no ``Exception``: an ``Exception`` subclass among
    the signals would be caught by the ``except Exception`` it is meant to pass through."""
    classes = package_exception_classes()
    assert set(classes) >= NOT_EXCEPTIONS
    assert [name for name in sorted(NOT_EXCEPTIONS) if issubclass(classes[name], Exception)] == []


def test_errors_callers_catch_as_builtins_are_still_those_builtins() -> None:
    """Re-rooting changed no ``except``: what callers catch as ValueError, KeyError, TypeError, RuntimeError or
    AssertionError (pytest's failure) is still that."""
    from dynamo_backend_protocol.model.teach.composed_events import BadComposedEvent
    from dynamo_backend_protocol.model.teach.narrate_raw import UnknownRawEvent
    from dynamo_backend_protocol.model.teach.scenarios import UnknownScenario
    from dynamo_backend_protocol.model.traces.check import MalformedRecord
    from dynamo_backend_protocol.model.vocabulary import UnknownEvent
    from dynamo_backend_protocol.reference.bench.targets import UnknownTarget
    from dynamo_backend_protocol.reference.conformance.report import ConformanceFailure
    from dynamo_backend_protocol.reference.conformance.session import EngineFactoryError
    from dynamo_backend_protocol.reference.differential.plays import NotPlayable
    from dynamo_backend_protocol.reference.loop_affinity import ForeignEventLoop

    kept: dict[type[Exception], type[Exception]] = {
        UnknownEvent: ValueError, MalformedRecord: ValueError, BadComposedEvent: ValueError,
        UnknownRawEvent: ValueError, NotPlayable: ValueError, UnknownTarget: ValueError,
        UnknownScenario: KeyError, EngineFactoryError: TypeError, ForeignEventLoop: RuntimeError,
        ConformanceFailure: AssertionError,
    }
    assert [cls.__name__ for cls, builtin in kept.items() if not issubclass(cls, builtin)] == []
    assert [cls.__name__ for cls in kept if not issubclass(cls, ProtocolError)] == []


def test_a_stream_read_under_another_loop_is_refused_naming_its_rule() -> None:
    """The adapter's refusal of a foreign event loop says which rule refuses it, and what the rule says."""
    from dynamo_backend_protocol.reference.loop_affinity import require_home_loop

    other = asyncio.new_event_loop()
    try:
        async def read_elsewhere() -> None:
            require_home_loop(other)

        with pytest.raises(RuleRefusal) as refused:
            asyncio.run(read_elsewhere())
    finally:
        other.close()
    assert refused.value.rule == "FAULT-STREAM-LOOP"
    assert str(refused.value).endswith(f"(rule FAULT-STREAM-LOOP: {RULES['FAULT-STREAM-LOOP']})")


def test_a_kit_wait_past_its_bound_is_refused_naming_its_rule() -> None:
    """A conformance wait that overran says how long it waited and names the kit's rule on bounds."""
    from dynamo_backend_protocol.reference.conformance.session import KitTimeout, bounded

    with pytest.raises(KitTimeout) as overran:
        asyncio.run(bounded(asyncio.sleep(5), 0.05, "start"))
    assert isinstance(overran.value, RuleRefusal)
    assert str(overran.value) == (
        f"start did not finish within 0.05 s (rule FAULT-KIT-BOUNDED: {RULES['FAULT-KIT-BOUNDED']})"
    )

