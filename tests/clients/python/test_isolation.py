"""Isolated attempts in the Python SDK: real child processes with enforced memory and
CPU time (`execplan.worker._isolate`), and the wire form of a provider's 429."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from execplan.v1 import events_pb2, execution_pb2
from execplan.v1 import worker_service_pb2 as pb
from execplan.worker import RateLimited, ResourceExhausted, Worker
from execplan.worker._context import AttemptInfo, TaskContext
from execplan.worker._isolate import Outcome, run_isolated
from execplan.worker._runner import error_info

if TYPE_CHECKING:
    from tests.support import isolated
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support import isolated

MIB = 1 << 20


def dispatch(memory_mib: int = 0, cpu: str = "", seconds: float = 0) -> pb.Dispatch:
    d = pb.Dispatch(
        attempt=pb.AttemptRef(
            execution_id="e1", task_id="t", token=events_pb2.AttemptToken(attempt=2, lease_epoch=1)
        ),
        task_type="iso.t",
        resources=pb.ResourceRequest(memory_bytes=memory_mib * MIB, isolate=True),
    )
    if cpu:
        d.resources.cpu_millis = int(float(cpu) * 1000)
    if seconds:
        d.start_to_close_deadline.FromDatetime(datetime.now(UTC) + timedelta(seconds=seconds))
    return d


def context(beats: list[Any] | None = None) -> TaskContext:
    info = AttemptInfo("e1", "t", 2, 1, "e1/t/2", "iso.t", "w", {}, {}, None)
    ctx = TaskContext(info, lambda: None)
    if beats is not None:
        original = ctx.heartbeat

        def heartbeat(progress: Any = None) -> None:
            beats.append(progress)
            original(progress)

        ctx.heartbeat = heartbeat  # type: ignore[method-assign]
    return ctx


def run(fn: Callable[..., Any], inputs: Any, d: pb.Dispatch, ctx: TaskContext | None = None,
        takes_context: bool = False) -> Outcome:  # fmt: skip
    outcome = run_isolated(fn, takes_context, inputs, d, ctx or context())
    assert outcome is not None
    return outcome


def test_a_handler_within_its_memory_limit_returns_its_output() -> None:
    outcome = run(isolated.allocate, {"mib": 16}, dispatch(memory_mib=64))
    assert outcome.error is None and outcome.output == {"held_mib": 16}


def test_over_the_memory_limit_is_resource_exhausted() -> None:
    outcome = run(isolated.allocate, {"mib": 300}, dispatch(memory_mib=64))
    assert outcome.error is not None
    kind, message, retryable, _ = outcome.error
    assert kind == "ResourceExhausted"
    assert "memory limit of 64 MiB exceeded" in message
    assert retryable is False


def test_over_the_cpu_time_is_resource_exhausted() -> None:
    # half a core for 2 s of start_to_close: 1 CPU second
    started = time.monotonic()
    outcome = run(isolated.spin, {}, dispatch(cpu="0.5", seconds=2))
    assert outcome.error is not None
    kind, message, retryable, _ = outcome.error
    assert kind == "ResourceExhausted"
    assert "CPU time limit of 1 s exceeded" in message
    assert not retryable
    assert time.monotonic() - started < 20


def test_context_heartbeats_and_async_handlers_work_in_the_child() -> None:
    beats: list[Any] = []
    outcome = run(isolated.report, {"x": 1}, dispatch(), context(beats), takes_context=True)
    assert outcome.output == {"task": "t", "attempt": 2, "echo": {"x": 1}}
    assert beats == [{"step": 1}]
    assert run(isolated.async_report, {"x": 3}, dispatch()).output == "async 3"


def test_a_handler_error_comes_back_with_its_type() -> None:
    outcome = run(isolated.fail, {"x": 7}, dispatch(memory_mib=64))
    assert outcome.error == ("ValueError", "bad input 7", True, None)


def test_a_retry_after_that_is_not_a_number_is_ignored() -> None:
    """As in the worker's own process (error_info): the parent builds the ErrorInfo
    from it, and a str there raised, losing the attempt's result."""
    outcome = run(isolated.fail_oddly, {}, dispatch())
    assert outcome.error == ("Odd", "odd", True, None)


def test_a_cancelled_attempt_kills_the_child() -> None:
    ctx = context()
    threading.Timer(0.5, ctx.cancel).start()  # as the stream thread does
    started = time.monotonic()
    assert run_isolated(isolated.sleep, False, {"seconds": 30}, dispatch(), ctx) is None
    assert time.monotonic() - started < 10


def test_a_handler_that_is_not_importable_is_refused() -> None:
    def local(inputs: Any) -> None:
        return None

    outcome = run(local, {}, dispatch())
    assert outcome.error is not None and outcome.error[0] == "IsolationUnavailable"


def test_rate_limited_carries_retry_after_on_the_wire() -> None:
    info = error_info(RateLimited("openai: 429", retry_after=2.5))
    assert info.type == "RateLimited"
    assert info.retry_after.ToMilliseconds() == 2500
    assert info.retry == execution_pb2.ERROR_RETRY_RETRYABLE
    capped = error_info(RateLimited(retry_after=10**9))
    assert capped.retry_after.ToMilliseconds() == 3_600_000
    assert not error_info(ValueError("x")).HasField("retry_after")
    assert error_info(ResourceExhausted("x")).retry == execution_pb2.ERROR_RETRY_NON_RETRYABLE
    with pytest.raises(ValueError):
        RateLimited(retry_after=-1)


def test_worker_capacity_declarations() -> None:
    default = Worker().capacity
    assert default.cpu_millis >= 1000 and default.memory_bytes > 0 and default.gpu == 0
    declared = Worker(
        capacity={"cpu": "500m", "memory": "8Gi", "gpu": 1, "model-slots": 2}
    ).capacity
    assert (declared.cpu_millis, declared.memory_bytes, declared.gpu) == (500, 8 << 30, 1)
    assert dict(declared.custom) == {"model-slots": 2}
    assert Worker(capacity={"gpu": 2}).capacity.cpu_millis == 0  # not declared: unchecked
    for bad in ({"cpu": "lots"}, {"gpu": -1}, {"Bad Name": 1}, {"gpu": 1.5}):
        with pytest.raises(ValueError):
            Worker(capacity=bad)
