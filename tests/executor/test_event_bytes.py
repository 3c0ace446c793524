"""The per-task event constructors produce the bytes the log has always stored.

Replay (decide/replay.py) compares recorded and re-decided events byte for byte, so
a constructor may be rewritten (they build their bodies in place, for speed) but its
output for the same arguments must not change: in particular `token` and `error`
stay present when all their fields are zero. The expected bytes below were produced
by the constructors before they were rewritten.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from execplan.executor.decide import events
from execplan.executor.state import Allowance, Limits
from execplan.executor.task_errors import TaskError
from execplan.search import SearchValue
from execplan.usage import FAIL, Budget
from execplan.v1 import events_pb2 as ev

EVERYTHING = bytes.fromhex(
    "52bf010a01701201771a013122310a0e0a017812091100000000000008400a1f0a0179121a32180a"
    "0911000000000000f03f0a0b2a090a070a017a120208002a01723201663a100a0b74726163657061"
    "72656e741201743a0f0a0a74726163657374617465120173a206027065aa060570745b335db00602"
    "ba060e08e807100518a08d062080808004e2080b0a016112060a0461636d65e208070a0162120210"
    "03820a190900000000000010401a0c0a016e11000000000000004020028a0a020805"
)
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


def _started(**given: Any) -> ev.ExecutionEvent:
    names = ("plan_id", "workflow_name", "workflow_version", "request_id", "fairness_key")
    base: dict[str, Any] = {name: "" for name in names}
    return events.execution_started(**{**base, "inputs": {}, "trace_context": {}, **given})


# execution_started is built in place now; its bytes are those of the constructor
# that built the body alone and copied it into the event. Deterministic bytes: the
# order a map's entries are serialized in is not (protobuf's own hashing), and
# replay compares deterministic bytes.
STARTED: list[tuple[str, Callable[[], ev.ExecutionEvent], bytes]] = [
    ("bare", _started, b'R\x02"\x00'),
    (
        "zero limits",
        lambda: _started(
            plan_id="p",
            workflow_name="w",
            workflow_version="1",
            request_id="r",
            fairness_key="f",
            allowance=Allowance(max_attempts=3, limits=Limits(0, 0, 0, 0)),
            limits=Limits(0, 0, 0, 0),
        ),
        b'R\x19\n\x01p\x12\x01w\x1a\x011"\x00*\x01r2\x01f\xba\x06\x00\x8a\n\x02\x10\x03',
    ),
    (
        "everything",
        lambda: _started(
            plan_id="p",
            workflow_name="w",
            workflow_version="1",
            inputs={"x": 3.0, "y": [1, {"z": None}]},
            request_id="r",
            fairness_key="f",
            trace_context={"traceparent": "t", "tracestate": "s"},
            allowance=Allowance(
                budget=Budget((("cost", 4.0), ("n", 2.0)), FAIL),
                max_for_each_items=5,
                limits=Limits(),
            ),
            parent_execution_id="pe",
            parent_task_id="pt[3]",
            depth=2,
            limits=Limits(),
            search_attributes={"a": SearchValue.of("acme"), "b": SearchValue.of(3)},
        ),
        EVERYTHING,
    ),
]


@pytest.mark.parametrize(("case", "build", "expected"), STARTED, ids=[c[0] for c in STARTED])
def test_execution_started_keeps_its_bytes(
    case: str, build: Callable[[], ev.ExecutionEvent], expected: bytes
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


# execution_completed is built in place too; these are the bytes of the constructor
# that built the body alone (an empty outputs Struct and an all-zero error present).
COMPLETED: list[tuple[str, Callable[[], ev.ExecutionEvent], bytes]] = [
    ("bare", lambda: events.execution_completed(1), b"\xea\x01\x02\x08\x01"),
    (
        "outputs and usage",
        lambda: events.execution_completed(
            2, outputs={"total": 3.0, "x": [1, {"z": None}], "s": "v"}, used={"cost": 1.5, "n": 2.0}
        ),
        b"\xea\x01e\x08\x02\x12?\n\x08\n\x01s\x12\x03\x1a\x01v\n\x12\n\x05total\x12\t\x11\x00"
        b"\x00\x00\x00\x00\x00\x08@\n\x1f\n\x01x\x12\x1a2\x18\n\t\x11\x00\x00\x00\x00\x00\x00"
        b"\xf0?\n\x0b*\t\n\x07\n\x01z\x12\x02\x08\x00\x82\n\x1f\n\x0f\n\x04cost\x11\x00\x00\x00"
        b"\x00\x00\x00\xf8?\n\x0c\n\x01n\x11\x00\x00\x00\x00\x00\x00\x00@",
    ),
    (
        "empty outputs",
        lambda: events.execution_completed(2, outputs={}),
        b"\xea\x01\x04\x08\x02\x12\x00",
    ),
    (
        "failed",
        lambda: events.execution_completed(
            3,
            failed_task_id="a",
            error=TaskError("Boom", "task a: failed", True, {"k": 1}, retry_after_ms=1500),
        ),
        b'\xea\x01<\x08\x03\x1a5\n\x04Boom\x12\x0etask a: failed\x18\x01"\x10\n\x0e\n\x01k\x12\t'
        b'\x11\x00\x00\x00\x00\x00\x00\xf0?\xc2\x07\x08\x08\x01\x10\x80\xca\xb5\xee\x01"\x01a',
    ),
    (
        "zero error",
        lambda: events.execution_completed(3, error=TaskError("", "", False)),
        b"\xea\x01\x04\x08\x03\x1a\x00",
    ),
]


@pytest.mark.parametrize(("case", "build", "expected"), COMPLETED, ids=[c[0] for c in COMPLETED])
def test_execution_completed_keeps_its_bytes(
    case: str, build: Callable[[], ev.ExecutionEvent], expected: bytes
) -> None:
    assert build().SerializeToString(deterministic=True) == expected
