"""Client commands: start, watch, inspect and control executions on a server.

    execplan run FILE [--input K=V ...] [--inputs-json JSON] [--request-id ID]
                      [--attr K=V ...] [--wait [--stream]]
    execplan watch ID [--after N] [--stream] [--format text|json]
    execplan get ID [--format text|json|dot|mermaid] [--at N]
    execplan history ID [--format text|json]
    execplan pause|resume|cancel|terminate ID [--reason R]
    execplan send-event ID NAME [--data JSON]

Every command takes `--address HOST:PORT` (default $EXECPLAN_ADDRESS, else
127.0.0.1:7070). `--input` values are JSON when they parse as JSON (`3`, `true`,
`{"a": 1}`), else strings; `--attr` values likewise, and an RFC 3339 time is a time
(`ls` and `purge` are in search.py). `run` without `--wait` prints the execution id;
with it, live progress goes to stderr and the outputs to stdout as JSON. `--stream`
prints the tasks' partial output (`ctx.stream`) as it comes: raw text, each run of a
task's output after a `[task]` marker. `run --wait` and `watch` exit 0 only when the
execution SUCCEEDED. `watch --format json` prints one JSON object per line: the
event, or `{"chunk": ...}`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from execplan.cli import render
from execplan.cli.common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    CliError,
    add_address_option,
    read_text,
    run_with_client,
    sequence_arg,
    split_pair,
)

if TYPE_CHECKING:
    from execplan.client import ExecutionState, ExecutorClient
    from execplan.v1 import events_pb2

GET_FORMATS = ("text", "json", "dot", "mermaid")
SUCCEEDED = "SUCCEEDED"


def register(subparsers: Any) -> None:
    def add(name: str, handler: Callable[[argparse.Namespace], int], help_: str) -> Any:
        parser = subparsers.add_parser(name, help=help_, description=__doc__)
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        add_address_option(parser)
        parser.set_defaults(handler=handler)
        return parser

    run = add("run", cmd_run, "start an execution of a workflow file")
    run.add_argument("file", metavar="FILE", help="workflow in YAML or JSON; - for stdin")
    run.add_argument(
        "--input", action="append", default=[], metavar="K=V", help="an input (repeatable)"
    )
    run.add_argument("--inputs-json", metavar="JSON", help="inputs as one JSON object")
    run.add_argument("--request-id", help="idempotency key: the same id starts one execution")
    run.add_argument(
        "--attr",
        action="append",
        default=[],
        metavar="K=V",
        help="a search attribute to find it by (repeatable): customer=acme, priority=3",
    )
    run.add_argument("--wait", action="store_true", help="show progress, print the outputs")
    run.add_argument(
        "--stream", action="store_true", help="with --wait: print the tasks' partial output"
    )

    watch = add("watch", cmd_watch, "stream the events of an execution until it ends")
    watch.add_argument("execution_id", metavar="ID")
    watch.add_argument(
        "--after", type=sequence_arg, default=0, metavar="N", help="events after seq N"
    )
    watch.add_argument(
        "--stream", action="store_true", help="also print the tasks' partial output, live"
    )
    watch.add_argument(
        "--format", choices=("text", "json"), default="text", help="json: one object per line"
    )

    get = add("get", cmd_get, "show one execution")
    get.add_argument("execution_id", metavar="ID")
    get.add_argument("--format", choices=GET_FORMATS, default="text")
    get.add_argument(
        "--at", type=sequence_arg, default=0, metavar="N", help="state as of sequence N"
    )

    history = add("history", cmd_history, "print the event log of an execution")
    history.add_argument("execution_id", metavar="ID")
    history.add_argument("--format", choices=("text", "json"), default="text")

    for name, what in (
        ("pause", "stop dispatching; running attempts finish"),
        ("resume", "resume a paused execution"),
        ("cancel", "cancel (compensating if the workflow says so)"),
        ("terminate", "stop now, without compensation"),
    ):
        control = add(name, cmd_control, what)
        control.add_argument("execution_id", metavar="ID")
        control.add_argument("--reason", default="")
        control.set_defaults(action=name)

    send = add("send-event", cmd_send_event, "deliver a named event to an execution")
    send.add_argument("execution_id", metavar="ID")
    send.add_argument("name", metavar="NAME")
    send.add_argument("--data", metavar="JSON", help="the event's payload (JSON)")


# -- plumbing ------------------------------------------------------------------------


# A JSON number travels as a double (google.protobuf.Value): an integer past 2^53 - 1
# would arrive rounded, so it is refused, as the planner refuses it in a workflow.
MAX_SAFE_INTEGER = 2**53 - 1
_MAX_NUMBER_CHARS = 100  # the planner's bound on a number literal


def _json_int(text: str) -> int:
    if len(text) > _MAX_NUMBER_CHARS:
        raise ValueError(f"a number of {len(text):,} digits; quote it to pass it as text")
    value = int(text)
    if abs(value) > MAX_SAFE_INTEGER:
        raise ValueError(
            f"the integer {text} is beyond +-(2^53 - 1), the largest a JSON number holds "
            "exactly; quote it to pass it as text"
        )
    return value


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999
        raise ValueError(f"the number {text[:40]} is too large for a JSON number (a double)")
    return value


class _NotJson(ValueError):
    """NaN, Infinity or -Infinity: Python's json reads them, JSON has no such value."""


