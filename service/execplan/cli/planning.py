"""`execplan plan` and `execplan validate`: compile locally (the planner is pure; no
server needed).

    execplan plan FILE [--format text|json|dot|mermaid]    FILE `-` reads stdin
    execplan validate FILE [--format text|json]

Exit 0 when the workflow is valid, 1 when it is not (one `path: message` line per
error on stderr; warnings as `path: warning: message`), 2 when FILE is unreadable.
`validate --format json` prints `{"file", "valid", "diagnostics": [{"severity",
"code", "path", "message"}]}` on stdout instead (warnings included), same exit.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from execplan.cli.common import EXIT_FAILURE, CliError, read_text

if TYPE_CHECKING:
    from execplan.planner import Diagnostic, Plan

FORMATS = ("text", "json", "dot", "mermaid")
INPUT_FORMATS = ("auto", "yaml", "json")


def register(subparsers: Any) -> None:
    plan = subparsers.add_parser(
        "plan", help="compile a workflow and print its execution plan", description=__doc__
    )
    _add_input(plan)
    plan.add_argument("--format", choices=FORMATS, default="text", help="output (default: text)")
    plan.set_defaults(handler=run_plan)

    validate = subparsers.add_parser(
        "validate", help="check a workflow; print every problem", description=__doc__
    )
    _add_input(validate)
    validate.add_argument("--format", choices=("text", "json"), default="text")
    validate.set_defaults(handler=run_validate)


def _add_input(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="workflow in YAML or JSON; - for stdin")
    parser.add_argument(
        "--input-format",
        choices=INPUT_FORMATS,
        default="auto",
        help="how to parse FILE (default: by extension, else by content)",
    )


def _input_format(args: argparse.Namespace) -> str:
    fmt: str = args.input_format
    if fmt == "auto":
        suffix = Path(args.file).suffix.lower()
        fmt = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}.get(suffix, "auto")
    return fmt


def _read(path: str) -> str:
    """The workflow text, read no further than the planner's size limit (a character
    is at least a byte; the planner then checks the bytes exactly)."""
    from execplan.planner import limits  # noqa: PLC0415

    return read_text(path, max_chars=limits.MAX_DOCUMENT_BYTES)


def _line(d: Diagnostic) -> str:
    path = d.path or "<document>"
    return f"{path}: {d.message}" if d.severity == "error" else f"{path}: warning: {d.message}"


def _report(args: argparse.Namespace, diagnostics: Sequence[Diagnostic]) -> None:
    """Warnings to stderr; on any error, CliError with one line per diagnostic."""
    errors = [d for d in diagnostics if d.severity == "error"]
    lines = [_line(d) for d in (*errors, *(d for d in diagnostics if d.severity != "error"))]
    if errors:
        limit = any(d.code.startswith("limit-") for d in errors)
        what = "exceeds a limit" if limit else "is invalid"
        # The planner reports at most 100; a last `diagnostics-truncated` says so.
        shown = sum(d.code != "diagnostics-truncated" for d in errors)
        more = " and more" if shown < len(errors) else ""
        noun = "error" if shown == 1 and not more else "errors"
        raise CliError(f"{args.file} {what} ({shown} {noun}{more})", EXIT_FAILURE, lines)
    for line in lines:
        print(line, file=sys.stderr)


def _writer(fmt: str) -> Callable[[Plan, Callable[[str], object]], None]:
    """How to write a plan in `fmt`: piece by piece, never the whole text at once
    (the JSON of a 100,000-task plan is ~140 MB)."""
    if fmt == "json":
        from execplan.wire.plan_json import write_plan_json  # noqa: PLC0415

        return write_plan_json
    from execplan import planner  # noqa: PLC0415  (keeps `execplan --help` fast)

    views: dict[str, Callable[[Plan], Iterator[str]]] = {
        "text": planner.text_lines,
        "dot": planner.dot_lines,
        "mermaid": planner.mermaid_lines,
    }
    lines = views[fmt]

    def write_lines(plan: Plan, write: Callable[[str], object]) -> None:
        it = lines(plan)
        while chunk := "".join(itertools.islice(it, 4096)):
            write(chunk)

    return write_lines


def compile_file(args: argparse.Namespace) -> Plan:
    """The plan of `args.file` (`args.input_format`); CliError listing every problem."""
    from execplan.planner import compile_source  # noqa: PLC0415

    result = compile_source(_read(args.file), _input_format(args))
    _report(args, result.diagnostics)
    assert result.plan is not None  # no errors means a plan
    return result.plan


def run_plan(args: argparse.Namespace) -> int:
    plan = compile_file(args)
    # The plan lives until the process ends: keep the cyclic GC from walking its
    # millions of objects again while the output is written (~0.5 s at 100k tasks).
    gc.freeze()
    _writer(args.format)(plan, sys.stdout.write)
    _keep_to_the_end(plan)
    return 0


# Plans this big are not freed when the command is done (below).
KEPT_NODES = 10_000

# The last such plan, in a list that holds itself: a reference cycle that
# `gc.freeze()` moved to the permanent generation is never collected, not even at
# interpreter shutdown. One slot, so a caller running the command in process
# (tests, embedding) keeps at most one plan, not one per call.
_KEPT: list[object] = [None]
_KEPT.append(_KEPT)


def _keep_to_the_end(plan: Plan) -> None:
    """Leave a big plan to the end of the process instead of freeing it object by
    object when `run_plan` returns (~0.1 s of CPU for 100,000 tasks, ~3% of the
    command), since the process ends right after and the system takes the memory
    back at once."""
    if len(plan.nodes) >= KEPT_NODES:
        _KEPT[0] = plan  # the previous one, if any, is freed now
        gc.freeze()


def run_validate(args: argparse.Namespace) -> int:
    from execplan.planner import validate_source  # noqa: PLC0415

    diagnostics = validate_source(_read(args.file), _input_format(args))
    if args.format == "json":
        return _print_json(args.file, diagnostics)
    _report(args, diagnostics)
    print(f"{args.file}: valid")
    return 0


def _print_json(file: str, diagnostics: Sequence[Diagnostic]) -> int:
    valid = not any(d.severity == "error" for d in diagnostics)
    listed = [
        {"severity": d.severity, "code": d.code, "path": d.path, "message": d.message}
        for d in diagnostics
    ]
    print(json.dumps({"file": file, "valid": valid, "diagnostics": listed}, indent=2))
    return 0 if valid else EXIT_FAILURE
