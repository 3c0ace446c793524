"""Task outputs and the message limit, Python SDK against a real server.

A server with a 1 MiB message limit advertises an output limit of 1 MiB - 64 KiB.
An output over it must fail its attempt with PayloadTooLarge (before: the worker
re-sent it after every reconnect, 49 reconnects in 40 s, and the task stayed
RUNNING); results that fit one by one but not together go in separate messages.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from execplan.client import ExecutorClient
from execplan.config import MIB, ServerConfig
from execplan.server import RESULT_ENVELOPE_BYTES, ExecplanServer
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import worker_service_pb2 as ws
from execplan.worker import Worker
from execplan.worker._outbox import ENVELOPE_BYTES, Outbox

LIMIT = MIB - RESULT_ENVELOPE_BYTES

BIG = """
name: big-output
inputs: {size: {type: integer, required: true}}
tasks:
  - {id: a, type: p.big, inputs: {size: "${{ workflow.inputs.size }}"}, retry: {max_attempts: 3}}
"""

FOUR = """
name: four-outputs
tasks:
""" + "".join(f"  - {{id: t{i}, type: p.together}}\n" for i in range(4))


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ExecplanServer]:
    config = ServerConfig(
        listen="127.0.0.1:0",
        db_path=str(tmp_path / "execplan.db"),
        grace_seconds=1,
        max_message_bytes=MIB,
    )
    async with ExecplanServer(config) as started:
        yield started


async def _run(
    server: ExecplanServer, worker: Worker, source: str, **inputs: Any
) -> ev.ExecutionCompleted:
    """The execution's terminal event (GetExecution would carry every output at once)."""
    serving = asyncio.create_task(worker.serve())
    try:
        async with ExecutorClient(server.address) as client:
            started = await client.start(source=source, inputs=inputs)
            async with asyncio.timeout(30):
                async for event in client.watch(started.execution_id):
                    if event.HasField("execution_completed"):
                        return event.execution_completed
            raise AssertionError("the watch ended without execution_completed")
    finally:
        await worker.stop()
        serving.cancel()


async def test_an_output_over_the_servers_limit_fails_with_payload_too_large(
    server: ExecplanServer, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []
    worker = Worker(server.address)

    @worker.task("p.big")
    def big(inputs: dict[str, Any]) -> str:
        calls.append(1)
        return "x" * int(inputs["size"])

    with caplog.at_level(logging.WARNING, logger="execplan.worker"):
        execution = await _run(server, worker, BIG, size=3 * MIB)  # 3x the message limit
    assert execution.state == ex.EXECUTION_STATE_FAILED
    assert execution.error.type == "PayloadTooLarge"
    assert f"exceeds the server's limit of {LIMIT} bytes" in execution.error.message
    assert calls == [1]  # not retryable: one attempt
    assert not [r for r in caplog.records if "stream lost" in r.getMessage()]


async def test_outputs_that_fit_alone_but_not_together_all_arrive(
    server: ExecplanServer, caplog: pytest.LogCaptureFixture
) -> None:
    worker = Worker(server.address, slots=4)
    barrier = threading.Barrier(4)

    @worker.task("p.together")
    def together(inputs: dict[str, Any]) -> str:
        barrier.wait(timeout=10)  # all four results are ready at the same moment
        return "y" * (LIMIT - 100)

    with caplog.at_level(logging.WARNING, logger="execplan.worker"):
        execution = await _run(server, worker, FOUR)
    assert execution.state == ex.EXECUTION_STATE_SUCCEEDED, execution.error
    assert not [r for r in caplog.records if "stream lost" in r.getMessage()]


def _result(task_id: str, size: int) -> ws.TaskResult:
    result = ws.TaskResult(attempt=ws.AttemptRef(execution_id="e", task_id=task_id))
    result.output.string_value = "z" * size
    return result


def test_take_splits_results_by_the_message_limit_and_replaces_oversized_ones() -> None:
    outbox = Outbox()
    outbox.set_limits(max_output_bytes=400_000, max_message_bytes=MIB)
    assert (outbox.max_message_bytes, outbox.max_output_bytes) == (MIB, 400_000)
    for i in range(4):
        outbox.results[("e", f"t{i}", 0, 0, 0)] = _result(f"t{i}", 300_000)  # type: ignore[index]
    outbox.results[("e", "huge", 0, 0, 0)] = _result("huge", 2 * MIB)  # type: ignore[index]
    outbox.acks.append(ws.AssignmentAck())
    sizes = []
    while not outbox.empty():
        request = outbox.take(0.0, keep_for=60)
        assert request is not None
        assert request.ByteSize() <= MIB
        sizes.append([r.task_id for r in (x.attempt for x in request.results)])
    assert sizes == [["t0", "t1", "t2"], ["t3", "huge"]]
    replaced = outbox.in_flight[("e", "huge", 0, 0, 0)][1]  # type: ignore[index]
    assert replaced.error.type == "PayloadTooLarge"
    assert replaced.error.retry == ex.ERROR_RETRY_NON_RETRYABLE
    # Without the server's word, the channel's own limit (64 MiB) applies.
    fresh = Outbox()
    fresh.set_limits(0, 0)
    assert fresh.max_output_bytes == 64 * MIB - ENVELOPE_BYTES


def test_a_sub_plan_over_the_limit_is_replaced_like_an_output() -> None:
    outbox = Outbox()
    outbox.set_limits(max_output_bytes=1_000, max_message_bytes=MIB)
    small = ws.TaskResult(attempt=ws.AttemptRef(execution_id="e", task_id="a"))
    small.sub_plan.source = "name: sub\ntasks: [{id: a, type: t}]\n"
    assert outbox.fit(small) is small
    big = ws.TaskResult(attempt=ws.AttemptRef(execution_id="e", task_id="b"))
    big.sub_plan.source = "#" * 5_000
    replaced = outbox.fit(big)
    assert replaced.error.type == "PayloadTooLarge"
    assert replaced.error.message.startswith("sub-plan of ")
    assert replaced.error.retry == ex.ERROR_RETRY_NON_RETRYABLE