def _not_json(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON number")


def _loads(text: str) -> Any:
    """json.loads for JSON proper: no NaN/Infinity (Python accepts them), integers that
    a double holds exactly; raises ValueError (JSONDecodeError for bad syntax)."""
    try:
        return json.loads(
            text, parse_int=_json_int, parse_float=_json_float, parse_constant=_not_json
        )
    except RecursionError:
        raise ValueError("it nests too deep") from None


def _json_arg(text: str, what: str) -> Any:
    try:
        return _loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{what} is not valid JSON: {exc.msg} (column {exc.colno})", EXIT_USAGE
        ) from None
    except _NotJson as exc:
        raise CliError(f"{what} is not valid JSON: {exc}", EXIT_USAGE) from None
    except ValueError as exc:
        raise CliError(f"{what}: {exc}", EXIT_USAGE) from None


def parse_inputs(pairs: list[str], inputs_json: str | None) -> dict[str, Any]:
    """--inputs-json first, then each --input K=V on top (JSON if it parses, else text)."""
    inputs: dict[str, Any] = {}
    if inputs_json is not None:
        value = _json_arg(inputs_json, "--inputs-json")
        if not isinstance(value, dict):
            raise CliError("--inputs-json must be a JSON object", EXIT_USAGE)
        inputs.update(value)
    for pair in pairs:
        key, text = split_pair(pair, "--input", "K=V")
        try:
            inputs[key] = _loads(text)
        except (json.JSONDecodeError, _NotJson):
            inputs[key] = text  # not JSON (`name=Ada`, `x=NaN`): text
        except ValueError as exc:
            raise CliError(f"--input {key}: {exc}", EXIT_USAGE) from None
    return inputs


def _state_arg(text: str) -> ExecutionState:
    from execplan.v1 import execution_pb2  # noqa: PLC0415

    name = text.upper().removeprefix("EXECUTION_STATE_")
    try:
        return execution_pb2.ExecutionState.Value(f"EXECUTION_STATE_{name}")
    except ValueError:
        names = [
            n.removeprefix("EXECUTION_STATE_").lower()
            for n, _ in execution_pb2.ExecutionState.items()
        ]
        raise CliError(
            f"unknown state {text!r}; one of {', '.join(names[1:])}", EXIT_USAGE
        ) from None


def _print_json(value: Any) -> None:
    print(json.dumps(render.json_plain(value), indent=2, sort_keys=True))


def _outcome(execution_id: str, done: events_pb2.ExecutionCompleted) -> int:
    """Exit code of a finished execution; the failure line on stderr when not SUCCEEDED."""
    state = render.execution_state_name(done.state)
    if state == SUCCEEDED:
        return 0
    reason = f"{done.error.type}: {done.error.message}" if done.error.type else "no error recorded"
    if done.failed_task_id and done.failed_task_id not in reason:
        reason += f" (task {done.failed_task_id})"
    print(f"execplan: execution {execution_id} ended {state}: {reason}", file=sys.stderr)
    return EXIT_FAILURE


# -- commands ----------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from execplan.cli.search import parse_attrs  # noqa: PLC0415

    source = read_text(args.file)
    inputs = parse_inputs(args.input, args.inputs_json)
    attributes = parse_attrs(args.attr)
    if args.stream and not args.wait:
        raise CliError("--stream goes with --wait", EXIT_USAGE)

    async def body(client: ExecutorClient) -> int:
        from execplan.v1 import events_pb2  # noqa: PLC0415

        started = await client.start(
            source=source,
            inputs=inputs,
            request_id=args.request_id,
            search_attributes=attributes,
        )
        execution_id = started.execution_id
        if not args.wait:
            print(execution_id)
            return 0
        print(f"execution {execution_id}", file=sys.stderr, flush=True)
        execution = await client.get(execution_id)
        view = render.LiveView(sys.stderr, [(t.task_id, t.type) for t in execution.tasks])
        chunks = render.ChunkPrinter(sys.stderr)
        async for event in client.watch(execution_id, stream=args.stream):
            if not isinstance(event, events_pb2.ExecutionEvent):
                chunks.write(event)
                continue
            chunks.end_line()
            view.apply(event)
            if event.HasField("execution_completed"):
                view.close()
                done = event.execution_completed
                if render.execution_state_name(done.state) == SUCCEEDED or done.outputs.fields:
                    from execplan.client import from_struct  # noqa: PLC0415

                    _print_json(from_struct(done.outputs))
                return _outcome(execution_id, done)
        raise CliError(f"the event stream of {execution_id} ended before the execution did")

    return run_with_client(args, body)


