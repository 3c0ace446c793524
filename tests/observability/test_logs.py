"""JSON log lines parse and carry execution id, task id, attempt and trace id."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from execplan.cli.common import Parser
from execplan.cli.serve import register as register_serve
from execplan.logs import (
    JsonFormatter,
    TextFormatter,
    configure_logging,
    record_only_printed_fields,
)
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from .conftest import Env


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("execplan.events")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


async def test_event_log_lines_carry_ids(env: Env, captured: io.StringIO) -> None:
    execution_id = await env.start("order_saga.yaml", {"order_id": "l-1", "card": "declined"})
    await env.finish(execution_id)
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    mine = [line for line in lines if line.get("execution_id") == execution_id]
    assert {"ts", "level", "logger", "message"} <= mine[0].keys()
    assert mine[0]["message"] == "execution of order-saga started"
    assert mine[-1]["message"] == "execution ended SUCCEEDED"
    failed = next(line for line in mine if line["level"] == "warning")
    assert failed["task_id"] == "charge" and failed["attempt"] == 1
    assert "CardDeclined" in failed["message"]
    succeeded = [line for line in mine if line["message"].endswith("succeeded")]
    assert succeeded and all(isinstance(line["attempt"], int) for line in succeeded)


def test_trace_id_from_the_current_span_or_extra() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hi %s", ("there",), None)
    record.execution_id = "e1"
    record.trace_id = "ab" * 16
    line = json.loads(formatter.format(record))
    assert line["message"] == "hi there"
    assert line["execution_id"] == "e1" and line["trace_id"] == "ab" * 16
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("s") as span:
        plain = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", (), None)
        line = json.loads(formatter.format(plain))
    assert line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert line["level"] == "error"
    assert trace.get_current_span().get_span_context().is_valid is False


def test_serve_accepts_log_format_json() -> None:
    parser = Parser(prog="execplan")
    register_serve(parser.add_subparsers())
    args = parser.parse_args(["serve", "--log-format", "json"])
    assert args.log_format == "json"
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("info", "json")
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


def test_serve_records_leave_out_only_what_no_formatter_prints() -> None:
    """`execplan serve` stops records collecting thread and process fields: every line
    both formatters write is the same as with them."""
    logger = logging.getLogger("execplan.test.lean")
    ids = {"execution_id": "e1", "task_id": "a", "attempt": 2, "trace_id": "ab" * 16}

    def make() -> logging.LogRecord:
        return logger.makeRecord(
            logger.name, logging.INFO, __file__, 0, "task %s will retry", ("a",), None, "f", ids
        )

    full = make()
    saved = logging.logThreads, logging.logProcesses, logging.logMultiprocessing
    try:
        record_only_printed_fields()
        lean = make()
    finally:
        logging.logThreads, logging.logProcesses, logging.logMultiprocessing = saved
    assert (lean.thread, lean.threadName, lean.process, lean.processName) == (None,) * 4
    assert full.process is not None and full.threadName
    lean.created, lean.msecs = full.created, full.msecs  # the same moment
    for formatter in (TextFormatter(), JsonFormatter()):
        assert formatter.format(lean) == formatter.format(full)
