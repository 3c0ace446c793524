"""Text for people: event lines, task tables and the live progress of `run --wait`.

    line = event_line(event)                 # "   7  12:00:01.250  task_succeeded  task=charge ..."
    view = LiveView(sys.stderr, tasks)       # tasks: (task_id, type) in plan order
    view.apply(event)                        # per WatchExecution event; redraws or logs
    view.close()

On a terminal, `LiveView` redraws a compact table of task states under a progress
bar (`[#####.....] 12/20 tasks`); elsewhere (CI logs, pipes) it writes one line per
task state change, e.g. `12:00:01 charge SUCCEEDED (attempt 1)`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any, TextIO

from execplan.executor.task_errors import timeout_name
from execplan.v1 import events_pb2, execution_pb2
from execplan.wire import json_order
from google.protobuf import json_format, timestamp_pb2

TERMINAL_TASK_STATES = frozenset(
    {"SUCCEEDED", "FAILED", "SKIPPED", "CANCELLED", "COMPENSATED", "COMPENSATION_FAILED"}
)
_MAX_ROWS = 16  # a live table taller than this scrolls; show the active rows first
_REDRAW_EVERY = 0.05  # seconds; a burst of events redraws once
_VALUE_WIDTH = 60


def execution_state_name(state: int) -> str:
    return execution_pb2.ExecutionState.Name(state).removeprefix("EXECUTION_STATE_")  # type: ignore[arg-type]


def task_state_name(state: int) -> str:
    return execution_pb2.TaskState.Name(state).removeprefix("TASK_STATE_")  # type: ignore[arg-type]


def clock(ts: timestamp_pb2.Timestamp, *, millis: bool = False) -> str:
    """HH:MM:SS (local time) of a timestamp; "-" when unset."""
    if not ts.seconds and not ts.nanos:
        return "-"
    when = ts.ToDatetime(tzinfo=UTC).astimezone()
    return when.strftime("%H:%M:%S.%f")[:-3] if millis else when.strftime("%H:%M:%S")


def stamp(ts: timestamp_pb2.Timestamp) -> str:
    """Local date and time of a timestamp, to the second; "-" when unset."""
    if not ts.seconds and not ts.nanos:
        return "-"
    return ts.ToDatetime(tzinfo=UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def json_plain(value: Any) -> Any:
    """`value` with integral floats written as ints, for display.

    Protobuf numbers are doubles, so an input typed as `2` comes back as `2.0`;
    JSON itself has one number type, and people expect to see what they typed.
    """
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: json_plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_plain(item) for item in value]
    return value


def compact(value: Any, width: int = _VALUE_WIDTH) -> str:
    text = json.dumps(json_plain(value), sort_keys=True, separators=(",", ":"), default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def event_fields(event: events_pb2.ExecutionEvent) -> list[str]:
    """The key fields of an event's kind as `name=value` words."""
    kind = event.WhichOneof("kind")
    if kind is None:
        return []
    body = json_order.message_dict(getattr(event, kind))  # inputs etc. in key order
    words: list[str] = []
    for key, value in body.items():
        if key == "token" and isinstance(value, dict):
            words.append(f"attempt={value.get('attempt', 0)}")
            if value.get("lease_epoch"):
                words.append(f"epoch={value['lease_epoch']}")
        elif key in ("usage", "estimate") and isinstance(value, dict):
            counters = value.get("counters") or {}
            words.append(f"{key}=" + ",".join(f"{n}:{counters[n]:g}" for n in sorted(counters)))
        elif key == "error" and isinstance(value, dict):
            words.append(f"error={value.get('type', '')}: {value.get('message', '')}")
        elif key in ("phase", "state", "purpose", "timeout") and isinstance(value, str):
            words.append(f"{key}={value.split('_', 2)[-1]}")
        elif isinstance(value, str):
            words.append(f"{key}={value}")
        else:
            words.append(f"{key}={compact(value)}")
    return words


def event_line(event: events_pb2.ExecutionEvent) -> str:
    kind = event.WhichOneof("kind") or "unknown"
    fields = " ".join(event_fields(event))
    return f"{event.sequence:>5}  {clock(event.recorded_at, millis=True)}  {kind:<26} {fields}"


@dataclass
class _Row:
    task_id: str
    type: str
    state: str = "PENDING"
    attempt: int = 0
    note: str = ""


_PHASE_FALLBACK = execution_pb2.TASK_PHASE_FALLBACK
_PHASE_COMPENSATION = execution_pb2.TASK_PHASE_COMPENSATION