def cmd_watch(args: argparse.Namespace) -> int:
    async def body(client: ExecutorClient) -> int:
        from execplan.v1 import events_pb2  # noqa: PLC0415

        chunks = render.ChunkPrinter(sys.stdout)
        watched = client.watch(args.execution_id, after_sequence=args.after, stream=args.stream)
        async for event in watched:
            if args.format == "json":
                render.print_json_line(event)
            elif not isinstance(event, events_pb2.ExecutionEvent):
                chunks.write(event)
            else:
                chunks.end_line()
                print(render.event_line(event), flush=True)
            if isinstance(event, events_pb2.ExecutionEvent) and event.HasField(
                "execution_completed"
            ):
                return _outcome(args.execution_id, event.execution_completed)
        raise CliError(f"the event stream of {args.execution_id} ended before the execution did")

    return run_with_client(args, body)


def cmd_get(args: argparse.Namespace) -> int:
    async def body(client: ExecutorClient) -> int:
        execution = await client.get(args.execution_id, at_sequence=args.at)
        if args.format == "json":
            print(json.dumps(render.message_dict(execution), indent=2))
        elif args.format in ("dot", "mermaid"):
            from execplan.cli import pictures  # noqa: PLC0415

            plan = await client.get_plan(execution.plan_id)
            # Sub-plans written by dynamic tasks are drawn inside their task's group.
            sub_plans = {
                r.plan_id: await client.get_plan(r.plan_id) for r in execution.plan_revisions
            }
            draw = (
                pictures.render_execution_dot
                if args.format == "dot"
                else pictures.render_execution_mermaid
            )
            print(draw(plan, execution, sub_plans), end="")
        else:
            print("\n".join(_summary(execution)))
        return 0

    return run_with_client(args, body)


def _summary(execution: Any) -> list[str]:
    from execplan.client import from_struct  # noqa: PLC0415

    version = f" v{execution.workflow_version}" if execution.workflow_version else ""
    lines = [
        f"execution  {execution.execution_id}",
        f"workflow   {execution.workflow_name}{version}  (plan {execution.plan_id})",
        f"state      {render.execution_state_name(execution.state)}"
        f"  (as of event {execution.last_sequence})",
        f"created    {render.stamp(execution.created_at)}"
        f"   finished {render.stamp(execution.finished_at)}",
        f"inputs     {render.compact(from_struct(execution.inputs), 200)}",
    ]
    if execution.parent_execution_id:
        lines.append(
            f"parent     {execution.parent_execution_id}  (task {execution.parent_task_id})"
        )
    if execution.outputs.fields:
        lines.append(f"outputs    {render.compact(from_struct(execution.outputs), 200)}")
    if execution.error.type:
        lines.append(f"error      {execution.error.type}: {execution.error.message}")
    if execution.usage.counters or execution.HasField("budget"):
        from execplan.cli.usage import budget_lines  # noqa: PLC0415

        lines += ["", *budget_lines(execution)]
    if execution.tasks:
        tasks = [render.TaskSummary.of(t) for t in execution.tasks]
        shown = render.fold_instances(list(execution.tasks), tasks)
        lines += ["", render.progress_bar(tasks), *render.task_table(shown)]
    return lines


def cmd_history(args: argparse.Namespace) -> int:
    async def body(client: ExecutorClient) -> int:
        if args.format == "json":
            render.print_json_messages([e async for e in client.history(args.execution_id)])
            return 0
        async for event in client.history(args.execution_id):
            print(render.event_line(event))
        return 0

    return run_with_client(args, body)


def cmd_control(args: argparse.Namespace) -> int:
    async def body(client: ExecutorClient) -> int:
        method = getattr(client, args.action)
        state = await method(args.execution_id, reason=args.reason)
        print(f"{args.execution_id} {render.execution_state_name(state)}")
        return 0

    return run_with_client(args, body)


def cmd_send_event(args: argparse.Namespace) -> int:
    data = _json_arg(args.data, "--data") if args.data is not None else None

    async def body(client: ExecutorClient) -> int:
        response = await client.send_event(args.execution_id, args.name, data)
        where = f"consumed by task {response.task_id}" if response.task_id else "stored"
        print(f"event {args.name} sent to {args.execution_id}: {where}")
        return 0

    return run_with_client(args, body)
