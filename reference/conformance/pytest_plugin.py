"""pytest plugin: ``pytest --dbp-engine module:attribute`` makes each conformance check a test item.

Registered through the ``pytest11`` entry point, so installing the package is enough; without an
engine it adds nothing (and a ``--dbp-*`` option without one is a usage error).  Every option can
also be set in ``pyproject.toml`` or ``pytest.ini``, the command line winning::

    [tool.pytest.ini_options]
    dbp_engine = "my_engine:MyEngine"
    dbp_mode = "agg,decode"          # several modes: one item per check and mode, StartFailed[decode]
    dbp_examples = "10"

Each item runs its own check: the kit runs on an event loop that an item drives only until its
check has a verdict, and the items come in the order the kit judges the checks, so ``--durations``
shows each check's own time, ``-x`` stops at the first failing check (the kit is then cancelled),
``-k`` selects checks, and ``--lf`` reruns the failed ones.  A skipped check is reported at the
engine's definition (``-rs``), as is every item (``my_engine.py::StartFailed``).

For a test of your own, the ``dbp_conformance`` fixture runs the kit on any engine with the
session's settings and returns the report; or, without pytest's help::

    from dynamo_backend_protocol.reference import assert_conforms

    def test_my_engine_conforms():
        assert_conforms(MyEngine)          # raises ConformanceFailure listing every failed check
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Callable, Coroutine, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from dynamo_backend_protocol.model import DynamoError, Mode
from dynamo_backend_protocol.model.exceptions import ProtocolError
from dynamo_backend_protocol.reference.conformance.checks import CHECKS, CheckSpec, Failure
from dynamo_backend_protocol.reference.conformance.report import CheckResult, ConformanceReport
from dynamo_backend_protocol.reference.conformance.run_loop import loop_watched
from dynamo_backend_protocol.reference.conformance.session import EngineFactory, EngineFactoryError

if TYPE_CHECKING:
    from _pytest.reports import TestReport

SECONDS_OPTIONS = {"dbp_cancel_deadline": "cancel_deadline", "dbp_start_timeout": "start_timeout",
                   "dbp_cleanup_timeout": "cleanup_timeout", "dbp_stream_timeout": "stream_timeout"}
OPTIONS_NEEDING_ENGINE = ("dbp_mode", "dbp_engine_args", "dbp_examples", *SECONDS_OPTIONS)
CANCEL_GRACE = 10.0
"""Seconds the kit has to wind down once cancelled (after -x, or at the end); an engine that ignores
the cancellation longer is abandoned."""


def kit_order() -> tuple[Failure, ...]:
    """The checks in the order the kit judges them, so that each item's time is its own check's.

    The kit judges cleanup of a never-started engine first, then start, then its serving probes in
    order, then cleanup and the life's order; a check this does not place comes last (still judged,
    only its time would be counted to it)."""
    from dynamo_backend_protocol.reference.conformance.kit import SERVING_PROBES

    first = (Failure.CLEANUP_WITHOUT_START_FAILED, Failure.START_FAILED, Failure.EMPTY_MODEL_IN_CONFIG)
    last = (Failure.CLEANUP_FAILED, Failure.SECOND_CLEANUP_FAILED, Failure.LIFECYCLE_ORDER_VIOLATED)
    placed = [*first, *(failure for probe in SERVING_PROBES for failure in probe.checks), *last]
    return (*dict.fromkeys(placed), *(spec.failure for spec in CHECKS if spec.failure not in placed))


@dataclass(frozen=True)
class Settings:
    """What the session asked for: the engine, where it is defined, and the kit's options."""

    factory: EngineFactory
    label: str
    modes: tuple[Mode | None, ...]
    """``None``: the mode the engine declares."""
    engine_args: str | None
    options: dict[str, Any]
    """run_conformance's keyword options given (examples, timeouts)."""
    anchor: Path
    """The engine's module file, which the items hang off (this plugin's own file if it has none)."""
    line: int | None
    """The engine's definition line in ``anchor``, where each item (and each skip) is reported."""