def _transition(event: events_pb2.ExecutionEvent) -> tuple[str, str, int, str] | None:
    """(task_id, new state, attempt, note) for events that move a task; else None."""
    kind = event.WhichOneof("kind")
    if kind is None:
        return None
    body: Any = getattr(event, kind)
    task_id = getattr(body, "task_id", "")
    if not task_id:
        return None
    phase = getattr(body, "phase", 0)
    attempt = body.token.attempt if hasattr(body, "token") else getattr(body, "attempt", 0)
    compensating = phase == _PHASE_COMPENSATION
    note = "fallback" if phase == _PHASE_FALLBACK else "compensation" if compensating else ""
    match kind:
        case "task_queued" | "task_requeued":
            state = "QUEUED"
        case "task_dispatched":
            state = "DISPATCHED"
        case "task_started":
            state = "COMPENSATING" if compensating else "RUNNING"
        case "task_succeeded":
            state = "COMPENSATED" if compensating else "SUCCEEDED"
        case "task_failed" | "task_timed_out":
            if not body.final:
                state = "RETRYING"
            else:
                state = "COMPENSATION_FAILED" if compensating else "FAILED"
            error = body.error if kind == "task_failed" else None
            if error is not None and error.type:
                note = f"{error.type}: {error.message}"
            elif kind == "task_timed_out":
                note = timeout_name(body.timeout).upper()
        case "task_retry_scheduled":
            state, attempt = "BACKING_OFF", body.next_attempt
        case "task_skipped":
            state, note = "SKIPPED", body.reason
        case "task_parked":
            state = "PARKED" if body.parked else "QUEUED"
        case "task_cancelled":
            state, note = "CANCELLED", body.reason
        case "timer_scheduled" if body.purpose in (
            events_pb2.TIMER_PURPOSE_SLEEP,
            events_pb2.TIMER_PURPOSE_EVENT_TIMEOUT,
        ):
            state = "WAITING"
        case _:
            return None
    return task_id, state, attempt, note


class LiveView:
    """Task states of one execution, kept current from its events and shown on `out`."""

    def __init__(
        self, out: TextIO, tasks: Iterable[tuple[str, str]], *, tty: bool | None = None
    ) -> None:
        self._out = out
        self._tty = out.isatty() if tty is None else tty
        self._rows = {task_id: _Row(task_id, task_type) for task_id, task_type in tasks}
        self._drawn = 0  # lines of the last frame, to move back over
        self._last_draw = 0.0
        self._status = ""
        self._dirty = False

    def apply(self, event: events_pb2.ExecutionEvent) -> None:
        change = _transition(event)
        kind = event.WhichOneof("kind")
        if change is not None:
            task_id, state, attempt, note = change
            row = self._rows.setdefault(task_id, _Row(task_id, ""))
            moved = row.state != state
            row.state, row.note = state, note or row.note
            row.attempt = attempt or row.attempt
            # DISPATCHED is a blink before RUNNING: noise in a log.
            if moved and not self._tty and state != "DISPATCHED":
                self._log(event, f"{task_id} {state}{self._detail(row)}")
        elif kind in ("execution_paused", "execution_resumed", "execution_cancel_requested"):
            self._status = kind.removeprefix("execution_").upper()
            if not self._tty:
                self._log(event, f"execution {self._status} {' '.join(event_fields(event))}")
        elif kind == "execution_completed":
            self._status = execution_state_name(event.execution_completed.state)
        elif kind == "task_progress":
            body = event.task_progress
            row = self._rows.setdefault(body.task_id, _Row(body.task_id, ""))
            row.note = "progress " + compact(json_order.json_dict(body.progress), 40)
            if not self._tty:
                self._log(event, f"{body.task_id} {row.note}")
        elif kind == "compensation_started":
            self._status = "COMPENSATING"
            if not self._tty:
                self._log(event, "execution COMPENSATING " + " ".join(event_fields(event)))
        self._dirty = True
        if self._tty:
            final = kind == "execution_completed"
            if final or time.monotonic() - self._last_draw >= _REDRAW_EVERY:
                self._draw()

    def close(self) -> None:
        if self._tty and self._dirty:
            self._draw()

    @staticmethod
    def _detail(row: _Row) -> str:
        parts = [f"attempt {row.attempt}"] if row.attempt else []
        if row.note and row.state not in ("SUCCEEDED", "RUNNING", "QUEUED", "DISPATCHED"):
            parts.append(row.note)
        return f" ({', '.join(parts)})" if parts else ""

    def _log(self, event: events_pb2.ExecutionEvent, text: str) -> None:
        print(f"{clock(event.recorded_at)} {text}", file=self._out, flush=True)

    def _draw(self) -> None:
        self._last_draw = time.monotonic()
        self._dirty = False
        lines = [progress_bar(self._rows.values())]
        if self._status:
            lines[0] += f"  ({self._status.lower()})"
        lines += task_table(_visible(list(self._rows.values())))
        hidden = len(self._rows) - (len(lines) - 2)
        if hidden > 0:
            lines.append(f"  ... {hidden} more")
        erase = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
        self._out.write(erase + "\n".join(lines) + "\n")
        self._out.flush()
        self._drawn = len(lines)


def _visible(rows: list[_Row]) -> list[_Row]:
    if len(rows) <= _MAX_ROWS:
        return rows
    active = [r for r in rows if r.state not in TERMINAL_TASK_STATES and r.state != "PENDING"]
    failed = [r for r in rows if r.state in ("FAILED", "COMPENSATION_FAILED")]
    chosen = {id(r) for r in (failed + active)[:_MAX_ROWS]}
    return [r for r in rows if id(r) in chosen]


