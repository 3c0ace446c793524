"""`execplan register`, `plans` and `workers`: what a server has stored and who serves it.

    execplan register FILE [--input-format auto|yaml|json] [--format text|json]
    execplan plans [--workflow NAME] [--limit N] [--format text|json]
    execplan workers [--type T ...] [--format text|json]

`register` compiles FILE locally (exit 1 with one `path: message` line per problem,
as `execplan plan`) and registers the plan by name, so `builtin.workflow` tasks find
it as `NAME` (the latest) or `NAME@VERSION`; it prints one line
`registered NAME@VERSION PLAN_ID` (`already registered ...` when nothing changed).
A version is immutable: another plan under a registered version is refused
(ALREADY_EXISTS); bump `version` in the file.

`plans` lists stored plans newest first (workflow, version, plan id, tasks, when
stored); `workers` lists the workers connected to the server answering (on
PostgreSQL replicas, each replica has its own streams), with their task types,
labels and slots in use.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from execplan.cli import render
from execplan.cli.common import EXIT_USAGE, CliError, add_address_option, run_with_client
from execplan.wire.json_order import json_dict

FORMATS = ("text", "json")


def register(subparsers: Any) -> None:
    reg = subparsers.add_parser(
        "register",
        help="register a workflow by name (for builtin.workflow tasks)",
        description=__doc__,
    )
    add_address_option(reg)
    reg.add_argument("file", metavar="FILE", help="workflow in YAML or JSON; - for stdin")
    reg.add_argument(
        "--input-format", choices=("auto", "yaml", "json"), default="auto", help="how to parse FILE"
    )
    reg.add_argument("--format", choices=FORMATS, default="text")
    reg.set_defaults(handler=cmd_register)

    plans = subparsers.add_parser("plans", help="list stored plans, newest first")
    add_address_option(plans)
    plans.add_argument("--workflow", default="", metavar="NAME", help="only this workflow")
    plans.add_argument("--limit", type=int, default=50, metavar="N", help="at most N (default 50)")
    plans.add_argument("--format", choices=FORMATS, default="text")
    plans.set_defaults(handler=cmd_plans)

    workers = subparsers.add_parser("workers", help="list the workers connected now")
    add_address_option(workers)
    workers.add_argument(
        "--type", action="append", default=[], metavar="T", help="only workers of this task type"
    )
    workers.add_argument("--format", choices=FORMATS, default="text")
    workers.set_defaults(handler=cmd_workers)


def cmd_register(args: argparse.Namespace) -> int:
    from execplan.cli.planning import compile_file  # noqa: PLC0415
    from execplan.wire.plan_codec import encode_plan  # noqa: PLC0415

    plan = encode_plan(compile_file(args))

    async def body(client: Any) -> int:
        registered = await client.register(plan=plan)
        if args.format == "json":
            print(json.dumps(json_dict(registered), indent=2))
            return 0
        name = registered.workflow_name
        if registered.workflow_version:
            name += f"@{registered.workflow_version}"
        what = "registered" if registered.created else "already registered"
        print(f"{what} {name} {registered.plan_id}")
        return 0

    return run_with_client(args, body)


def cmd_plans(args: argparse.Namespace) -> int:
    if args.limit < 1:  # as `execplan ls`: `--limit 0` used to list one plan
        raise CliError("--limit must be >= 1", EXIT_USAGE)

    async def body(client: Any) -> int:
        plans = []
        async for plan in client.list_plans(args.workflow, page_size=min(max(args.limit, 1), 1000)):
            plans.append(plan)
            if len(plans) >= args.limit:
                break
        if args.format == "json":
            return _json(plans)
        rows = [("WORKFLOW", "VERSION", "TASKS", "STORED", "PLAN")]
        for p in plans:
            rows.append(
                (
                    p.workflow_name,
                    p.workflow_version or "-",
                    str(p.node_count),
                    render.stamp(p.registered_at),
                    p.plan_id,
                )
            )
        _table(rows)
        return 0

    return run_with_client(args, body)


def cmd_workers(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        workers = await client.list_workers(args.type)
        if args.format == "json":
            return _json(workers)
        rows = [("WORKER", "SLOTS", "TYPES", "LABELS", "LAST SEEN", "SDK")]
        for w in workers:
            labels = ",".join(f"{k}={v}" for k, v in sorted(w.labels.items()))
            rows.append(
                (
                    w.worker_id + (" (draining)" if w.draining else ""),
                    f"{w.slots_in_use}/{w.slots}",
                    ",".join(w.task_types),
                    labels or "-",
                    render.stamp(w.last_seen_at),
                    w.sdk or "-",
                )
            )
        _table(rows)
        return 0

    return run_with_client(args, body)


def _json(messages: Sequence[Any]) -> int:
    print(json.dumps([json_dict(m) for m in messages], indent=2))
    return 0


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
