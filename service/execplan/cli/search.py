"""`execplan ls` and `execplan purge`: find executions, and delete finished ones.

    execplan ls [--state S ...] [--workflow NAME] [--parent ID] [--attr K=V ...]
                [--filter EXPR] [--since DURATION] [--until DURATION] [--limit N]
                [--format text|json]
    execplan purge (--filter EXPR | --all) [--older-than DURATION] [--dry-run] [--yes]

`--filter` takes the filter language of docs/operations.md, e.g.
`customer = "acme" AND priority > 3 AND created_at >= 2026-01-01`. `--attr K=V` is a
shortcut for `K = V` (V typed as `run --attr` types it), `--since 24h` for
`created_at >= <24 hours ago>`, `--until 1h` for `created_at < <an hour ago>`; all
of them combine with AND. `purge` deletes only finished executions (history,
checkpoints, search attributes); it asks for `--yes` unless `--dry-run`, and
`--older-than 30d` keeps those that finished within the last 30 days.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from execplan.cli import render
from execplan.cli.common import (
    EXIT_USAGE,
    CliError,
    add_address_option,
    run_with_client,
    split_pair,
)

if TYPE_CHECKING:
    from execplan.client import ExecutorClient

FORMATS = ("text", "json")
_MAX_PURGE_CALL = 1000


def register(subparsers: Any) -> None:
    ls = subparsers.add_parser(
        "ls",
        help="list executions, newest first",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_address_option(ls)
    ls.add_argument(
        "--state", action="append", default=[], metavar="S", help="e.g. running (repeatable)"
    )
    ls.add_argument("--workflow", default="", metavar="NAME")
    ls.add_argument("--parent", default="", metavar="ID", help="only the child executions of ID")
    ls.add_argument(
        "--attr", action="append", default=[], metavar="K=V", help="search attribute (repeatable)"
    )
    ls.add_argument("--filter", default="", metavar="EXPR", help="filter expression")
    ls.add_argument("--since", metavar="DURATION", help="created within this long (e.g. 24h)")
    ls.add_argument("--until", metavar="DURATION", help="created more than this long ago")
    ls.add_argument("--limit", type=int, default=50, metavar="N")
    ls.add_argument("--format", choices=FORMATS, default="text")
    ls.set_defaults(handler=cmd_ls)

    purge = subparsers.add_parser(
        "purge",
        help="delete finished executions that match a filter",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_address_option(purge)
    which = purge.add_mutually_exclusive_group(required=True)
    which.add_argument("--filter", metavar="EXPR", help="which finished executions")
    which.add_argument("--all", action="store_true", help="every finished execution")
    purge.add_argument(
        "--older-than", metavar="DURATION", help="only those finished longer ago than this"
    )
    purge.add_argument("--dry-run", action="store_true", help="list them, delete nothing")
    purge.add_argument("--yes", action="store_true", help="really delete")
    purge.add_argument("--format", choices=FORMATS, default="text")
    purge.set_defaults(handler=cmd_purge)


# -- building filters ----------------------------------------------------------------


def attr_value(text: str) -> Any:
    """A `--attr` value typed: JSON numbers and booleans as such, an RFC 3339 time as a
    time (aware datetime), a JSON string as that string, anything else as text."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    if isinstance(value, bool | int | float) or (isinstance(value, str) and text.startswith('"')):
        return value
    when = _time(text)
    return when if when is not None else text


def parse_attrs(pairs: list[str], option: str = "--attr") -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for pair in pairs:
        key, text = split_pair(pair, option, "K=V")
        attrs[key] = attr_value(text)
    return attrs