def progress_bar(rows: Iterable[Any], width: int = 20) -> str:
    """`[#####...............] 5/20 tasks` over objects with a `state` name."""
    states = [r.state for r in rows]
    done = sum(1 for s in states if s in TERMINAL_TASK_STATES)
    total = len(states)
    filled = width * done // total if total else width
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} tasks"


def task_table(rows: Sequence[Any]) -> list[str]:
    """Aligned `TASK TYPE STATE ATTEMPT NOTE` lines (header included)."""
    header = ("TASK", "TYPE", "STATE", "ATTEMPT", "NOTE")
    cells = [header] + [
        (r.task_id, r.type, r.state, str(r.attempt or "-"), clip(r.note, 48)) for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    return [
        "  ".join(c[i].ljust(widths[i]) for i in range(4)).rstrip() + ("  " + c[4] if c[4] else "")
        for c in cells
    ]


def clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


# A for_each task with more instances than this shows one row counting them by state.
MAX_INSTANCE_ROWS = 20


def fold_instances(
    runs: Sequence[execution_pb2.TaskRun], rows: Sequence[TaskSummary]
) -> list[TaskSummary]:
    """`rows` (one per run), with the instances of a for_each task that has more than
    MAX_INSTANCE_ROWS of them folded into one row after their task."""
    counts: dict[str, int] = {}
    for run in runs:
        if run.HasField("item_index"):
            counts[run.parent_task_id] = counts.get(run.parent_task_id, 0) + 1
    many = {parent for parent, n in counts.items() if n > MAX_INSTANCE_ROWS}
    if not many:
        return list(rows)
    states: dict[str, dict[str, int]] = {parent: {} for parent in many}
    kept: list[TaskSummary] = []
    for run, row in zip(runs, rows, strict=True):
        if run.HasField("item_index") and run.parent_task_id in many:
            found = states[run.parent_task_id]
            found[row.state] = found.get(row.state, 0) + 1
            continue
        kept.append(row)
    out: list[TaskSummary] = []
    for row in kept:
        out.append(row)
        if row.task_id in many:
            found = states[row.task_id]
            note = ", ".join(f"{n} {state}" for state, n in sorted(found.items()))
            span = f"{row.task_id}[0..{counts[row.task_id] - 1}]"
            out.append(TaskSummary(span, row.type, "instances", 0, note))
    return out


@dataclass
class TaskSummary:
    """A `TaskRun` as `task_table` rows want it."""

    task_id: str
    type: str
    state: str
    attempt: int
    note: str

    @classmethod
    def of(cls, run: execution_pb2.TaskRun) -> TaskSummary:
        note = f"{run.error.type}: {run.error.message}" if run.error.type else run.status_message
        state = task_state_name(run.state)
        if run.HasField("progress") and state not in TERMINAL_TASK_STATES:
            progress = compact(json_order.json_dict(run.progress), 40)
            note = f"progress {progress} at {clock(run.progress_at)}" + (
                f"; {note}" if note else ""
            )
        return cls(run.task_id, run.type, state, run.attempt, note)


def message_dict(message: Any) -> Any:
    """A protobuf message as JSON-ready data, with the proto's snake_case names and
    its maps in key order (the same message prints the same text every run)."""
    return json_order.message_dict(message)


def print_json_messages(messages: Sequence[Any]) -> None:
    """A JSON array of messages (snake_case field names), for `--format json`."""
    print(json.dumps([message_dict(m) for m in messages], indent=2))


def print_json_message(message: Any) -> None:
    """One message as a JSON object (snake_case field names)."""
    print(json.dumps(message_dict(message), indent=2))


def print_json_line(item: Any) -> None:
    """One JSON object on one line: an event, or {"chunk": ...} for a stream chunk."""
    if isinstance(item, events_pb2.ExecutionEvent):
        data = message_dict(item)
    else:
        data = {"chunk": message_dict(item)}
    print(json.dumps(data, separators=(",", ":")), flush=True)


class ChunkPrinter:
    """Partial output (`StreamChunk`s) as it comes: text and bytes raw, JSON one value a
    line; a `[task]` marker whenever another task (or attempt) takes over the output."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._owner: tuple[str, int] | None = None
        self._open_line = False

    def write(self, chunk: Any) -> None:
        owner = (chunk.task_id, chunk.attempt)
        if owner != self._owner:
            self.end_line()
            suffix = f" attempt {chunk.attempt}" if chunk.attempt > 1 else ""
            self._out.write(f"[{chunk.task_id}{suffix}] ")
            self._owner = owner
            self._open_line = True
        kind = chunk.WhichOneof("content")
        if kind == "text":
            text = chunk.text
        elif kind == "data":
            text = bytes(chunk.data).decode("utf-8", errors="replace")
        elif kind == "json":
            text = json.dumps(json_format.MessageToDict(chunk.json), sort_keys=True) + "\n"
        else:
            text = ""
        if text:
            self._out.write(text)
            self._open_line = not text.endswith("\n")
        self._out.flush()

    def end_line(self) -> None:
        """Before an event line: finish a line of output left open, and forget the owner."""
        if self._open_line:
            self._out.write("\n")
            self._out.flush()
        self._open_line = False
        self._owner = None
