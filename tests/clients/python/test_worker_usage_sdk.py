"""The Python SDK's side of usage (docs/usage.md), without a server: `ctx.usage`
checks and numbers reports, the outbox sends them before results and keeps them
until acknowledged (again after a reconnect, in order), `Output` puts usage beside
the output and a too-big output keeps its usage."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from execplan.v1 import events_pb2, execution_pb2, worker_service_pb2
from execplan.worker import Output, SubPlan, TaskContext
from execplan.worker._context import AttemptInfo, AttemptKey
from execplan.worker._outbox import Outbox
from execplan.worker._runner import encode_output
from google.protobuf import struct_pb2


def _ref(task: str = "a", attempt: int = 1, epoch: int = 1) -> worker_service_pb2.AttemptRef:
    return worker_service_pb2.AttemptRef(
        execution_id="e1",
        task_id=task,
        phase=execution_pb2.TASK_PHASE_MAIN,
        token=events_pb2.AttemptToken(attempt=attempt, lease_epoch=epoch),
    )


def _context(sent: list[tuple[int, dict[str, float]]]) -> TaskContext:
    info = AttemptInfo(
        execution_id="e1",
        task_id="a",
        attempt=1,
        lease_epoch=1,
        idempotency_key="e1/a/1/1",
        task_type="t",
        workflow_name="w",
        secrets={},
        trace_context={},
        deadline=datetime.now(UTC),
    )
    return TaskContext(
        info, lambda: None, lambda seq, usage: sent.append((seq, dict(usage.counters)))
    )


def test_ctx_usage_numbers_each_report_and_drops_unset_counters() -> None:
    sent: list[tuple[int, dict[str, float]]] = []
    ctx = _context(sent)
    ctx.usage(tokens_in=1200, tokens_out=300, cost=0.0042)
    ctx.usage(searches=2)
    ctx.usage()  # nothing to say: no report
    assert sent == [
        (1, {"tokens_in": 1200.0, "tokens_out": 300.0, "cost": 0.0042}),
        (2, {"searches": 2.0}),
    ]


@pytest.mark.parametrize(
    ("counters", "error"),
    [
        ({"cost": -0.1}, ValueError),
        ({"cost": math.inf}, ValueError),
        ({"cost": math.nan}, ValueError),
        ({"cost": 1e16}, ValueError),
        ({"Tokens": 1}, ValueError),
        ({"a" * 65: 1}, ValueError),
        ({"cost": True}, TypeError),
        ({"cost": "0.1"}, TypeError),
        ({f"c{i}": 1 for i in range(33)}, ValueError),
    ],
)
def test_ctx_usage_refuses_what_the_executor_would(
    counters: dict[str, object], error: type[Exception]
) -> None:
    sent: list[tuple[int, dict[str, float]]] = []
    with pytest.raises(error):
        _context(sent).usage(**counters)  # type: ignore[arg-type]
    assert sent == []


def _report(
    ref: worker_service_pb2.AttemptRef, seq: int, cost: float
) -> worker_service_pb2.UsageReport:
    return worker_service_pb2.UsageReport(
        attempt=ref, sequence=seq, usage=execution_pb2.Usage(counters={"cost": cost})
    )


def test_usage_leaves_before_results_and_stays_until_acknowledged() -> None:
    box = Outbox()
    ref = _ref()
    key = AttemptKey.of(ref)
    box.add_usage(_report(ref, 1, 0.5))
    box.results[key] = worker_service_pb2.TaskResult(
        attempt=ref, output=struct_pb2.Value(string_value="x")
    )
    request = box.take(now=0.0, keep_for=10.0)
    assert request is not None
    assert [r.sequence for r in request.usage] == [1]
    assert len(request.results) == 1
    assert list(box.usage_unacked) == [(key, 1)]
    box.usage_acked(key, 1)
    assert not box.usage_unacked and box.empty()


def test_unacknowledged_usage_is_sent_again_first_after_a_reconnect() -> None:
    box = Outbox()
    ref = _ref()
    key = AttemptKey.of(ref)
    box.add_usage(_report(ref, 1, 0.1))
    box.add_usage(_report(ref, 2, 0.2))
    box.take(now=0.0, keep_for=10.0)
    box.usage_acked(key, 1)
    box.add_usage(_report(ref, 3, 0.3))  # queued while the stream was down
    for lost in (False, True):  # even a clean close may leave reports unrecorded
        box.reset_connection(lost=lost)
        request = box.take(now=0.0, keep_for=10.0)
        assert request is not None
        assert [r.sequence for r in request.usage] == [2, 3]


def test_results_wait_while_usage_is_still_queued() -> None:
    box = Outbox()
    ref = _ref()
    for seq in range(1, 1502):
        box.add_usage(_report(ref, seq, 0.001))
    box.results[AttemptKey.of(ref)] = worker_service_pb2.TaskResult(
        attempt=ref, output=struct_pb2.Value()
    )
    first = box.take(now=0.0, keep_for=10.0)
    assert first is not None and len(first.usage) == 1000 and not first.results
    second = box.take(now=0.0, keep_for=10.0)
    assert second is not None and len(second.usage) == 501 and len(second.results) == 1


def test_output_carries_usage_beside_it() -> None:
    ref = _ref()
    result = encode_output(ref, Output({"answer": 42}, usage={"cost": 0.25, "tokens_out": 10}))
    assert result.WhichOneof("outcome") == "output"
    assert dict(result.usage.counters) == {"cost": 0.25, "tokens_out": 10.0}
    plain = encode_output(ref, {"answer": 42})
    assert not plain.HasField("usage")
    sub = encode_output(ref, Output(SubPlan({"name": "s", "tasks": [{"id": "x", "type": "t"}]})))
    assert sub.WhichOneof("outcome") == "sub_plan"


def test_a_bad_output_usage_fails_the_attempt_like_a_bad_output() -> None:
    result = encode_output(_ref(), Output("x", usage={"cost": -1}))
    assert result.WhichOneof("outcome") == "error"
    assert result.error.type == "OutputEncodingError"
    assert "Output.usage" in result.error.message


def test_a_too_big_output_is_replaced_but_its_usage_still_counts() -> None:
    box = Outbox()
    box.set_limits(max_output_bytes=128 * 1024, max_message_bytes=256 * 1024)
    result = encode_output(_ref(), Output("x" * 200_000, usage={"cost": 3.0}))
    fitted = box.fit(result)
    assert fitted.error.type == "PayloadTooLarge"
    assert dict(fitted.usage.counters) == {"cost": 3.0}
