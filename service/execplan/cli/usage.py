"""`execplan usage` and `execplan budget`: what executions spent, and their budgets.

    execplan usage [--workflow W | --execution ID] [--filter EXPR] [--since 24h|TIME]
                   [--until TIME] [--by workflow|execution|task|attribute:NAME]
                   [--format text|json]
    execplan budget ID [--task T] [--cost X] [--tokens N] [--limit NAME=X ...]
                       [--on-exceeded pause|fail] [--resume] [--reason R] [--format text|json]

`usage` adds up the usage recorded in a time range: of one execution, or of the
executions of a workflow, in both cases with every child execution they started
(docs/usage.md). `--since` is a duration back from now (`24h`, `7d`, `30m`) or an
RFC 3339 time (`2026-12-01T00:00:00Z`). `--filter` keeps the executions that the
`ls --filter` language finds (`customer = "acme" AND priority > 3`: search
attributes, state, workflow), with their children. `--by` splits the total:
`--by attribute:customer` by the value of a search attribute (an execution without
one counts towards its nearest ancestor's, so children towards the run that started
them; `(none)`: no value in the lineage).

`budget ID` alone shows the execution's budget, what it spent and holds in reserve,
and why it is paused if its budget paused it. With limits it changes them (the
others stay) and prints the budget in force; `--resume` also resumes it.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from execplan.cli.common import (
    EXIT_USAGE,
    CliError,
    add_address_option,
    run_with_client,
    split_pair,
)
from execplan.usage import COST, TOKENS, format_amount, spent

FORMATS = ("text", "json")
GROUPS = ("workflow", "execution", "task")
BY_ATTRIBUTE = "attribute:"


def register(subparsers: Any) -> None:
    usage = subparsers.add_parser(
        "usage",
        help="what executions used (tokens, cost, counters) over a time range",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_address_option(usage)
    scope = usage.add_mutually_exclusive_group()
    scope.add_argument("--workflow", metavar="NAME", help="executions of this workflow")
    scope.add_argument("--execution", metavar="ID", help="this execution")
    usage.add_argument("--since", metavar="DURATION|TIME", help="e.g. 24h, or an RFC 3339 time")
    usage.add_argument("--until", metavar="TIME", help="an RFC 3339 time (default: now)")
    usage.add_argument(
        "--filter",
        metavar="EXPR",
        default="",
        help="only executions it finds, e.g. 'customer = \"acme\"' (as ls --filter)",
    )
    usage.add_argument(
        "--by",
        type=_grouping,
        metavar="|".join((*GROUPS, BY_ATTRIBUTE + "NAME")),
        help="split the total: by workflow, execution, task or a search attribute's value",
    )
    usage.add_argument("--format", choices=FORMATS, default="text")
    usage.set_defaults(handler=cmd_usage)

    budget = subparsers.add_parser(
        "budget",
        help="show or change the budget of an execution",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_address_option(budget)
    budget.add_argument("execution_id", metavar="ID")
    budget.add_argument("--cost", type=_amount, metavar="X", help="the cost limit")
    budget.add_argument("--tokens", type=_amount, metavar="N", help="the tokens limit")
    budget.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=X",
        help="the limit of another counter (repeatable)",
    )
    budget.add_argument(
        "--task",
        metavar="TASK",
        default="",
        help="change this task's own budget (one the workflow gives it) instead",
    )
    budget.add_argument("--on-exceeded", choices=("pause", "fail"))
    budget.add_argument("--resume", action="store_true", help="resume it if it is paused")
    budget.add_argument("--reason", default="", help="recorded with the change")
    budget.add_argument("--format", choices=FORMATS, default="text")
    budget.set_defaults(handler=cmd_budget)


def _grouping(text: str) -> str:
    """A `--by` value: one of GROUPS, or attribute:NAME with NAME a search attribute's."""
    from execplan.search.attributes import name_problem  # noqa: PLC0415

    if text in GROUPS:
        return text
    if not text.startswith(BY_ATTRIBUTE):
        raise argparse.ArgumentTypeError(
            f"{text[:80]!r} is not {', '.join(GROUPS)} or {BY_ATTRIBUTE}NAME"
        )
    name = text.removeprefix(BY_ATTRIBUTE)
    if not name:
        raise argparse.ArgumentTypeError(f"{BY_ATTRIBUTE}NAME needs a search attribute's name")
    problem = name_problem(name, server=True)
    if problem:
        raise argparse.ArgumentTypeError(f"{name[:80]!r} is not a search attribute name: {problem}")
    return text