def literal(value: Any) -> str:
    """`value` as a literal of the filter language."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return json.dumps(str(value))


def _time(text: str) -> datetime | None:
    if len(text) < 10 or not text[:4].isdigit() or text[4] != "-":
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _ago(text: str, option: str) -> datetime:
    from execplan.planner.durations import parse_duration  # noqa: PLC0415

    try:
        ms = parse_duration(text)
    except ValueError as exc:
        raise CliError(f"{option}: {exc}", EXIT_USAGE) from None
    return datetime.fromtimestamp(time.time() - ms / 1000, tz=UTC)


def build_filter(args: argparse.Namespace) -> str:
    clauses = [args.filter] if args.filter else []
    for key, value in parse_attrs(args.attr).items():
        clauses.append(f"{key} = {literal(value)}")
    if args.since:
        clauses.append(f"created_at >= {literal(_ago(args.since, '--since'))}")
    if args.until:
        clauses.append(f"created_at < {literal(_ago(args.until, '--until'))}")
    return " AND ".join(clauses)


# -- commands ------------------------------------------------------------------------


def cmd_ls(args: argparse.Namespace) -> int:
    from execplan.cli.executions import _state_arg  # noqa: PLC0415

    states = [_state_arg(s) for s in args.state]
    if args.limit < 1:
        raise CliError("--limit must be >= 1", EXIT_USAGE)
    expression = build_filter(args)

    async def body(client: ExecutorClient) -> int:
        found = []
        page = min(args.limit, 1000)
        listing = client.list(
            states,
            workflow_name=args.workflow,
            page_size=page,
            filter=expression,
            parent_execution_id=args.parent,
        )
        async for ex in listing:
            found.append(ex)
            if len(found) >= args.limit:
                break
        if args.format == "json":
            render.print_json_messages(found)
            return 0
        _table(found)
        return 0

    return run_with_client(args, body)


def _table(found: list[Any]) -> None:
    from execplan.client import from_search_attributes  # noqa: PLC0415

    with_attrs = any(ex.search_attributes for ex in found)
    rows: list[tuple[str, ...]] = [("EXECUTION", "WORKFLOW", "STATE", "CREATED", "TASKS", "PARENT")]
    if with_attrs:
        rows = [(*rows[0], "ATTRIBUTES")]
    for ex in found:
        row: tuple[str, ...] = (
            ex.execution_id,
            ex.workflow_name,
            render.execution_state_name(ex.state),
            render.stamp(ex.created_at),
            tasks_done(ex),
            ex.parent_execution_id or "-",  # a child of a builtin.workflow task
        )
        if with_attrs:
            attrs = from_search_attributes(ex.search_attributes)
            shown = " ".join(f"{k}={_shown(v)}" for k, v in sorted(attrs.items()))
            row = (*row, render.clip(shown, 60))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _shown(value: Any) -> str:
    if isinstance(value, datetime):
        return literal(value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def tasks_done(execution: Any) -> str:
    """`done/total` from task_counts (or the task list); `-` when the server sent neither."""
    counts = dict(execution.task_counts) or {
        name: sum(1 for t in execution.tasks if render.task_state_name(t.state) == name)
        for name in {render.task_state_name(t.state) for t in execution.tasks}
    }
    if not counts:
        return "-"
    done = sum(n for name, n in counts.items() if name in render.TERMINAL_TASK_STATES)
    return f"{done}/{sum(counts.values())}"


def cmd_purge(args: argparse.Namespace) -> int:
    clauses = [args.filter] if args.filter else []
    if args.older_than:
        clauses.append(f"finished_at < {literal(_ago(args.older_than, '--older-than'))}")
    expression = " AND ".join(clauses)
    if not args.dry_run and not args.yes:
        raise CliError("purge deletes executions for good: add --yes (or --dry-run)", EXIT_USAGE)

    async def body(client: ExecutorClient) -> int:
        ids: list[str] = []
        while True:
            answer = await client.purge(expression, limit=_MAX_PURGE_CALL, dry_run=args.dry_run)
            ids += answer.execution_ids
            if args.dry_run or not answer.more:
                more = answer.more
                break
        if args.format == "json":
            print(
                json.dumps(
                    {
                        "purged": len(ids),
                        "dry_run": args.dry_run,
                        "more": more,
                        "execution_ids": ids,
                    },
                    indent=2,
                )
            )
            return 0
        for execution_id in ids:
            print(execution_id)
        verb = "would delete" if args.dry_run else "deleted"
        extra = f" (and more: the first {_MAX_PURGE_CALL} are listed)" if more else ""
        print(f"{verb} {len(ids)} finished executions{extra}", file=sys.stderr)
        return 0

    return run_with_client(args, body)
