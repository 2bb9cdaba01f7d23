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
    # Ten plus loop_affinity.py, which states the FAULT-STREAM-LOOP refusal on its own so that both the
    # adapter's context and its response stream share one definition of a foreign loop.
    modules = sorted(path.name for path in REFERENCE.glob("*.py"))
    assert len(modules) <= 11, modules


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


# The import graph: no cycles, and the adapter stands alone.


def module_files() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its ``__init__``)."""
    roots = {f"{PACKAGE}.model": MODEL, f"{PACKAGE}.reference": REFERENCE}
    found: dict[str, Path] = {}
    for prefix, folder in roots.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((prefix, *parts))] = path
    return found


def _checked_only(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:``: imports that never run."""
    return isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules a file imports when it runs (at the top or inside a function),
    each ``from X import Y`` counted as importing X.Y when that is a module and X otherwise."""
    found: set[str] = set()
    pending: list[ast.AST] = [ast.parse(path.read_text())]
    while pending:
        node = pending.pop()
        if _checked_only(node):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module in modules:
            for alias in node.names:
                found.add(submodule if (submodule := f"{node.module}.{alias.name}") in modules else node.module)
        pending.extend(ast.iter_child_nodes(node))
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, or of one importing itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph[module]):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1 or module in graph[module]:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def test_import_cycle_detection_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert import_cycles(graph) == [["a", "b", "c"], ["e"]]


def test_no_import_cycle_in_the_package() -> None:
    """A module that needs a module needing it (even through a function-level import) has
    two jobs tangled; the adapter and its observers once did."""
    files = module_files()
    graph = {module: runtime_imports(path, set(files)) for module, path in files.items()}
    assert import_cycles(graph) == []


def test_importing_the_adapter_loads_no_kit_cli_or_hypothesis() -> None:
    """An engine serving through the adapter pays for the adapter, not for the kit that checks it."""
    probe = (
        "import sys, dynamo_backend_protocol.reference.adapter\n"
        "print('\\n'.join(sorted(sys.modules)))"
    )
    result = run_cli(sys.executable, "-c", probe)
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.split()
    assert f"{PACKAGE}.reference.adapter" in loaded
    unwanted = (f"{PACKAGE}.reference.conformance", f"{PACKAGE}.reference.cli", "hypothesis")
    offending = sorted(name for name in loaded if name.startswith(unwanted))
    assert not offending, offending


def test_starting_the_cli_loads_no_table() -> None:
    """Every start of the command imports the CLI and its error types (rooted in model.exceptions);
    the model's tables and machine load only for a subcommand that uses them."""
    probe = (
        "import sys, dynamo_backend_protocol.reference.cli\n"
        "print('\\n'.join(sorted(sys.modules)))"
    )
    result = run_cli(sys.executable, "-c", probe)
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.split()
    assert f"{PACKAGE}.model.exceptions" in loaded
    tables = (f"{PACKAGE}.model.machine", f"{PACKAGE}.model.table", f"{PACKAGE}.model.guarded")
    assert sorted(name for name in loaded if name in tables) == []


# The model decides: the adapter's path holds no copy of its decisions.

ADAPTER_PATH = sorted(
    [*REFERENCE.glob("*.py"), *(REFERENCE / "traces").glob("*.py"), REFERENCE / "bench" / "profile.py"]
)
"""The modules a request passes through (and the profile, which times them): the kit, the CLI
and the differential judge what happened after the fact, and may read items and states."""

DECIDING_BY_ITSELF = {
    "reads a chunk's fields": r"""\[["'](token_ids|finish_reason|completion_usage|index|encoder_result)["']\]"""
    r"""(?!\s*=[^=])|\.get\(["'](token_ids|finish_reason|completion_usage|index|encoder_result)["']"""
    r"""|["'](token_ids|finish_reason|completion_usage|index)["'] (not )?in """,
    "tests an item's type": r"type\(item\)|isinstance\(item\b",
    "tests a state": r"\.control\b|ControlState\.|\.first_token\b|\.cancel\s+(is|==|!=)|\.watching\b|\.successors\b",
    "tests a guard": r"(is|==|!=) Mode\.|\bGuard\b|\.guard\(",
    "tests a fault kind": r"isinstance\([^)]*(Error|Exit|Interrupt)\b|except \(?(asyncio\.)?"
    r"(CancelledError|GeneratorExit|KeyboardInterrupt|SystemExit)|\bFault\.",
}


@pytest.mark.parametrize("path", ADAPTER_PATH, ids=lambda path: str(path.relative_to(REFERENCE)))
def test_the_adapters_path_leaves_every_decision_to_the_model(path: Path) -> None:
    """What an item is, which state or guard applies and which fault happened are the model's
    answers (model/chunks.py, reading.py, faults.py); a module here that worked one out itself
    would be a second copy of the protocol, free to drift from the first."""
    found = [
        f"line {number} {what}: {line.strip()}"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        for what, pattern in DECIDING_BY_ITSELF.items()
        if re.search(pattern, line)
    ]
    assert not found, found


def test_the_decision_patterns_catch_the_inline_check_they_replace() -> None:
    """The adapter's former inline chunk check, a state test and a fault test, as they were written."""
    former = [
        'if type_of(token_ids := item["token_ids"]) is plain_list:',
        'and ("finish_reason" not in item or item["finish_reason"] is None)',
        "if self.machine.state.control is _DONE and self._adapter.trace_sink is not None:",
        "except asyncio.CancelledError:",
        "if isinstance(exc, DynamoError):",
    ]
    assert all(any(re.search(pattern, line) for pattern in DECIDING_BY_ITSELF.values()) for line in former)


def test_no_module_outside_the_model_uses_a_private_name_of_the_model() -> None:
    offending: list[str] = []
    for path in sorted([*REFERENCE.rglob("*.py"), *(ROOT / "tests").rglob("*.py")]):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(f"{PACKAGE}.model"):
                offending += [f"{path.relative_to(ROOT)}: {alias.name}" for alias in node.names
                              if alias.name.startswith("_")]
    assert not offending, offending


def test_the_cancellation_origin_is_told_in_one_place() -> None:
    """Whether a CancelledError is the consumer's going away or the engine's own failure is read
    from asyncio once (reference/context.py) and decided by the model (faults.stream_fault)."""
    telling = sorted(
        str(path.relative_to(ROOT)) for path in REFERENCE.rglob("*.py") if "cancelling()" in path.read_text()
    )
    assert telling == ["reference/context.py"]