def _amount(text: str) -> float:
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"a limit is a finite number >= 0, not {text!r}")
    return value


def _moment(text: str, option: str, now: datetime) -> datetime:
    """A duration back from `now` (`24h`) or an RFC 3339 time."""
    from execplan.planner.durations import parse_duration  # noqa: PLC0415

    try:
        return now - timedelta(milliseconds=parse_duration(text))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(
            f"{option} {text!r} is neither a duration (24h, 7d) nor a time (2026-12-01T00:00:00Z)",
            EXIT_USAGE,
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _plain(value: float) -> float | int:
    return int(value) if value == int(value) and abs(value) < 2**53 else value


def _counters(usage: Any) -> dict[str, float | int]:
    return {name: _plain(usage.counters[name]) for name in sorted(usage.counters)}


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def cmd_usage(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    since = None if args.since is None else _moment(args.since, "--since", now)
    until = None if args.until is None else _moment(args.until, "--until", now)

    async def body(client: Any) -> int:
        response = await client.usage(
            execution_id=args.execution or "",
            workflow_name=args.workflow or "",
            since=since,
            until=until,
            group_by=args.by or "",
            filter=args.filter,
        )
        if args.format == "json":
            out: dict[str, Any] = {
                "workflow": args.workflow,
                "execution": args.execution,
                "filter": args.filter or None,
                "since": _iso(since),
                "until": _iso(until),
                "executions": response.executions,
                "usage": _counters(response.usage),
            }
            if args.by:
                out["by"] = args.by
                out["groups"] = [_group_json(args.by, g) for g in response.groups]
            print(json.dumps(out, indent=2))
            return 0
        for line in _usage_text(args, since, until, response):
            print(line)
        return 0

    return run_with_client(args, body)


def _group_json(by: str, group: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"key": group.key}
    if by.startswith(BY_ATTRIBUTE):
        # The typed value as JSON has it (a time in RFC 3339); null: no value.
        out["value"] = _attribute_json(group.value) if group.HasField("value") else None
    out["executions"] = group.executions
    out["usage"] = _counters(group.usage)
    return out


def _attribute_json(value: Any) -> str | int | float | bool | None:
    from execplan.search.attributes import format_time  # noqa: PLC0415

    kind = value.WhichOneof("value")
    if kind == "time_value":
        return format_time(value.time_value.ToMilliseconds())
    return None if kind is None else getattr(value, kind)


def _usage_text(
    args: argparse.Namespace, since: datetime | None, until: datetime | None, response: Any
) -> list[str]:
    scope = (
        f"workflow {args.workflow}"
        if args.workflow
        else f"execution {args.execution}"
        if args.execution
        else "all executions"
    )
    if args.filter:
        scope += f" where {args.filter}"
    window = (f" since {_iso(since)}" if since is not None else "") + (
        f" until {_iso(until)}" if until is not None else ""
    )
    n = response.executions
    lines = [f"{scope}{window}: {n} execution{'' if n == 1 else 's'} with usage"]
    names = sorted(response.usage.counters)
    if not names:
        return [*lines, "  (nothing recorded)"]
    width = max(len(name) for name in names)
    lines += [
        f"  {name.ljust(width)}  {format_amount(response.usage.counters[name])}" for name in names
    ]
    if args.by and response.groups:
        header = (args.by.removeprefix(BY_ATTRIBUTE).upper(), "EXECUTIONS", *names)
        rows = [header] + [
            (
                g.key,
                str(g.executions),
                *(format_amount(g.usage.counters.get(name, 0.0)) for name in names),
            )
            for g in response.groups
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines.append("")
        lines += [
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
        ]
    return lines


def _limits(args: argparse.Namespace) -> dict[str, float]:
    limits: dict[str, float] = {}
    for item in args.limit:
        name, value = split_pair(item, "--limit", "NAME=X")
        try:
            limits[name] = _amount(value)
        except argparse.ArgumentTypeError as exc:
            raise CliError(f"--limit {name}: {exc}", EXIT_USAGE) from None
    return limits


def cmd_budget(args: argparse.Namespace) -> int:
    counters = _limits(args)
    changing = (
        args.cost is not None
        or args.tokens is not None
        or counters
        or args.on_exceeded
        or args.resume
    )

    if args.task and not changing:
        raise CliError("--task needs a limit to set (--cost, --tokens, --limit)", EXIT_USAGE)

    async def body(client: Any) -> int:
        if changing:
            await client.set_budget(
                args.execution_id,
                cost=args.cost,
                tokens=args.tokens,
                counters=counters,
                on_exceeded=args.on_exceeded or "",
                resume=args.resume,
                reason=args.reason,
                task_id=args.task,
            )
        execution = await client.get(args.execution_id)
        if args.format == "json":
            print(json.dumps(budget_json(execution), indent=2))
        else:
            for line in budget_lines(execution):
                print(line)
        return 0

    return run_with_client(args, body)


def _limits_of(budget: Any) -> dict[str, float]:
    limits = dict(budget.counters)
    if budget.HasField("cost"):
        limits[COST] = budget.cost
    if budget.HasField("tokens"):
        limits[TOKENS] = budget.tokens
    return limits


def _action(budget: Any) -> str:
    from execplan.v1 import workflow_pb2  # noqa: PLC0415

    name: str = workflow_pb2.BudgetAction.Name(budget.on_exceeded)
    return "pause" if name.endswith("UNSPECIFIED") else name.removeprefix("BUDGET_ACTION_").lower()


def budget_json(execution: Any) -> dict[str, Any]:
    from execplan.cli import render  # noqa: PLC0415

    used = dict(execution.usage.counters)
    reserved = dict(execution.reserved.counters)
    limits = _limits_of(execution.budget)
    out: dict[str, Any] = {
        "execution_id": execution.execution_id,
        "state": render.execution_state_name(execution.state),
        "budget": {name: _plain(v) for name, v in sorted(limits.items())},
        "on_exceeded": _action(execution.budget),
        "spent": {name: _plain(spent(name, used)) for name in sorted(limits)},
        "reserved": {name: _plain(spent(name, reserved)) for name in sorted(limits)},
        "usage": _counters(execution.usage),
    }
    tasks = {
        task.task_id: {name: _plain(v) for name, v in sorted(_limits_of(task.budget).items())}
        for task in execution.tasks
        if task.HasField("budget")
    }
    if tasks:
        out["task_budgets"] = tasks
    if execution.HasField("budget_exceeded"):
        out["budget_exceeded"] = execution.budget_exceeded.message
    return out


def budget_lines(execution: Any) -> list[str]:
    """The budget block of `execplan budget` and `execplan get`."""
    used = dict(execution.usage.counters)
    reserved = dict(execution.reserved.counters)
    limits = _limits_of(execution.budget)
    lines: list[str] = []
    if limits:
        lines.append(f"budget (when exceeded: {_action(execution.budget)}):")
        width = max(len(n) for n in limits)
        for name in sorted(limits):
            held = spent(name, reserved)
            lines.append(
                f"  {name.ljust(width)}  {format_amount(spent(name, used))} of "
                f"{format_amount(limits[name])}"
                + (f" (+{format_amount(held)} reserved)" if held else "")
            )
    else:
        lines.append("budget: none")
    if used:
        lines.append("usage: " + ", ".join(f"{n} {format_amount(used[n])}" for n in sorted(used)))
    for task in execution.tasks:
        own = _limits_of(task.budget) if task.HasField("budget") else {}
        if own:
            task_used = dict(task.usage.counters)
            parts = [
                f"{name} {format_amount(spent(name, task_used))} of {format_amount(own[name])}"
                for name in sorted(own)
            ]
            lines.append(f"task {task.task_id} budget: " + ", ".join(parts))
    if execution.HasField("budget_exceeded"):
        lines.append(f"paused: {execution.budget_exceeded.message}")
    return lines
