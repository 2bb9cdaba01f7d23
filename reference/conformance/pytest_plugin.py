"""pytest plugin: ``pytest --dbp-engine module:attribute [--dbp-mode M] [--dbp-engine-args ARGS]`` runs each
conformance check as a test.

Registered through the ``pytest11`` entry point, so installing the package is
enough; without ``--dbp-engine`` it adds nothing (and any other ``--dbp-*``
option is a usage error).  The checks run once (on the first conformance
item) and each item reports its own check: passed, failed with the kit's
one-line reason, or skipped with why.  The items hang off the engine's own
module file, ``my_engine.py::StartFailed``, so an id pytest
printed can be given back to it (``pytest "my_engine.py::StartFailed"
--dbp-engine my_engine:MyEngine``) and ``--lf`` reruns the checks that failed.

To assert conformance from a test of your own instead::

    from dynamo_backend_protocol.reference import assert_conforms

    def test_my_engine_conforms():
        assert_conforms(MyEngine)          # raises ConformanceFailure listing every failed check
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from dynamo_backend_protocol.model import DynamoError, Mode
from dynamo_backend_protocol.reference.conformance.checks import CHECKS, CheckSpec
from dynamo_backend_protocol.reference.conformance.report import CheckResult, ConformanceReport
from dynamo_backend_protocol.reference.conformance.session import EngineFactory, EngineFactoryError

OPTIONS_NEEDING_ENGINE = ("dbp_mode", "dbp_engine_args", "dbp_cancel_deadline", "dbp_examples", "dbp_start_timeout",
                          "dbp_cleanup_timeout", "dbp_stream_timeout")
SECONDS_OPTIONS = {"dbp_cancel_deadline": "cancel_deadline", "dbp_start_timeout": "start_timeout",
                   "dbp_cleanup_timeout": "cleanup_timeout", "dbp_stream_timeout": "stream_timeout"}


@dataclass
class _ConformanceRun:
    """The engine under test and, once run, its report (the kit runs once for all items)."""

    factory: EngineFactory
    label: str
    mode: Mode | None
    engine_args: str | None
    examples: int
    seconds: dict[str, float]
    """The timeouts and the cancel deadline given on the command line, by run_conformance's keyword."""
    anchor: Path
    """The file the items hang off: the engine's module (or, without one, this plugin)."""
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
                    self.factory, mode=self.mode, engine_args=self.engine_args, examples=self.examples,
                    label=self.label, **self.seconds,  # type: ignore[arg-type]
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
    group.addoption("--dbp-cancel-deadline", "--dbp-deadline", dest="dbp_cancel_deadline", metavar="S", type=float,
                    default=None, help="seconds a cancelled stream may take to end (default 2)")
    group.addoption("--dbp-start-timeout", metavar="S", type=float, default=None,
                    help="seconds start() may take, e.g. loading weights (default 900)")
    group.addoption("--dbp-cleanup-timeout", metavar="S", type=float, default=None,
                    help="seconds each cleanup() may take (default 60)")
    group.addoption("--dbp-stream-timeout", metavar="S", type=float, default=None,
                    help="seconds each stream may take to end (default 60)")
    group.addoption("--dbp-examples", metavar="N", type=int, default=None,
                    help="schedules the property-based phase draws (0 skips it)")


def pytest_configure(config: pytest.Config) -> None:
    reference = config.getoption("dbp_engine")
    if reference is None:
        given = [name for name in OPTIONS_NEEDING_ENGINE if config.getoption(name) is not None]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise pytest.UsageError(f"{flag} needs --dbp-engine MODULE:ATTRIBUTE, the engine to check")
        return
    from dynamo_backend_protocol.reference.conformance import DEFAULT_EXAMPLES
    from dynamo_backend_protocol.reference.conformance.target import load_engine_factory

    asked: str | None = config.getoption("dbp_mode")
    try:
        mode = Mode.parse(asked) if asked is not None else None
    except DynamoError as error:
        raise pytest.UsageError(f"--dbp-mode: {error.message}") from None
    seconds: dict[str, float] = {}
    for option, keyword in SECONDS_OPTIONS.items():
        value: float | None = config.getoption(option)
        if value is not None and not value > 0:
            raise pytest.UsageError(f"--{option.replace('_', '-')}: must be more than 0 seconds, got {value}")
        if value is not None:
            seconds[keyword] = value
    examples: int | None = config.getoption("dbp_examples")
    if examples is not None and examples < 0:
        raise pytest.UsageError(f"--dbp-examples: must be 0 or more, got {examples}")
    try:
        factory = load_engine_factory(reference)
    except EngineFactoryError as error:
        raise pytest.UsageError(f"--dbp-engine: {error}") from None
    chosen = DEFAULT_EXAMPLES if examples is None else examples
    engine_args: str | None = config.getoption("dbp_engine_args")
    anchor = _anchor(reference)
    config.stash[_RUN] = _ConformanceRun(factory, reference.strip(), mode, engine_args, chosen, seconds, anchor)
    # Collected whatever else was asked for, unless an id under it was given (a rerun of some checks).
    if not any(Path(arg.split("::")[0]).resolve() == anchor for arg in config.args):
        config.args.append(str(anchor))


def _anchor(reference: str) -> Path:
    """The engine's module file, where the items are found (this plugin's own file for a module without one)."""
    module = sys.modules.get(reference.strip().partition(":")[0])
    where = getattr(module, "__file__", None)
    return Path(where if isinstance(where, str) else __file__).resolve()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    run = parent.config.stash.get(_RUN, None)
    if run is None or file_path.resolve() != run.anchor or getattr(parent.session, "_dbp_collected", False):
        return None
    parent.session._dbp_collected = True  # type: ignore[attr-defined]
    collector: ConformanceFile = ConformanceFile.from_parent(parent, path=file_path)
    return collector


class ConformanceFile(pytest.File):
    """The engine's module, as pytest sees it with --dbp-engine: one item per conformance check."""

    def collect(self) -> Iterator[pytest.Item]:
        for spec in CHECKS:
            yield ConformanceItem.from_parent(self, name=str(spec.failure), spec=spec)


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
