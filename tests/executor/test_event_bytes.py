"""The per-task event constructors produce the bytes the log has always stored.

Replay (decide/replay.py) compares recorded and re-decided events byte for byte, so
a constructor may be rewritten (they build their bodies in place, for speed) but its
output for the same arguments must not change: in particular `token` and `error`
stay present when all their fields are zero. The expected bytes below were produced
by the constructors before they were rewritten.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from execplan.executor.decide import events
from execplan.executor.task_errors import TaskError
from execplan.v1 import events_pb2 as ev

CASES: list[tuple[str, Callable[[], ev.ExecutionEvent], bytes]] = [
    ("queued", lambda: events.task_queued("a", 0, 0), b"Z\x03\n\x01a"),
    (
        "dispatched",
        lambda: events.task_dispatched(
            "a", 0, 0, 0, worker_id="", idempotency_key="", principal=""
        ),
        b"b\x05\n\x01a\x1a\x00",
    ),
    ("started", lambda: events.task_started("a", 0, 0, 0, ""), b"j\x05\n\x01a\x1a\x00"),
    ("requeued", lambda: events.task_requeued("a", 0, 0, 0, ""), b"\x92\x01\x05\n\x01a\x1a\x00"),
    (
        "succeeded",
        lambda: events.task_succeeded("a", 0, 0, 0, None),
        b'r\t\n\x01a\x1a\x00"\x02\x08\x00',
    ),
    (
        "failed",
        lambda: events.task_failed("a", 0, 0, 0, TaskError("", "", False), final=False),
        b'z\x07\n\x01a\x1a\x00"\x00',
    ),
    (
        "usage",
        lambda: events.task_usage("a", 0, 0, 0, {}, report=0, worker_id=""),
        b"\xb2\x04\x05\n\x01a\x1a\x00",
    ),
]


@pytest.mark.parametrize(("kind", "build", "expected"), CASES, ids=[c[0] for c in CASES])
def test_zero_valued_bodies_keep_their_bytes(
    kind: str, build: Callable[[], ev.ExecutionEvent], expected: bytes
) -> None:
    assert build().SerializeToString(deterministic=True) == expected


def test_a_full_dispatch_round_trips() -> None:
    event = events.task_dispatched(
        "t", 1, 2, 3, worker_id="w", idempotency_key="k", principal="p", estimate={"cost": 1.5}
    )
    body = ev.ExecutionEvent.FromString(event.SerializeToString()).task_dispatched
    assert (body.task_id, body.phase, body.token.attempt, body.token.lease_epoch) == ("t", 1, 2, 3)
    assert (body.worker_id, body.idempotency_key, body.principal) == ("w", "k", "p")
    assert body.HasField("estimate")
