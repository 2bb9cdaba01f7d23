"""What each subcommand is for, with its examples and exit codes: the text ``--help`` shows.

Kept apart from the subcommands' modules so that the command can list them all, and give each
its examples, without importing any of them (``--version`` and ``COMMAND --help`` stay quick).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from dynamo_backend_protocol.reference.cli.support import PROG


@dataclass(frozen=True)
class Command:
    summary: str
    """One line for the command list; also the description of a module that gives none."""
    examples: tuple[tuple[str, str], ...]
    """``(arguments, what they do)``: each shown as ``dynamo-backend-protocol NAME arguments``."""
    exit_codes: tuple[tuple[int, str], ...]

    def epilog(self, name: str) -> str:
        lines = ["examples:"]
        for arguments, meaning in self.examples:
            lines.append(f"  {PROG} {name} {arguments}".rstrip())
            lines.append(f"      {meaning}")
        lines.append("")
        lines.append("exit status:")
        meanings: dict[int, list[str]] = {}
        for code, meaning in (*self.exit_codes, *_ALWAYS):
            meanings.setdefault(code, []).append(meaning)
        for code, said in sorted(meanings.items()):
            lines.extend(textwrap.wrap(f"{code:<4} {'; or '.join(said)}", 76, initial_indent="  ",
                                       subsequent_indent="       ", break_on_hyphens=False))
        lines.append("")
        lines.append("Colour is used on a terminal only, and never with NO_COLOR set.")
        return "\n".join(lines)


_ALWAYS = ((2, "a usage error, or the output could not be written (one line on standard error)"),
           (130, "interrupted (Ctrl-C)"))

COMMANDS: dict[str, Command] = {
    "check": Command(
        "explore the protocol model and check every invariant and liveness property",
        (
            ("", "every mode and the engine lifecycle, with this package's explorer"),
            ("--mode decode --json", "one mode, as one JSON object"),
            ("--machine disagg", "a decode request with its prefill peer's KV transfer"),
            ("--requests 3 --mode agg", "three requests sharing one engine, with its lifecycle"),
            ("--checker spin --mode agg", "the same properties checked by SPIN on the Promela export"),
        ),
        ((0, "every property holds"), (1, "some property is violated (the counterexample is printed)")),
    ),
    "mutate": Command(
        "plant every single change in the request table and count what check alone catches",
        (("", "the score by kind of change, equivalent survivors and blind spots"),
         ("--json --killed", "everything, with the rules that killed each mutant, as JSON")),
        ((0, "no blind spot (every survivor is shown equivalent)"), (1, "some survivor is a blind spot")),
    ),
    "export": Command(
        "write the request table of one mode as a Promela model for SPIN",
        (("--mode decode -o decode.pml", "one decode request, invariants and liveness as LTL"),
         ("--requests 2 --mode agg", "two requests sharing one engine, on standard output")),
        ((0, "the model was written"),),
    ),
    "conform": Command(
        "check an engine against the protocol (default: the bundled SampleEngine)",
        (
            ("", "both kits on the bundled SampleEngine"),
            ("my_engine:MyEngine", "every check on your engine class, a line per check as it finishes"),
            ("my_engine:MyEngine --mode decode --json", "in decode mode, the report as one JSON object"),
            ("my_engine:MyEngine --engine-args=\"--model-path /models/tiny --disaggregation-mode decode\"",
             "build the engine with its from_args(argv); write the value with '=' as it starts with '-'"),
            ("my_engine:MyEngine --examples 0 --cancel-deadline 5",
             "skip the property-based phase; let a cancelled stream take 5 s to end"),
        ),
        ((0, "the engine conforms: every check passed or was skipped (not applicable to the mode, or "
             "nothing to judge)"),
         (1, "some check failed, in either kit (the report says which, and why)"),
         (2, "the engine could not be imported or built as named")),
    ),
    "diagram": Command(
        "draw a protocol machine as a state diagram (DOT, SVG or PNG)",
        (("--mode decode -o decode.svg", "the decode request machine as SVG (needs Graphviz's dot)"),
         ("--machine lifecycle --highlight Running", "the engine lifecycle as DOT, one state filled")),
        ((0, "the diagram was written"),),
    ),
    "explain": Command(
        "narrate a protocol scenario or an event sequence step by step",
        (("--list", "the canonical scenarios"),
         ("aggregated-cancel --mode all", "one scenario, in every mode it applies to"),
         ("--events setup,token_chunk,terminal:stop", "any event sequence, with the rules that decide each step"),
         ("--requests 2 --events r1:setup,r2:setup,engine:drain", "two requests on one engine")),
        ((0, "the narration was printed"),),
    ),
    "teach": Command(
        "write an interactive HTML page to play the protocol",
        (("-o protocol.html", "every mode and the engine lifecycle, with the rules quoted from spec/protocol.md"),
         ("-o decode.html --mode decode --spec spec/protocol.md", "one mode, quoting the given spec")),
        ((0, "the page was written"),),
    ),
    "trace": Command(
        "check a JSON Lines trace against the model",
        (("run.jsonl", "each request's verdict as soon as it is final, then the trace's"),
         ("- --json < run.jsonl", "standard input, the report as one JSON object")),
        ((0, "every request conforms"),
         (1, "some request diverges, some line is malformed, or there is no record at all"),
         (2, "the input cannot be read at all (missing, a directory, not text)")),
    ),
    "bench": Command(
        "measure the adapter's cost, and on request a profile, a soak, the trace validator",
        (("", "the adapter, explore and conformance sections, with their targets shown"),
         ("--profile --rounds 9", "where the adapter's time per chunk goes"),
         ("--all --quick --json", "every section at small sizes, as one JSON object"),
         ("--check", "the core sections, exit 1 when a target is missed (for CI on a quiet machine)")),
        ((0, "the figures were measured (with --check: and every target is met)"),
         (1, "with --check: some target is missed")),
    ),
    "differential": Command(
        "run the scenarios through Dynamo's real adapter, ours and the model, and compare",
        (("--mode agg --examples 5", "the scenarios and 5 drawn schedules in agg mode"),),
        ((0, "all agree"), (1, "some scenario diverges"),
         (2, "Dynamo is not installed, or a mode's worker cannot start")),
    ),
}
