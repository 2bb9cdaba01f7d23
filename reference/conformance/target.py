"""Finding the engine a user names as ``module:attribute``, as the CLI and the pytest plugin accept it."""

from __future__ import annotations

import importlib
import os
import sys
from typing import cast

from dynamo_backend_protocol.reference.conformance.engine_calls import safe_text
from dynamo_backend_protocol.reference.conformance.session import (
    EngineFactory,
    EngineFactoryError,
    check_factory,
    describe_error,
)


class EngineReferenceError(EngineFactoryError):
    """``module:attribute`` does not name a usable engine class or factory; the message says why, in one line."""


def load_engine_factory(reference: str) -> EngineFactory:
    """Import ``module`` (the current directory is importable) and return ``attribute`` (dots allowed).

    Raises :class:`EngineReferenceError` for a malformed reference, a module that
    fails to import (with the module's own message), a missing attribute, or an
    object that is neither an engine class nor a factory.
    """
    module_name, colon, attribute = reference.strip().partition(":")
    if not colon or not module_name or not attribute:
        raise EngineReferenceError(
            f"ENGINE must look like module:attribute (e.g. my_engine:MyEngine), got {reference!r}"
        )
    # A user names a module next to them, as `python -m` would find it.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        found: object = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise EngineReferenceError(f"cannot import {module_name!r}: {safe_text(error)}") from None
    except KeyboardInterrupt:
        raise  # Ctrl-C while importing: the user's, as anywhere else
    except BaseException as error:
        raise EngineReferenceError(f"importing {module_name!r} raised {describe_error(error)}") from None
    path = module_name
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise EngineReferenceError(f"{path!r} has no attribute {part!r}") from None
        except BaseException as error:
            raise EngineReferenceError(f"reading {path!r} attribute {part!r} raised {describe_error(error)}") from None
        path = f"{path}{':' if path == module_name else '.'}{part}"
    try:
        check_factory(found, reference.strip())
    except EngineFactoryError as error:
        raise EngineReferenceError(str(error)) from None
    return cast(EngineFactory, found)

