"""`execplan schedule ...`: run a workflow on a cron expression or an interval.

    execplan schedule create NAME (--cron EXPR | --every DURATION) FILE
                    [--timezone TZ] [--jitter DURATION] [--overlap skip|buffer|allow]
                    [--catchup DURATION] [--offset DURATION] [--start-at TIME] [--end-at TIME]
                    [--input K=V ...] [--inputs-json JSON] [--attr K=V ...] [--paused]
    execplan schedule list [--format text|json]
    execplan schedule get NAME [--format text|json]
    execplan schedule pause NAME [--reason R]
    execplan schedule resume NAME
    execplan schedule delete NAME
    execplan schedule backfill NAME --start TIME --end TIME [--overlap skip|buffer|allow]

`--cron` takes five fields (`"*/5 * * * *"`, `"0 9 * * MON-FRI"`) in `--timezone`
(IANA, default UTC); `--every 1h` slots are at the Unix epoch + `--offset` + k * 1h.
TIME is RFC 3339 (`2026-01-01T00:00:00Z`) or a duration ago (`2h`). Each slot starts
one execution, with request_id `schedule:NAME:<slot ms>` and the search attributes
`execplan_schedule` and `execplan_scheduled_at`: `execplan ls --attr
execplan_schedule=NAME` lists its runs. Semantics: docs/operations.md.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from execplan.cli import render
from execplan.cli.common import EXIT_USAGE, CliError, add_address_option, read_text, run_with_client

if TYPE_CHECKING:
    from execplan.client import ExecutorClient

FORMATS = ("text", "json")
OVERLAPS = ("skip", "buffer", "allow")


def register(subparsers: Any) -> None:
    group = subparsers.add_parser(
        "schedule",
        help="run a workflow on a cron expression or an interval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = group.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def add(name: str, handler: Any, help_: str) -> Any:
        parser = commands.add_parser(name, help=help_, description=__doc__)
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        add_address_option(parser)
        parser.set_defaults(handler=handler)
        return parser

    create = add("create", cmd_create, "create a schedule")
    create.add_argument("name", metavar="NAME")
    when = create.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", metavar="EXPR", help='five cron fields, e.g. "*/5 * * * *"')
    when.add_argument("--every", metavar="DURATION", help="an interval, e.g. 1h")
    create.add_argument("file", metavar="FILE", help="workflow in YAML or JSON; - for stdin")
    create.add_argument("--timezone", default="", metavar="TZ", help="IANA zone of --cron")
    create.add_argument("--offset", metavar="DURATION", help="phase of --every slots")
    create.add_argument("--jitter", metavar="DURATION", help="start up to this late")
    create.add_argument("--overlap", choices=OVERLAPS, default="skip")
    create.add_argument("--catchup", metavar="DURATION", help="run missed slots this old")
    create.add_argument("--start-at", metavar="TIME", help="no slot before")
    create.add_argument("--end-at", metavar="TIME", help="no slot after")
    create.add_argument("--input", action="append", default=[], metavar="K=V")
    create.add_argument("--inputs-json", metavar="JSON")
    create.add_argument("--attr", action="append", default=[], metavar="K=V")
    create.add_argument("--fairness-key", default="", metavar="KEY")
    create.add_argument("--paused", action="store_true", help="create it paused")
    create.add_argument("--format", choices=FORMATS, default="text")

    listing = add("list", cmd_list, "list schedules")
    listing.add_argument("--format", choices=FORMATS, default="text")

    get = add("get", cmd_get, "show one schedule")
    get.add_argument("name", metavar="NAME")
    get.add_argument("--format", choices=FORMATS, default="text")

    pause = add("pause", cmd_pause, "stop firing (slots while paused are not run later)")
    pause.add_argument("name", metavar="NAME")
    pause.add_argument("--reason", default="")

    resume = add("resume", cmd_resume, "fire again from the next slot")
    resume.add_argument("name", metavar="NAME")

    delete = add("delete", cmd_delete, "delete a schedule (its runs go on)")
    delete.add_argument("name", metavar="NAME")

    backfill = add("backfill", cmd_backfill, "run every slot of a past range that has not run")
    backfill.add_argument("name", metavar="NAME")
    backfill.add_argument("--start", required=True, metavar="TIME")
    backfill.add_argument("--end", required=True, metavar="TIME")
    backfill.add_argument("--overlap", choices=OVERLAPS, default="")
    backfill.add_argument("--format", choices=FORMATS, default="text")


def _seconds(text: str | None, option: str) -> timedelta | None:
    if text is None:
        return None
    from execplan.planner.durations import parse_duration  # noqa: PLC0415

    try:
        return timedelta(milliseconds=parse_duration(text))
    except ValueError as exc:
        raise CliError(f"{option}: {exc}", EXIT_USAGE) from None


def _when(text: str | None, option: str) -> datetime | None:
    """RFC 3339, or a duration before now."""
    if text is None:
        return None
    from execplan.cli.search import _time  # noqa: PLC0415

    when = _time(text)
    if when is not None:
        return when
    ago = _seconds(text, option)
    assert ago is not None
    return datetime.fromtimestamp(time.time(), tz=UTC) - ago


def cmd_create(args: argparse.Namespace) -> int:
    from execplan.cli.executions import parse_inputs  # noqa: PLC0415
    from execplan.cli.search import parse_attrs  # noqa: PLC0415

    source = read_text(args.file)
    inputs = parse_inputs(args.input, args.inputs_json)
    attributes = parse_attrs(args.attr)

    async def body(client: ExecutorClient) -> int:
        answer = await client.schedules.create(
            args.name,
            cron=args.cron or "",
            every=_seconds(args.every, "--every"),
            offset=_seconds(args.offset, "--offset"),
            time_zone=args.timezone,
            jitter=_seconds(args.jitter, "--jitter"),
            overlap=args.overlap,
            catchup_window=_seconds(args.catchup, "--catchup"),
            start_at=_when(args.start_at, "--start-at"),
            end_at=_when(args.end_at, "--end-at"),
            source=source,
            inputs=inputs,
            fairness_key=args.fairness_key,
            search_attributes=attributes,
            paused=args.paused,
        )
        if args.format == "json":
            render.print_json_message(answer)
            return 0
        verb = "created" if answer.created else "exists (unchanged)"
        print(f"schedule {answer.schedule.name} {verb}; {_next(answer.schedule)}")
        return 0

    return run_with_client(args, body)


def _next(schedule: Any) -> str:
    if schedule.paused:
        return "paused"
    if not schedule.info.HasField("next_run_at"):
        return "no more runs"
    return f"next run {render.stamp(schedule.info.next_run_at)}"


def _spec_text(spec: Any) -> str:
    if spec.cron:
        zone = f" ({spec.time_zone})" if spec.time_zone else " (UTC)"
        return f"cron {spec.cron}{zone}"
    from execplan.planner.durations import format_duration  # noqa: PLC0415

    text = f"every {format_duration(spec.interval.ToMilliseconds())}"
    if spec.offset.ToMilliseconds():
        text += f" +{format_duration(spec.offset.ToMilliseconds())}"
    return text


def _overlap(spec: Any) -> str:
    from execplan.v1 import schedule_pb2  # noqa: PLC0415

    name: str = schedule_pb2.ScheduleOverlapPolicy.Name(spec.overlap)
    return name.removeprefix("SCHEDULE_OVERLAP_POLICY_").lower().replace("unspecified", "skip")


def cmd_list(args: argparse.Namespace) -> int:
    async def body(client: ExecutorClient) -> int:
        schedules = [s async for s in client.schedules.list()]
        if args.format == "json":
            render.print_json_messages(schedules)
            return 0
        rows = [("SCHEDULE", "WHEN", "OVERLAP", "WORKFLOW", "RUNS", "SKIPPED", "NEXT")]
        for s in schedules:
            nxt = "paused" if s.paused else render.stamp(s.info.next_run_at)
            rows.append(
                (
                    s.name,
                    _spec_text(s.spec),
                    _overlap(s.spec),
                    s.action.workflow_name,
                    str(s.info.runs),
                    str(s.info.skipped),
                    nxt,
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        return 0

    return run_with_client(args, body)


def cmd_get(args: argparse.Namespace) -> int:
    async def body(client: ExecutorClient) -> int:
        s = await client.schedules.get(args.name)
        if args.format == "json":
            render.print_json_message(s)
            return 0
        from execplan.client import from_struct  # noqa: PLC0415

        info = s.info
        lines = [
            f"schedule   {s.name}" + (f"  (paused: {s.note})" if s.paused and s.note else ""),
            f"when       {_spec_text(s.spec)}, overlap {_overlap(s.spec)}",
            f"workflow   {s.action.workflow_name}  (plan {s.action.plan_id})",
            f"inputs     {render.compact(from_struct(s.action.inputs), 200)}",
            f"runs       {info.runs}   skipped {info.skipped}   {_next(s)}",
        ]
        if info.buffered:
            lines.append(f"buffered   {len(info.buffered)} slots")
        if info.last_error:
            lines.append(f"last error {info.last_error}")
        for run in info.recent_runs:
            flag = "  (backfill)" if run.backfill else ""
            lines.append(f"  {render.stamp(run.slot)}  {run.execution_id}{flag}")
        print("\n".join(lines))
        return 0

    return run_with_client(args, body)


def cmd_pause(args: argparse.Namespace) -> int:
    async def body(client: ExecutorClient) -> int:
        await client.schedules.pause(args.name, args.reason)
        print(f"schedule {args.name} paused")
        return 0

    return run_with_client(args, body)


def cmd_resume(args: argparse.Namespace) -> int:
    async def body(client: ExecutorClient) -> int:
        schedule = await client.schedules.resume(args.name)
        print(f"schedule {args.name} resumed; {_next(schedule)}")
        return 0

    return run_with_client(args, body)


def cmd_delete(args: argparse.Namespace) -> int:
    async def body(client: ExecutorClient) -> int:
        deleted = await client.schedules.delete(args.name)
        print(f"schedule {args.name} {'deleted' if deleted else 'did not exist'}")
        return 0

    return run_with_client(args, body)


def cmd_backfill(args: argparse.Namespace) -> int:
    start = _when(args.start, "--start")
    end = _when(args.end, "--end")
    assert start is not None and end is not None

    async def body(client: ExecutorClient) -> int:
        answer = await client.schedules.backfill(args.name, start, end, args.overlap)
        if args.format == "json":
            render.print_json_message(answer)
            return 0
        for execution_id in answer.execution_ids:
            print(execution_id)
        print(
            f"{answer.slots} slots: {answer.started} started, {answer.already_run} had run, "
            f"{answer.skipped} skipped, {answer.buffered} buffered"
        )
        return 0

    return run_with_client(args, body)