class KitRun:
    """One mode's conformance run, driven a check at a time: :meth:`result` runs the kit's event loop
    until that check has its verdict."""

    def __init__(self, settings: Settings, mode: Mode | None) -> None:
        self.settings = settings
        self.mode = mode
        self.results: dict[Failure, CheckResult] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[ConformanceReport] | None = None
        self._waiting: dict[Failure, asyncio.Future[None]] = {}

    # KitEvents: called on the kit's loop.
    def phase(self, what: str) -> None:
        pass

    def examples_done(self, done: int, total: int) -> None:
        pass

    def check_finished(self, result: CheckResult) -> None:
        self.results[result.failure] = result
        waiting = self._waiting.pop(result.failure, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    def result(self, failure: Failure) -> CheckResult:
        if failure not in self.results:
            loop, task = self._started()
            if not task.done():
                # A plain future, not a task: the kit cancels the tasks started during its run as it ends.
                arrived = self._waiting.setdefault(failure, loop.create_future())
                _run_until(loop, arrived, task, None)
            if failure not in self.results:
                task.result()  # what ended the kit early (EngineFactoryError: the engine cannot be built)
                raise RuntimeError(f"the kit gave no verdict for {failure} (a bug in the kit)")
        return self.results[failure]

    def _started(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Task[ConformanceReport]]:
        if self._loop is None or self._task is None:
            from dynamo_backend_protocol.reference.conformance import run_conformance

            self._loop = asyncio.new_event_loop()
            work: Coroutine[Any, Any, ConformanceReport] = run_conformance(
                self.settings.factory, mode=self.mode, engine_args=self.settings.engine_args,
                label=self.settings.label, events=self, **self.settings.options,
            )
            self._task = self._loop.create_task(work)
        return self._loop, self._task

    def close(self) -> None:
        """Cancel what is left of the run (after -x, -k or a failure) and close its loop, within bounds."""
        loop, task = self._loop, self._task
        if loop is None or task is None:
            return
        if not task.done():
            task.cancel()
            _run_until(loop, loop.create_future(), task, CANCEL_GRACE)
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: reported by the items already
        closing = loop.create_task(loop.shutdown_asyncgens())
        _run_until(loop, loop.create_future(), closing, CANCEL_GRACE)
        loop.close()


def _run_until(loop: asyncio.AbstractEventLoop, arrived: asyncio.Future[None], task: asyncio.Future[Any],
               timeout: float | None) -> None:
    """Run ``loop`` until ``arrived`` is resolved, ``task`` is done or ``timeout`` seconds have passed."""

    def resolve(_: object = None) -> None:
        if not arrived.done():
            arrived.set_result(None)

    task.add_done_callback(resolve)
    timer = None if timeout is None else loop.call_later(timeout, resolve)
    try:
        # Engine code that blocks the loop is interrupted at its bound, as in the CLI, instead of hanging pytest.
        with loop_watched(loop, "pytest --dbp-engine: "):
            loop.run_until_complete(arrived)
    finally:
        task.remove_done_callback(resolve)
        if timer is not None:
            timer.cancel()


_SETTINGS = pytest.StashKey[Settings]()
_RUNS = pytest.StashKey[dict[Mode | None, KitRun]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dynamo-backend-protocol", "engine conformance (dynamo-backend-protocol)")

    def option(*names: str, help: str, metavar: str, **kwargs: Any) -> None:
        ini = names[0][2:].replace("-", "_")
        group.addoption(*names, metavar=metavar, default=None, help=f"{help} (ini: {ini})", **kwargs)
        parser.addini(ini, help, default=None)

    option("--dbp-engine", metavar="MODULE:ATTRIBUTE",
           help="run the conformance checks on this engine class or zero-argument factory")
    option("--dbp-mode", metavar="MODE[,MODE...]",
           help="disaggregation mode(s) to check the engine in: agg, prefill, decode, encode, comma-separated "
           "for several (default: the one it declares, else agg)")
    option("--dbp-engine-args", metavar="ARGS",
           help="build the engine with its from_args(argv) classmethod, argv being ARGS split like a shell")
    option("--dbp-cancel-deadline", "--dbp-deadline", dest="dbp_cancel_deadline", metavar="S",
           help="seconds a cancelled stream may take to end (default 2)")
    option("--dbp-start-timeout", metavar="S", help="seconds start() may take, e.g. loading weights (default 900)")
    option("--dbp-cleanup-timeout", metavar="S", help="seconds each cleanup() may take (default 60)")
    option("--dbp-stream-timeout", metavar="S", help="seconds each stream may take to end (default 60)")
    option("--dbp-examples", metavar="N", help="schedules the property-based phase draws (0 skips it)")


def _setting(config: pytest.Config, name: str) -> str | None:
    """The command line's value, else the ini file's, else None."""
    given: str | None = config.getoption(name)
    if given is None:
        from_ini = config.getini(name)
        given = from_ini.strip() if isinstance(from_ini, str) and from_ini.strip() else None
    return given


def pytest_configure(config: pytest.Config) -> None:
    reference = _setting(config, "dbp_engine")
    if reference is None:
        given = [name for name in OPTIONS_NEEDING_ENGINE if config.getoption(name) is not None]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise pytest.UsageError(f"{flag} needs --dbp-engine MODULE:ATTRIBUTE, the engine to check")
        return
    options = _kit_options(config)
    modes = _modes(_setting(config, "dbp_mode"))
    from dynamo_backend_protocol.reference.conformance.target import load_engine_factory

    try:
        factory = load_engine_factory(reference)
    except EngineFactoryError as error:
        raise pytest.UsageError(f"--dbp-engine: {error}") from None
    anchor, line = _definition(reference, factory)
    config.stash[_SETTINGS] = Settings(factory, reference.strip(), modes, _setting(config, "dbp_engine_args"),
                                       options, anchor, line)
    config.stash[_RUNS] = {}


def _kit_options(config: pytest.Config) -> dict[str, Any]:
    """run_conformance's keyword options the session sets (examples, timeouts), checked."""
    options: dict[str, Any] = {}
    for name, keyword in SECONDS_OPTIONS.items():
        text = _setting(config, name)
        if text is not None:
            options[keyword] = _number(name, text, float, lambda value: value > 0, "more than 0 seconds")
    examples = _setting(config, "dbp_examples")
    if examples is not None:
        options["examples"] = _number("dbp_examples", examples, int, lambda value: value >= 0, "0 or more")
    return options


def _number(name: str, text: str, kind: Callable[[str], Any], valid: Callable[[Any], bool], meaning: str) -> Any:
    flag = "--" + name.replace("_", "-")
    try:
        value = kind(text)
    except ValueError:
        raise pytest.UsageError(f"{flag} ({name}): expected a number, got {text!r}") from None
    if not valid(value):
        raise pytest.UsageError(f"{flag} ({name}): must be {meaning}, got {text!r}")
    return value


def _modes(text: str | None) -> tuple[Mode | None, ...]:
    if text is None:
        return (None,)
    modes: list[Mode] = []
    for word in text.split(","):
        try:
            mode = Mode.parse(word.strip())
        except DynamoError as error:
            raise pytest.UsageError(f"--dbp-mode: {error.message}") from None
        if mode not in modes:
            modes.append(mode)
    return tuple(modes)


def _definition(reference: str, factory: object) -> tuple[Path, int | None]:
    """The engine's module file and its definition's line (this plugin's file for a module without one)."""
    module = sys.modules.get(reference.strip().partition(":")[0])
    where = getattr(module, "__file__", None)
    if not isinstance(where, str):
        return Path(__file__).resolve(), None
    try:
        line: int | None = inspect.getsourcelines(factory)[1]  # type: ignore[arg-type]
    except (TypeError, OSError):
        line = None
    return Path(where).resolve(), line


def pytest_unconfigure(config: pytest.Config) -> None:
    for run in config.stash.get(_RUNS, {}).values():
        run.close()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """The engine's module, when pytest is asked for it (``pytest my_engine.py::StartFailed``)."""
    settings = parent.config.stash.get(_SETTINGS, None)
    if settings is None or file_path.resolve() != settings.anchor:
        return None
    collector: ConformanceFile = ConformanceFile.from_parent(parent, path=file_path)
    return collector


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """The checks join the session's items, unless some were asked for by id; first, so that -k, -m and
    --lf select among them like among any test."""
    settings = config.stash.get(_SETTINGS, None)
    if settings is None or any(isinstance(item, ConformanceItem) for item in items):
        return
    try:
        nodeid = settings.anchor.relative_to(config.rootpath).as_posix()
    except ValueError:  # an engine installed elsewhere: its file's name
        nodeid = settings.anchor.name
    collector: ConformanceFile = ConformanceFile.from_parent(session, path=settings.anchor, nodeid=nodeid)
    items.extend(collector.collect())


class ConformanceFile(pytest.File):
    """The engine's module, as pytest sees it with --dbp-engine: one item per conformance check and mode."""

    def collect(self) -> Iterator[pytest.Item]:
        settings = self.config.stash[_SETTINGS]
        runs = self.config.stash[_RUNS]
        several = len(settings.modes) > 1
        for mode in settings.modes:
            run = runs.setdefault(mode, KitRun(settings, mode))
            for failure in kit_order():
                name = f"{failure}[{mode.value}]" if several and mode is not None else str(failure)
                yield ConformanceItem.from_parent(self, name=name, run=run, spec=_spec(failure))


def _spec(failure: Failure) -> CheckSpec:
    return next(spec for spec in CHECKS if spec.failure is failure)


class CheckFailed(ProtocolError):
    def __init__(self, result: CheckResult) -> None:
        super().__init__(f"{result.failure}: {result.reason}")
        self.result = result


class ConformanceItem(pytest.Item):
    """One conformance check of the engine named by ``--dbp-engine``, in one mode."""

    def __init__(self, *, run: KitRun, spec: CheckSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.run = run
        self.spec = spec

    def runtest(self) -> None:
        result = self.run.result(self.spec.failure)
        if result.skipped:
            pytest.skip(f"{result.failure}: {result.reason}")
        if result.failed:
            raise CheckFailed(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, CheckFailed | EngineFactoryError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        settings = self.run.settings
        mode = self.run.mode.value if self.run.mode is not None else "as declared"
        line = None if settings.line is None else settings.line - 1
        return self.path, line, f"{self.name} of {settings.label} (mode {mode}): {self.spec.title}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, TestReport, TestReport]:
    report = yield
    if isinstance(item, ConformanceItem) and report.skipped and isinstance(report.longrepr, tuple):
        # Where pytest would point at this plugin's pytest.skip, point at the engine instead.
        path, line, _ = item.reportinfo()
        report.longrepr = (str(path), (line or 0) + 1, report.longrepr[2])
    return report


@pytest.fixture
def dbp_conformance(request: pytest.FixtureRequest) -> Callable[..., ConformanceReport]:
    """Run the conformance kit on an engine from a test of your own; returns the report::

        def test_my_engine_in_decode(dbp_conformance):
            report = dbp_conformance(MyEngine, mode="decode")
            assert report.result(ConformanceCheck.ABORT_BEFORE_FIRST_TOKEN).passed

    Takes run_conformance's keyword options; the session's --dbp-examples and timeouts are the defaults.
    """
    defaults = _kit_options(request.config)

    def check(factory: EngineFactory, **options: Any) -> ConformanceReport:
        from dynamo_backend_protocol.reference.conformance import run_conformance

        return asyncio.run(run_conformance(factory, **{**defaults, **options}))

    return check
