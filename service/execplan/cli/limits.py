"""Flow control from the command line:

    execplan limits [--name N] [--format text|json]    levels, keys and waiting tasks
    execplan limits set NAME --rate 60/m [--burst 10]  register or change a token bucket
    execplan limits delete NAME                        remove a registered bucket
    execplan cache purge [--type T [--key K]]          remove task result cache entries

A bucket set here takes effect at once on every replica and wins over a workflow's
declaration of the same name. Rates are UNITS/PERIOD: 60/m, 10/s, 1000/h, 5/30s.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from execplan.cli import render
from execplan.cli.common import EXIT_USAGE, CliError, add_address_option, run_with_client
from execplan.wire.json_order import json_dict

FORMATS = ("text", "json")


def register(subparsers: Any) -> None:
    limits = subparsers.add_parser(
        "limits",
        help="show concurrency limits and rate limits; set or delete a rate limit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_address_option(limits)
    limits.add_argument("--name", default="", help="only the limit or bucket of this name")
    limits.add_argument("--format", choices=FORMATS, default="text")
    limits.set_defaults(handler=cmd_limits)
    actions = limits.add_subparsers(title="actions", metavar="ACTION", required=False)
    set_ = actions.add_parser("set", help="register or change a token bucket")
    add_address_option(set_)
    set_.add_argument("name", help="bucket name, [a-z0-9][a-z0-9._-]*")
    set_.add_argument("--rate", required=True, help="UNITS/PERIOD, e.g. 60/m, 10/s, 5/30s")
    set_.add_argument("--burst", type=int, default=0, help="bucket size (default: the units)")
    set_.set_defaults(handler=cmd_set)
    delete = actions.add_parser("delete", help="remove a registered token bucket")
    add_address_option(delete)
    delete.add_argument("name")
    delete.set_defaults(handler=cmd_delete)

    cache = subparsers.add_parser(
        "cache",
        help="manage the task result cache",
        description="execplan cache purge [--type T [--key K]]: remove cached task results.",
    )
    cache_actions = cache.add_subparsers(title="actions", metavar="ACTION", required=True)
    purge = cache_actions.add_parser("purge", help="remove cached task results")
    add_address_option(purge)
    purge.add_argument("--type", default="", help="only entries of this task type")
    purge.add_argument("--key", default="", help="only this key (with --type)")
    purge.set_defaults(handler=cmd_purge)


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _source(value: int) -> str:
    from execplan.v1 import executor_service_pb2 as pb  # noqa: PLC0415

    return pb.RateLimitSource.Name(value).removeprefix("RATE_LIMIT_SOURCE_").lower()  # type: ignore[arg-type]


def _kind(value: int) -> str:
    from execplan.v1 import execution_pb2 as ex  # noqa: PLC0415

    return ex.WaitKind.Name(value).removeprefix("WAIT_KIND_").lower()  # type: ignore[arg-type]


def _rate(status: Any) -> str:
    from execplan.flow.rates import format_rate  # noqa: PLC0415

    if not status.defined:
        return "undefined"
    return format_rate(status.units, status.period.ToMilliseconds())


def print_limits(response: Any) -> None:
    printed = False
    rows: list[tuple[str, ...]]
    if response.concurrency_limits:
        rows = [("CONCURRENCY LIMIT", "KEY", "IN USE", "MAX", "WAITING")]
        for c in response.concurrency_limits:
            rows.append((c.name, c.key or "-", str(c.in_use), str(c.max), str(c.waiting)))
        _table(rows)
        printed = True
    if response.rate_limits:
        if printed:
            print()
        rows = [
            ("RATE LIMIT", "RATE", "BURST", "SOURCE", "KEY", "TOKENS", "PAUSED UNTIL", "WAITING")
        ]
        for r in response.rate_limits:
            head = (r.name, _rate(r), str(r.burst) if r.defined else "-", _source(r.source))
            if not r.keys:
                rows.append((*head, "-", "-", "-", "0"))
            for k in r.keys:
                paused = render.stamp(k.paused_until) if k.HasField("paused_until") else "-"
                rows.append((*head, k.key or "-", f"{k.tokens:.1f}", paused, str(k.waiting)))
        _table(rows)
        printed = True
    if response.waiting:
        if printed:
            print()
        rows = [("EXECUTION", "TASK", "WAITING FOR", "SINCE", "WHY")]
        for w in response.waiting:
            rows.append(
                (
                    w.execution_id,
                    w.task_id,
                    _kind(w.waiting.kind),
                    render.stamp(w.waiting.since),
                    w.waiting.message,
                )
            )
        _table(rows)
        printed = True
    if not printed:
        print("no limits, rate limits or waiting tasks")


def cmd_limits(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        response = await client.list_limits(args.name)
        if args.format == "json":
            print(json.dumps(json_dict(response), indent=2))
        else:
            print_limits(response)
        return 0

    return run_with_client(args, body)


def cmd_set(args: argparse.Namespace) -> int:
    from execplan.flow import rates  # noqa: PLC0415

    try:
        units, period_ms = rates.parse_rate(args.rate)
        settings = rates.settings(units, period_ms, args.burst)
    except ValueError as exc:
        raise CliError(f"--rate/--burst: {exc}", EXIT_USAGE) from None

    async def body(client: Any) -> int:
        status = await client.set_rate_limit(
            args.name, settings.units, settings.period_ms, settings.burst
        )
        print(f"{status.name}: {_rate(status)}, burst {status.burst} ({_source(status.source)})")
        return 0

    return run_with_client(args, body)


def cmd_delete(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        if not await client.delete_rate_limit(args.name):
            raise CliError(f"no rate limit named {args.name} is registered")
        print(f"{args.name}: deleted")
        return 0

    return run_with_client(args, body)


def cmd_purge(args: argparse.Namespace) -> int:
    if args.key and not args.type:
        raise CliError("--key needs --type (a cache key belongs to a task type)", EXIT_USAGE)

    async def body(client: Any) -> int:
        purged = await client.purge_cache(args.type, args.key)
        print(f"purged {purged} cache entr{'y' if purged == 1 else 'ies'}")
        return 0

    return run_with_client(args, body)
