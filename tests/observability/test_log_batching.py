"""The server's log handler: within a turn of the event loop, lines below WARNING are
written together at the end of the turn; everything else at once, in order."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time

from execplan.logs import JsonFormatter, LoopBatchedHandler, TextFormatter


class Writes(io.StringIO):
    """Counts the writes that reach the stream."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _logger(stream: Writes) -> logging.Logger:
    handler = LoopBatchedHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"test.batched.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger


async def test_one_turn_is_one_write_at_its_end() -> None:
    stream = Writes()
    log = _logger(stream)
    for n in range(200):
        log.info("started %d", n)
    assert stream.getvalue() == ""  # held until the turn ends
    await asyncio.sleep(0)
    lines = stream.getvalue().splitlines()
    assert lines == [f"INFO started {n}" for n in range(200)]
    assert stream.writes == 1
    log.info("next turn")
    await asyncio.sleep(0)
    assert stream.getvalue().splitlines()[-1] == "INFO next turn"


async def test_a_warning_is_written_at_once_after_what_was_held() -> None:
    stream = Writes()
    log = _logger(stream)
    log.info("first")
    log.warning("second")
    assert stream.getvalue().splitlines() == ["INFO first", "WARNING second"]
    log.debug("third")
    await asyncio.sleep(0)
    assert stream.getvalue().splitlines() == ["INFO first", "WARNING second", "DEBUG third"]


def test_outside_a_loop_lines_are_written_at_once() -> None:
    stream = Writes()
    log = _logger(stream)
    log.info("now")
    assert stream.getvalue() == "INFO now\n"


def test_lines_held_by_a_loop_that_ended_are_written_by_flush_or_the_next_line() -> None:
    stream = Writes()
    log = _logger(stream)

    async def held() -> None:
        log.info("in the loop")

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(held())  # the turn that releases it may never run
    finally:
        loop.close()
    log.info("after")
    assert stream.getvalue().splitlines() == ["INFO in the loop", "INFO after"]

    async def again() -> None:
        log.info("held again")

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(again())
    finally:
        loop.close()
    log.handlers[0].flush()
    assert stream.getvalue().splitlines()[-1] == "INFO held again"


def test_the_formatters_write_the_time_as_before() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    record.created, record.msecs = 1_764_907_200.25, 250.0
    plain = logging.Formatter("%(asctime)s %(message)s").format(record)
    assert TextFormatter().format(record).startswith(plain.split(" m")[0] + " INFO x: m")
    formatter = JsonFormatter()
    assert '"ts": "2025-12-05T04:00:00.250Z"' in formatter.format(record)
    # A later second is not the remembered one.
    later = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    later.created, later.msecs = record.created + 61, 250.0
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(later.created))
    assert re.search(rf'"ts": "{stamp}\.250Z"', formatter.format(later))
