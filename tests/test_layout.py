"""The package layout shows the architecture, and the layering it promises holds.

The model's core (vocabulary, state, table, machine, invariants, ...) is what
every reader depends on; if it imported a reader (an explorer, the teaching
code, the trace replayer) or the I/O shell, the "pure, sans-I/O core" claim of
the design would be false in a way no other test notices.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "model"
REFERENCE = ROOT / "reference"
READERS = ("explore", "teach", "traces")
PACKAGE = "dynamo_backend_protocol"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def core_model_files() -> list[Path]:
    return sorted(MODEL.glob("*.py"))


@pytest.mark.parametrize("path", core_model_files(), ids=lambda path: path.name)
def test_the_model_core_imports_no_reader(path: Path) -> None:
    """A core module that needs the explorer or narration has put a reader's job in the protocol."""
    readers = tuple(f"{PACKAGE}.model.{reader}" for reader in READERS)
    offending = sorted(name for name in imported_modules(path) if name.startswith(readers))
    assert not offending, f"model/{path.name} imports {offending}"


@pytest.mark.parametrize("path", sorted(MODEL.rglob("*.py")), ids=lambda path: str(path.relative_to(MODEL)))
def test_nothing_in_the_model_imports_the_reference_implementation(path: Path) -> None:
    offending = sorted(name for name in imported_modules(path) if name.startswith(f"{PACKAGE}.reference"))
    assert not offending, f"model/{path.relative_to(MODEL)} imports {offending}"


@pytest.mark.parametrize("path", sorted(MODEL.rglob("*.py")), ids=lambda path: str(path.relative_to(MODEL)))
def test_the_model_does_no_io(path: Path) -> None:
    """Pure means no asyncio, sockets, subprocesses or threads anywhere under model/."""
    io = ("asyncio", "socket", "subprocess", "threading", "os")
    offending = sorted(name for name in imported_modules(path) if name.split(".")[0] in io)
    assert not offending, f"model/{path.relative_to(MODEL)} imports {offending}"


def test_the_reference_top_level_holds_the_adapter_and_little_else() -> None:
    modules = sorted(path.name for path in REFERENCE.glob("*.py"))
    assert len(modules) <= 10, modules


@pytest.mark.parametrize(
    ("folder", "prefixes"),
    [
        (REFERENCE / "conformance", ("conformance_",)),
        (REFERENCE / "cli", ("cli_",)),
        (MODEL / "explore", ("explore_", "explorer")),
        (MODEL / "teach", ("teach_",)),
        (MODEL / "traces", ("trace_",)),
        (REFERENCE, ("cli_", "conformance_")),
    ],
    ids=lambda value: value.name if isinstance(value, Path) else "",
)
def test_no_module_repeats_its_folders_job_in_its_name(folder: Path, prefixes: tuple[str, ...]) -> None:
    offending = sorted(path.name for path in folder.glob("*.py") if path.name.startswith(prefixes))
    assert not offending, f"{folder.relative_to(ROOT)}: {offending}"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def test_version_is_the_distributions_version() -> None:
    """One source of truth: the version pyproject.toml gives the distribution."""
    from importlib import metadata

    import dynamo_backend_protocol

    expected = metadata.version("dynamo-backend-protocol")
    result = run_cli(sys.executable, "-m", PACKAGE, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["dynamo-backend-protocol", expected]
    assert dynamo_backend_protocol.__version__ == expected


def test_python_dash_m_runs_the_same_command() -> None:
    result = run_cli(sys.executable, "-m", PACKAGE, "check", "--mode", "agg")
    assert result.returncode == 0, result.stderr
    assert "all invariants hold" in result.stdout


def test_the_bare_command_lists_the_subcommands() -> None:
    """Someone who types the command alone learns what it can do, not a Python error."""
    result = run_cli(sys.executable, "-m", PACKAGE)
    assert result.returncode == 2
    listed = ("check", "mutate", "export", "conform", "diagram", "explain", "teach", "trace", "bench", "differential")
    for subcommand in listed:
        assert re.search(rf"\n {{4}}{subcommand}\s", result.stderr), result.stderr
    assert "Traceback" not in result.stderr
