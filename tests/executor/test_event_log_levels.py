"""The event log at each level: warnings still come at --log-level warning."""

from __future__ import annotations

import logging

import pytest
from execplan.executor.observability.eventlog import EventLogObserver
from execplan.v1 import events_pb2 as ev

from .machinekit import Sim

FLOW = """
name: levels
version: "1"
tasks:
  - id: a
    type: t.a
    retry: {max_attempts: 1}
"""


def kinds(events: list[ev.ExecutionEvent]) -> list[str]:
    return [event.WhichOneof("kind") or "" for event in events]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        (
            logging.WARNING,
            ["task a failed: Boom: failed", "execution ended FAILED: Boom: task a: failed"],
        ),
        (
            logging.INFO,
            [
                "execution of levels started",
                "task a failed: Boom: failed",
                "execution ended FAILED: Boom: task a: failed",
            ],
        ),
        (logging.ERROR, []),
    ],
)
def test_lines_by_level(level: int, expected: list[str]) -> None:
    logger = logging.getLogger(f"execplan.test.eventlog.{level}")
    logger.propagate = False
    handler = Records()
    logger.addHandler(handler)
    logger.setLevel(level)
    observer = EventLogObserver(logger)
    sim = Sim(FLOW)
    observer.committed([(sim.state, sim.events, kinds(sim.events), sim.now)])
    mark = len(sim.events)
    sim.dispatch("a")
    sim.ack("a")
    sim.fail("a", retryable=False)
    observer.committed([(sim.state, sim.events[mark:], kinds(sim.events[mark:]), sim.now)])
    assert [message for _, message in handler.lines] == expected
