"""Structured logs: one JSON object per line, with ids where known.

    execplan serve --log-format json      # also: execplan worker ... --log-format json
    {"ts": "2026-11-26T12:00:00.123Z", "level": "info", "logger": "execplan.events",
     "message": "task charge failed: CardDeclined: ...", "execution_id": "...",
     "task_id": "charge", "attempt": 1, "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}

Ids come from `extra=` on the log call (`execution_id`, `task_id`, `attempt`,
`worker_id`, `trace_id`); when a record has no `trace_id`, the current
OpenTelemetry span's trace id is used if there is one. The executor's event log
(`executor/observability/eventlog.py`) writes such lines for every execution.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

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
