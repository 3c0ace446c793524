"""JSON log lines parse and carry execution id, task id, attempt and trace id."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from execplan.cli.common import Parser
from execplan.cli.serve import register as register_serve
from execplan.executor.observability import eventlog
from execplan.executor.observability.eventlog import Records
from execplan.logs import JsonFormatter, configure_logging
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


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO, logging.WARNING])
def test_event_log_records_are_the_ones_logging_makes(
    level: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = logging.getLogger("execplan.events")
    records = Records()
    ids = {"execution_id": "e1", "task_id": "t", "attempt": 2, "trace_id": "ab" * 16}
    for now in (1_764_000_000.123456, 1_764_000_000.999999, 1_764_000_001.0):
        monkeypatch.setattr(time, "time", lambda now=now: now)
        made = records.make(log, level, "task %s failed: %s", ("t", "Boom"), dict(ids))
        real = log.makeRecord(
            log.name, level, eventlog.__file__, 0, "task %s failed: %s", ("t", "Boom"),
            None, "committed", dict(ids),
        )  # fmt: skip
        assert list(vars(made).items()) == list(vars(real).items())  # values and order
        assert made.getMessage() == "task t failed: Boom"


def test_event_log_records_follow_the_thread_and_the_switches() -> None:
    log = logging.getLogger("execplan.events")
    records = Records()
    here = records.make(log, logging.INFO, "m", (), {})
    elsewhere: list[logging.LogRecord] = []
    thread = threading.Thread(
        target=lambda: elsewhere.append(records.make(log, logging.INFO, "m", (), {})),
        name="other-thread",
    )
    thread.start()
    thread.join()
    assert (here.thread, here.threadName) == (
        threading.get_ident(),
        threading.current_thread().name,
    )
    assert (elsewhere[0].thread, elsewhere[0].threadName) == (thread.ident, "other-thread")
    logging.logProcesses = False
    try:
        assert records.make(log, logging.INFO, "m", (), {}).process is None
    finally:
        logging.logProcesses = True
    assert records.make(log, logging.INFO, "m", (), {}).process == os.getpid()
    with pytest.raises(KeyError, match="overwrite"):
        records.make(log, logging.INFO, "m", (), {"message": "x"})


def test_event_log_records_from_an_installed_factory() -> None:
    log = logging.getLogger("execplan.events")
    old = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = old(*args, **kwargs)
        record.custom = "yes"
        return record

    logging.setLogRecordFactory(factory)
    try:
        record = Records().make(log, logging.INFO, "m", (), {"execution_id": "e"})
    finally:
        logging.setLogRecordFactory(old)
    assert getattr(record, "custom", None) == "yes"
    assert getattr(record, "execution_id", None) == "e"


def test_event_log_records_from_a_logger_class_of_its_own() -> None:
    class Stamping(logging.Logger):
        def makeRecord(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
            record = super().makeRecord(*args, **kwargs)
            record.stamped = True
            return record

    record = Records().make(Stamping("execplan.events"), logging.INFO, "m", (), {})
    assert getattr(record, "stamped", False) is True
