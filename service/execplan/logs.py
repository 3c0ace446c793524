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

import asyncio
import json
import logging
import sys
import time
from typing import Any, TextIO

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


class _Seconds:
    """`time.strftime` of a whole second, remembered for the next record of the same
    second (most are: a busy server logs many lines a second)."""

    __slots__ = ("_convert", "_format", "_second", "_text")

    def __init__(self, fmt: str, convert: Any) -> None:
        self._format = fmt
        self._convert = convert
        self._second = -1
        self._text = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._text = time.strftime(self._format, self._convert(second))
            self._second = second
        return self._text


class TextFormatter(logging.Formatter):
    """`TEXT_FORMAT`, with `asctime` as logging.Formatter writes it (local time)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._seconds = _Seconds(self.default_time_format, time.localtime)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return f"{self._seconds(record.created)},{int(record.msecs):03d}"


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._seconds = _Seconds("%Y-%m-%dT%H:%M:%S", time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": f"{self._seconds(record.created)}.{int(record.msecs):03d}Z",
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


class LoopBatchedHandler(logging.StreamHandler[TextIO]):
    """A StreamHandler that writes the lines logged during one turn of the running
    event loop together, at the end of that turn (one write and flush instead of one
    per line: the event log's line per execution start was most of the cost of a
    log line). A WARNING or worse, a line logged outside a running loop (another
    thread, before or after `asyncio.run`) and `flush()` (logging.shutdown at exit)
    write what is held at once, in order. What a SIGKILL loses: the held lines of
    the turn it interrupts."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream if stream is not None else sys.stderr)
        self._held: list[str] = []
        self._last: logging.LogRecord | None = None  # for handleError of a held write
        self._release_on: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:  # runs under self.lock
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or record.levelno >= logging.WARNING:
            self._write_held()
            super().emit(record)
            return
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        if self._release_on is not loop:
            self._write_held()  # held for another loop (a closed one, another thread's)
            loop.call_soon(self._release)
            self._release_on = loop
        self._held.append(line)
        self._last = record

    def flush(self) -> None:
        self._release()
        super().flush()

    def _release(self) -> None:
        self.acquire()
        try:
            self._write_held()
        finally:
            self.release()

    def _write_held(self) -> None:
        self._release_on = None
        if not self._held:
            return
        text = "".join(self._held)
        self._held.clear()
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:
            if self._last is not None:
                self.handleError(self._last)


def record_only_printed_fields() -> None:
    """Log records stop collecting their thread, process and process name (logging's
    `logThreads`, `logProcesses`, `logMultiprocessing` switches, the logging HOWTO's
    "Optimization"): neither formatter here prints them, and `execplan serve` runs no
    user code that could install one that does. It saves a getpid() system call and
    two lookups per line, about a quarter of making a record (the event log writes a
    line per execution start and end)."""
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """Root logging for a command: `fmt` is `text` (human) or `json` (one object a line)."""
    handler = LoopBatchedHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
