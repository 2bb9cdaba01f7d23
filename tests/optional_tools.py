"""Tests that need an optional package or program: skip outside CI, fail in CI.

A backend author's fresh machine may lack Dynamo's wheels or Graphviz, and the
suite must still run there; CI installs them (``.ci/run``), so a missing one
in CI is a broken install step, never a reason to skip.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

DYNAMO_INSTALL = (
    "pip install typing-extensions 'pydantic>=2.10.6,<=2.13.5' uvloop msgspec pyyaml && "
    "pip install --no-deps ai-dynamo==1.6.1 ai-dynamo-runtime==1.6.1"
)


def unavailable(reason: str) -> None:
    """Skip with ``reason``, or fail with it when the ``CI`` environment variable is set."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must install it (see .ci/run)", pytrace=False)
    pytest.skip(reason)


def require_modules(*modules: str, install: str) -> None:
    missing = [name for name in modules if _missing(name)]
    if missing:
        unavailable(f"needs {', '.join(missing)} ({install})")


def require_dynamo() -> None:
    """Dynamo's real Python API and compiled runtime, as installed by ``.ci/run``."""
    require_modules("dynamo.common.backend", "dynamo._core", install=DYNAMO_INSTALL)


def require_commands(*commands: str, install: str) -> None:
    missing = [name for name in commands if shutil.which(name) is None]
    if missing:
        unavailable(f"needs the command {', '.join(missing)} ({install})")


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except ImportError:  # the parent package itself is absent or fails to import
        return True
