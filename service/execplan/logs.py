"""Structured logs: one JSON object per line, with ids where known.

    execplan serve --log-format json      # also: execplan worker ... --log-format json
    {"ts": "2026-11-26T12:00:00.123Z", "level": "info", "logger": "execplan.events",
     "message": "task charge failed: CardDeclined: ...", "execution_id": "...",
     "task_id": "charge", "attempt": 1, "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}

Ids come from `extra=` on the log call (`execution_id`, `task_id`, `attempt`,
`worker_id`, `trace_id`); when a record has no `trace_id`, the current
OpenTelemetry span's trace id is used if there is one. `EventLogObserver` writes
one line per execution start/end and per failed, timed-out or retried attempt
(successes at DEBUG), carrying those ids.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

from execplan.executor.observer import EngineObserver
from execplan.executor.state import ExecutionState, execution_state_name
from execplan.v1 import events_pb2 as ev

FIELDS = ("execution_id", "task_id", "attempt", "worker_id", "trace_id")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _current_trace_id() -> str:
    try:
        from opentelemetry import trace  # noqa: PLC0415
    except ImportError:
        return ""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, Any] = {
            "ts": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value not in (None, ""):
                line[key] = value
        if "trace_id" not in line:
            trace_id = _current_trace_id()
            if trace_id:
                line["trace_id"] = trace_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Root logging for a command: `fmt` is `text` (human) or `json` (one object a line)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def trace_id_of(trace_context: dict[str, str]) -> str:
    """The trace id in a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`)."""
    parts = trace_context.get("traceparent", "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else ""


class EventLogObserver(EngineObserver):
    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger("execplan.events")

    def committed(self, state: ExecutionState, events: Sequence[ev.ExecutionEvent]) -> None:
        if not self.log.isEnabledFor(logging.INFO):
            return
        base = {"execution_id": state.execution_id}
        trace_id = trace_id_of(state.trace_context)
        if trace_id:
            base["trace_id"] = trace_id
        for event in events:
            kind = event.WhichOneof("kind")
            if kind == "execution_started":
                self.log.info("execution of %s started", state.plan.workflow_name, extra=base)
            elif kind == "execution_completed":
                done = event.execution_completed
                outcome = execution_state_name(done.state)
                detail = f": {done.error.type}: {done.error.message}" if done.error.type else ""
                level = logging.INFO if outcome == "SUCCEEDED" else logging.WARNING
                self.log.log(level, "execution ended %s%s", outcome, detail, extra=base)
            elif kind == "task_failed":
                f = event.task_failed
                self.log.warning(
                    "task %s %s: %s: %s",
                    f.task_id,
                    "failed" if f.final else "attempt failed",
                    f.error.type,
                    f.error.message,
                    extra={**base, "task_id": f.task_id, "attempt": f.token.attempt},
                )
            elif kind == "task_timed_out":
                t = event.task_timed_out
                name = ev.TimeoutKind.Name(t.timeout).removeprefix("TIMEOUT_KIND_").lower()
                self.log.warning(
                    "task %s timed out (%s)",
                    t.task_id,
                    name,
                    extra={**base, "task_id": t.task_id, "attempt": t.token.attempt},
                )
            elif kind == "task_retry_scheduled":
                r = event.task_retry_scheduled
                self.log.info(
                    "task %s will retry: %s",
                    r.task_id,
                    r.reason,
                    extra={**base, "task_id": r.task_id, "attempt": r.next_attempt},
                )
            elif kind == "task_succeeded" and self.log.isEnabledFor(logging.DEBUG):
                s = event.task_succeeded
                self.log.debug(
                    "task %s succeeded",
                    s.task_id,
                    extra={**base, "task_id": s.task_id, "attempt": s.token.attempt},
                )
