"""The check catalogue: every check's name, kit, meaning and fix, as text (``conform --list-checks``) and as
the Markdown table in docs/checks.md (a test keeps the two the same)."""

from __future__ import annotations

import textwrap

from dynamo_backend_protocol.reference.conformance.checks import CHECKS, CheckSpec

TABLE_HEADER = ("| Check | Kit | Passing means | How to fix a failure |", "|---|---|---|---|")


def _applies(spec: CheckSpec) -> str:
    if spec.only_in is not None:
        return f" ({spec.only_in.value} mode only)"
    if spec.not_in is not None:
        return f" (not in {spec.not_in.value} mode)"
    return ""


def catalogue_text(columns: int = 100) -> str:
    """One block per check: its name and kit, then what passing means and how to fix a failure, indented."""
    width = max(len(spec.failure) for spec in CHECKS)
    blocks: list[str] = []
    for spec in CHECKS:
        blocks.append(f"{spec.failure:<{width}}  {spec.kit.describe()}{_applies(spec)}")
        for label, text in (("means", spec.title), ("fix", spec.fix)):
            blocks.append(textwrap.fill(f"{label}: {text}", columns, initial_indent="    ",
                                        subsequent_indent="    " + " " * (len(label) + 2), break_on_hyphens=False))
    return "\n".join(blocks)


def catalogue_markdown() -> str:
    """The Markdown table of every check, in the order the kit runs them."""
    rows = [f"| `{spec.failure}` | {spec.kit.describe()}{_applies(spec)} | {_cell(spec.title)} | {_cell(spec.fix)} |"
            for spec in CHECKS]
    return "\n".join([*TABLE_HEADER, *rows])


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
