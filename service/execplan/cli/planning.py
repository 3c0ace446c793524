"""`execplan plan` and `execplan validate`: compile locally (the planner is pure; no
server needed).

    execplan plan FILE [--format text|json|dot|mermaid]    FILE `-` reads stdin
    execplan validate FILE

Exit 0 when the workflow is valid, 1 when it is not (one `path: message` line per
error on stderr; warnings as `path: warning: message`), 2 when FILE is unreadable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from execplan.cli.common import EXIT_FAILURE, CliError, read_text

FORMATS = ("text", "json", "dot", "mermaid")
INPUT_FORMATS = ("auto", "yaml", "json")


def register(subparsers: Any) -> None:
    plan = subparsers.add_parser(
        "plan", help="compile a workflow and print its execution plan", description=__doc__
    )
    _add_input(plan)
    plan.add_argument("--format", choices=FORMATS, default="text", help="output (default: text)")
    plan.set_defaults(handler=run_plan)

    validate = subparsers.add_parser("validate", help="check a workflow; print every problem")
    _add_input(validate)
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


def _compile(args: argparse.Namespace) -> Any:
    """Compile FILE; on errors raise CliError carrying one line per diagnostic."""
    from execplan.planner import compile_source  # noqa: PLC0415

    result = compile_source(read_text(args.file), _input_format(args))
    errors = [_line(d) for d in result.diagnostics if d.severity == "error"]
    warnings = [_line(d) for d in result.diagnostics if d.severity != "error"]
    if not result.ok or result.plan is None:
        what = "exceeds a limit" if result.limit_exceeded else "is invalid"
        noun = "error" if len(errors) == 1 else "errors"
        raise CliError(
            f"{args.file} {what} ({len(errors)} {noun})", EXIT_FAILURE, [*errors, *warnings]
        )
    _print_err(warnings)
    return result.plan


def _line(d: Any) -> str:
    path = d.path or "<document>"
    return f"{path}: {d.message}" if d.severity == "error" else f"{path}: warning: {d.message}"


def _print_err(lines: list[str]) -> None:
    for line in lines:
        print(line, file=sys.stderr)


def _renderer(fmt: str) -> Callable[[Any], str]:
    from execplan import planner  # noqa: PLC0415

    if fmt == "json":
        from execplan.wire.plan_codec import encode_plan  # noqa: PLC0415
        from google.protobuf import json_format  # noqa: PLC0415

        def to_json(plan: Any) -> str:
            return json_format.MessageToJson(encode_plan(plan), preserving_proto_field_name=True)

        return to_json
    renderers: dict[str, Callable[[Any], str]] = {
        "text": planner.render_text,
        "dot": planner.render_dot,
        "mermaid": planner.render_mermaid,
    }
    return renderers[fmt]


def run_plan(args: argparse.Namespace) -> int:
    plan = _compile(args)
    out = _renderer(args.format)(plan)
    print(out, end="" if out.endswith("\n") else "\n")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    _compile(args)
    print(f"{args.file}: valid")
    return 0
