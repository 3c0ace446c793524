"""`execplan breakers [--address A] [--type T ...] [--format text|json]`: circuit breakers.

One row per task type that has a breaker: its state (closed, open, half_open),
consecutive failures, the failure-rate window, when it opened and will half-open,
how many tasks are parked behind it, and the last error it counted.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from execplan.cli import render
from execplan.cli.common import add_address_option, run_with_client
from execplan.wire.json_order import json_dict

FORMATS = ("text", "json")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "breakers", help="show the circuit breakers per task type", description=__doc__
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_address_option(parser)
    parser.add_argument(
        "--type", action="append", default=[], metavar="T", help="only this task type (repeatable)"
    )
    parser.add_argument("--format", choices=FORMATS, default="text")
    parser.set_defaults(handler=cmd_breakers)


def _state(value: int) -> str:
    from execplan.v1 import executor_service_pb2 as pb  # noqa: PLC0415

    return pb.BreakerState.Name(value).removeprefix("BREAKER_STATE_").lower()  # type: ignore[arg-type]


def cmd_breakers(args: argparse.Namespace) -> int:
    async def body(client: Any) -> int:
        breakers = await client.list_circuit_breakers(args.type)
        if args.format == "json":
            print(json.dumps([json_dict(b) for b in breakers], indent=2))
            return 0
        rows = [("TYPE", "STATE", "FAILURES", "WINDOW", "OPENED", "HALF-OPEN", "PARKED", "ERROR")]
        for b in breakers:
            opened = b.HasField("opened_at")
            rows.append(
                (
                    b.task_type,
                    _state(b.state),
                    str(b.consecutive_failures),
                    f"{b.window_failures}/{b.window_calls}",
                    render.stamp(b.opened_at) if opened else "-",
                    render.stamp(b.half_open_at) if opened else "-",
                    str(b.parked_tasks),
                    b.last_error or "-",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        return 0

    return run_with_client(args, body)
