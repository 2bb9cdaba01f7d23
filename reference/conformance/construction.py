"""Building engines the way Dynamo builds them, and the mode they declare.

A Dynamo engine class is built by its async classmethod ``from_args(argv)``,
which returns ``(engine, worker_config)``; the worker config (or the engine)
says which disaggregation mode it serves.  The kit builds such a class through
``from_args`` with the user's ``--engine-args``, and checks the engine in the
mode it declares: an agg engine checked "in prefill mode" would pass without
meaning anything.
"""

from __future__ import annotations

import contextlib
import io
import shlex
from collections.abc import Sequence
from typing import Any

from dynamo_backend_protocol.model import DynamoError, Mode
from dynamo_backend_protocol.reference.conformance.engine_calls import AttributeRaised, read_attribute
from dynamo_backend_protocol.reference.conformance.session import EngineFactory, EngineFactoryError

DECLARED_MODE_SOURCES = ("worker_config", "engine")


class ModeDisagreement(EngineFactoryError):
    """The mode asked for is not the mode the engine serves."""


def has_from_args(factory: object) -> bool:
    return isinstance(factory, type) and callable(getattr(factory, "from_args", None))


def split_engine_args(engine_args: str | Sequence[str] | None) -> tuple[str, ...]:
    """A shell-quoted string (``"--disaggregation-mode prefill --model-name 'my model'"``) or a list, as argv."""
    if engine_args is None:
        return ()
    if isinstance(engine_args, str):
        try:
            return tuple(shlex.split(engine_args))
        except ValueError as error:
            raise EngineFactoryError(f"engine arguments {engine_args!r} cannot be split: {error}") from None
    return tuple(engine_args)


class FromArgs:
    """A zero-argument factory that builds ``cls`` through ``await cls.from_args(argv)``.

    ``argv`` is always a list (an empty one without ``--engine-args``): Dynamo
    reads ``None`` as ``sys.argv[1:]``, which here would be the kit's own command line.
    """

    def __init__(self, cls: type, argv: Sequence[str], label: str) -> None:
        self.cls = cls
        self.argv = list(argv)
        self.label = label
        self.worker_config: Any = None

    async def __call__(self) -> Any:
        built = await self._from_args()
        if not (isinstance(built, tuple) and len(built) == 2):
            raise EngineFactoryError(
                f"{self.label}.from_args returned {type(built).__name__}, not an (engine, worker_config) pair"
            )
        engine, self.worker_config = built
        return engine

    async def _from_args(self) -> Any:
        # argparse reports a bad argument on stderr and exits: keep its last line for a one-line error.
        said = io.StringIO()
        try:
            with contextlib.redirect_stderr(said):
                return await self.cls.from_args(list(self.argv))  # type: ignore[attr-defined]
        except SystemExit as exit_:
            lines = [line for line in said.getvalue().splitlines() if line.strip()]
            why = lines[-1] if lines else f"exit status {exit_.code}"
            raise EngineFactoryError(
                f"{self.label}.from_args rejected the engine arguments {shlex.join(self.argv)!r}: {why}"
            ) from None

    def __repr__(self) -> str:
        return f"{self.label}.from_args({self.argv!r})"


def engine_factory(factory: EngineFactory, engine_args: str | Sequence[str] | None, label: str) -> EngineFactory:
    """What the kit calls for a fresh engine: ``from_args`` for a class that has it, else ``factory`` itself."""
    argv = split_engine_args(engine_args)
    if has_from_args(factory):
        assert isinstance(factory, type)
        return FromArgs(factory, argv, label)
    if engine_args is not None:
        raise EngineFactoryError(
            f"engine arguments were given, but {label} has no from_args(argv) classmethod to take them"
        )
    return factory


def declared_mode(factory: EngineFactory, engine: object) -> tuple[Mode, str] | None:
    """The mode the built engine says it serves, and where it says so (worker config first)."""
    try:
        holders = (read_attribute(factory, "worker_config", "the factory"), engine)
        for where, holder in zip(DECLARED_MODE_SOURCES, holders, strict=True):
            # Read with read_attribute: a property that raises is one line (exit 2), not a traceback.
            value = read_attribute(holder, "disaggregation_mode", where) if holder is not None else None
            if value is None:
                continue
            text = read_attribute(value, "value", f"{where}.disaggregation_mode") or value
            try:
                return Mode.parse(safe_text_of(text)), f"{where}.disaggregation_mode"
            except DynamoError as error:
                raise EngineFactoryError(f"the engine's {where}.disaggregation_mode: {error.message}") from None
    except AttributeRaised as error:
        raise EngineFactoryError(f"the engine's declared mode cannot be read: {error}") from None
    return None


def safe_text_of(value: object) -> str:
    """``str(value)`` for a declared mode; a value whose ``str()`` raises declares no mode the kit can read."""
    try:
        return str(value)
    except BaseException as error:
        raise AttributeRaised("the declared mode", "__str__", error) from None


def resolve_mode(asked: Mode | None, declared: tuple[Mode, str] | None, label: str) -> Mode:
    """The mode to check in: the declared one, unless the caller asked for a different one (an error)."""
    if declared is None:
        return asked or Mode.AGGREGATED
    mode, where = declared
    if asked is not None and asked is not mode:
        raise ModeDisagreement(
            f"mode {asked.value} was asked for, but {label} serves {mode.value} (its {where}); "
            "drop the mode or build the engine for that mode"
        )
    return mode
