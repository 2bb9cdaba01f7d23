"""pytest plugin: ``pytest --dbp-engine module:attribute [--dbp-mode M] [--dbp-engine-args ARGS]`` runs each
conformance check as a test.

Registered through the ``pytest11`` entry point, so installing the package is
enough; without ``--dbp-engine`` it adds nothing.  The checks run once (on
the first conformance item) and each item reports its own check: passed,
failed with the kit's one-line reason, or skipped with why.

To assert conformance from a test of your own instead::

    from dynamo_backend_protocol.reference import assert_conforms

    def test_my_engine_conforms():
        assert_conforms(MyEngine)          # raises ConformanceFailure listing every failed check
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from dynamo_backend_protocol.model import DynamoError, Mode
from dynamo_backend_protocol.reference.conformance.checks import CHECKS, CheckSpec
from dynamo_backend_protocol.reference.conformance.report import CheckResult, ConformanceReport
from dynamo_backend_protocol.reference.conformance.session import EngineFactory, EngineFactoryError

DEFAULT_DEADLINE = 2.0


@dataclass
class _ConformanceRun:
    """The engine under test and, once run, its report (the kit runs once for all items)."""

    factory: EngineFactory
    label: str
    mode: Mode | None
    engine_args: str | None
    deadline: float
    examples: int
    _report: ConformanceReport | None = field(default=None, init=False)
    _error: EngineFactoryError | None = field(default=None, init=False)

    def report(self) -> ConformanceReport:
        if self._error is not None:
            raise self._error
        if self._report is None:
            # Imported here so that merely having the plugin installed costs pytest nothing.
            import asyncio

            from dynamo_backend_protocol.reference.conformance import run_conformance

            try:
                self._report = asyncio.run(run_conformance(
                    self.factory, mode=self.mode, engine_args=self.engine_args, cancel_deadline=self.deadline,
                    examples=self.examples, label=self.label,
                ))
            except EngineFactoryError as error:
                self._error = error
                raise
        return self._report


_RUN = pytest.StashKey[_ConformanceRun]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dynamo-backend-protocol", "engine conformance (dynamo-backend-protocol)")
    group.addoption("--dbp-engine", metavar="MODULE:ATTRIBUTE", default=None,
                    help="run the conformance checks on this engine class or zero-argument factory")
    group.addoption("--dbp-mode", metavar="agg|prefill|decode|encode", default=None,
                    help="disaggregation mode to check the engine in (default: the one it declares, else agg)")
    group.addoption("--dbp-engine-args", metavar="ARGS", default=None,
                    help="build the engine with its from_args(argv) classmethod, argv being ARGS split like a shell")
    group.addoption("--dbp-deadline", metavar="S", type=float, default=DEFAULT_DEADLINE,
                    help="seconds a cancelled stream may take to end (default 2)")
    group.addoption("--dbp-examples", metavar="N", type=int, default=None,
                    help="schedules the property-based phase draws (0 skips it)")


def pytest_configure(config: pytest.Config) -> None:
    reference = config.getoption("dbp_engine")
    if reference is None:
        return
    from dynamo_backend_protocol.reference.conformance import DEFAULT_EXAMPLES
    from dynamo_backend_protocol.reference.conformance.target import load_engine_factory

    asked: str | None = config.getoption("dbp_mode")
    try:
        mode = Mode.parse(asked) if asked is not None else None
    except DynamoError as error:
        raise pytest.UsageError(f"--dbp-mode: {error.message}") from None
    deadline: float = config.getoption("dbp_deadline")
    if not deadline > 0:
        raise pytest.UsageError(f"--dbp-deadline: must be more than 0 seconds, got {deadline}")
    examples: int | None = config.getoption("dbp_examples")
    if examples is not None and examples < 0:
        raise pytest.UsageError(f"--dbp-examples: must be 0 or more, got {examples}")
    try:
        factory = load_engine_factory(reference)
    except EngineFactoryError as error:
        raise pytest.UsageError(f"--dbp-engine: {error}") from None
    chosen = DEFAULT_EXAMPLES if examples is None else examples
    engine_args: str | None = config.getoption("dbp_engine_args")
    config.stash[_RUN] = _ConformanceRun(factory, reference.strip(), mode, engine_args, deadline, chosen)


@pytest.hookimpl(tryfirst=True)  # before -k/-m deselection, so those select conformance items too
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    if _RUN not in config.stash:
        return
    added = [ConformanceItem.from_parent(session, name=f"conformance[{spec.failure}]", spec=spec) for spec in CHECKS]
    items.extend(added)
    # Collection is over by now: report the items so the "collected N items" line counts them.
    config.hook.pytest_collectreport(report=pytest.CollectReport("conformance", "passed", None, list[Any](added)))


class CheckFailed(Exception):
    def __init__(self, result: CheckResult) -> None:
        super().__init__(f"{result.failure}: {result.reason}")
        self.result = result


class ConformanceItem(pytest.Item):
    """One conformance check of the engine named by ``--dbp-engine``."""

    def __init__(self, *, spec: CheckSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec

    def runtest(self) -> None:
        result = self.config.stash[_RUN].report().result(self.spec.failure)
        if result.skipped:
            pytest.skip(f"{result.failure}: {result.reason}")
        if result.failed:
            raise CheckFailed(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CheckFailed | EngineFactoryError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        run = self.config.stash[_RUN]
        mode = run.mode.value if run.mode is not None else "as declared"
        return self.path, None, f"{self.name} of {run.label} (mode {mode}): {self.spec.title}"
