"""The worker protocol as docs/worker-protocol.md writes it, spoken with bare gRPC stubs
(no SDK): what a third-party worker sees and must do, against a real server.

Each test follows one section of the document: the session (register, dispatch, ack,
heartbeat, result), the retry decision of `ErrorInfo.retry`, fencing (a stale token is
rejected, with the reason), reconnect and `running` reconciliation, cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from execplan.client.values import from_value, to_value
from execplan.executor.runtime.engine import EngineConfig
from execplan.v1 import events_pb2, worker_service_pb2_grpc
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import worker_service_pb2 as ws

from tests.support.server import Env, environment

FAST = EngineConfig(
    ack_deadline_ms=1_000,
    heartbeat_interval_ms=500,
    reconnect_grace_ms=1_000,
    recovery_grace_ms=500,
)
ONE = """
name: raw
tasks:
  - id: work
    type: raw.work
    inputs: {n: 2}
    retry: {max_attempts: 3, initial_interval: 10ms, max_interval: 10ms}
outputs:
  doubled: "${{ tasks.work.output.doubled }}"
"""


class RawWorker:
    """One WorkerService.Connect stream: `send` queues a ConnectRequest, `next`
    returns the next ConnectResponse (with a deadline)."""

    def __init__(self, channel: grpc.aio.Channel, worker_id: str, **registration: Any) -> None:
        self._stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
        self._outgoing: asyncio.Queue[ws.ConnectRequest | None] = asyncio.Queue()
        self.registration = ws.WorkerRegistration(
            worker_id=worker_id, task_types=["raw.work"], slots=2, sdk="raw-test/1", **registration
        )
        self.call: Any = None

    async def _requests(self) -> AsyncIterator[ws.ConnectRequest]:
        while (item := await self._outgoing.get()) is not None:
            yield item

    async def connect(self) -> ws.WorkerRegistered:
        self.call = self._stub.Connect(self._requests())
        self.send(ws.ConnectRequest(register=self.registration))
        first = await self.next()
        assert first.HasField("registered"), first
        return first.registered

    def send(self, request: ws.ConnectRequest) -> None:
        self._outgoing.put_nowait(request)

    async def next(self, within: float = 10.0) -> ws.ConnectResponse:
        async with asyncio.timeout(within):
            response = await self.call.read()
        assert isinstance(response, ws.ConnectResponse), response
        return response

    async def next_with(self, field: str, within: float = 10.0) -> ws.ConnectResponse:
        """Skips messages without `field` (heartbeat-only rounds, other dispatches)."""
        async with asyncio.timeout(within):
            while True:
                response = await self.next(within)
                if getattr(response, field):
                    return response

    async def close(self) -> None:
        self._outgoing.put_nowait(None)  # half-close: the server ends the stream
        with contextlib.suppress(grpc.aio.AioRpcError, TimeoutError):
            async with asyncio.timeout(5):
                while await self.call.read() is not grpc.aio.EOF:
                    pass
        self.call.cancel()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with environment(Env, tmp_path, FAST) as env:
        yield env


def ack(dispatch: ws.Dispatch) -> ws.ConnectRequest:
    return ws.ConnectRequest(acks=[ws.AssignmentAck(attempt=dispatch.attempt)])


def output(dispatch: ws.Dispatch, value: Any) -> ws.ConnectRequest:
    result = ws.TaskResult(attempt=dispatch.attempt, output=to_value(value))
    return ws.ConnectRequest(results=[result])


def failure(dispatch: ws.Dispatch, error: ex.ErrorInfo) -> ws.ConnectRequest:
    return ws.ConnectRequest(results=[ws.TaskResult(attempt=dispatch.attempt, error=error)])


async def kinds(env: Env, execution_id: str) -> list[str]:
    return [e.WhichOneof("kind") or "" for e in await env.history(execution_id)]


async def test_a_session_register_dispatch_ack_heartbeat_result(env: Env) -> None:
    worker = RawWorker(env.channel, "raw-1")
    registered = await worker.connect()
    assert registered.worker_id == "raw-1"
    assert (registered.heartbeat_interval_ms, registered.ack_deadline_ms) == (500, 1_000)
    assert not registered.revoked
    execution_id = await env.start(ONE)
    dispatch = (await worker.next_with("dispatches")).dispatches[0]
    ref = dispatch.attempt
    assert (ref.execution_id, ref.task_id, ref.phase) == (execution_id, "work", ex.TASK_PHASE_MAIN)
    assert (ref.token.attempt, ref.token.lease_epoch) >= (1, 1)
    assert dispatch.task_type == "raw.work" and dispatch.workflow_name == "raw"
    assert dispatch.idempotency_key
    n = from_value(dispatch.inputs.fields["n"])
    worker.send(ack(dispatch))
    worker.send(
        ws.ConnectRequest(heartbeats=[ws.TaskHeartbeat(attempt=ref, progress=to_value(0.5))])
    )
    worker.send(output(dispatch, {"doubled": n * 2}))
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED, done.error
    assert dict(done.outputs) == {"doubled": 4.0}
    assert await kinds(env, execution_id) == [
        "execution_started",
        "task_queued",
        "task_dispatched",
        "task_started",
        # The heartbeat's progress is recorded (coalesced: docs/operations.md).
        "task_progress",
        "task_succeeded",
        "execution_completed",
    ]
    await worker.close()


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (ex.ErrorInfo(type="Flaky"), True),  # nothing said: retried
        (ex.ErrorInfo(type="Flaky", retryable=False), True),  # the same bytes on the wire
        (ex.ErrorInfo(type="Flaky", retryable=True), True),  # an SDK before `retry`
        (ex.ErrorInfo(type="Flaky", retry=ex.ERROR_RETRY_RETRYABLE), True),
        (ex.ErrorInfo(type="Fatal", retry=ex.ERROR_RETRY_NON_RETRYABLE), False),
        (ex.ErrorInfo(type="Fatal", retry=ex.ERROR_RETRY_NON_RETRYABLE, retryable=True), False),
    ],
    ids=["unset", "retryable-false", "retryable-true", "retryable", "non-retryable", "both"],
)
async def test_error_retry_decides_whether_an_attempt_is_retried(
    env: Env, error: ex.ErrorInfo, retried: bool
) -> None:
    worker = RawWorker(env.channel, "raw-retry")
    await worker.connect()
    execution_id = await env.start(ONE)
    first = (await worker.next_with("dispatches")).dispatches[0]
    worker.send(ack(first))
    worker.send(failure(first, error))
    if retried:
        second = (await worker.next_with("dispatches")).dispatches[0]
        assert second.attempt.token.attempt == 2
        assert second.idempotency_key != first.idempotency_key  # one key per attempt
        worker.send(ack(second))
        worker.send(output(second, {"doubled": 4}))
    done = await env.finish(execution_id)
    if retried:
        assert done.state == ex.EXECUTION_STATE_SUCCEEDED, done.error
    else:
        assert done.state == ex.EXECUTION_STATE_FAILED
        task = done.tasks[0]
        assert (task.attempt, task.error.type, task.error.retryable) == (1, "Fatal", False)
    await worker.close()


async def test_a_stale_token_is_rejected_with_the_reason(env: Env) -> None:
    worker = RawWorker(env.channel, "raw-stale")
    await worker.connect()
    execution_id = await env.start(ONE)
    dispatch = (await worker.next_with("dispatches")).dispatches[0]
    worker.send(ack(dispatch))
    stale = ws.TaskResult()
    stale.CopyFrom(ws.TaskResult(attempt=dispatch.attempt, output=to_value({"doubled": -1})))
    stale.attempt.token.lease_epoch += 7
    worker.send(ws.ConnectRequest(results=[stale]))
    rejected = (await worker.next_with("rejections")).rejections[0]
    assert rejected.attempt.token.lease_epoch == stale.attempt.token.lease_epoch
    assert rejected.reason  # says why (which token is current)
    worker.send(output(dispatch, {"doubled": 4}))  # the current token still completes it
    done = await env.finish(execution_id)
    assert dict(done.outputs) == {"doubled": 4.0}
    await worker.close()


async def test_reconnect_within_the_grace_keeps_running_attempts(env: Env) -> None:
    worker = RawWorker(env.channel, "raw-back")
    await worker.connect()
    execution_id = await env.start(ONE)
    dispatch = (await worker.next_with("dispatches")).dispatches[0]
    worker.send(ack(dispatch))
    await env.until(lambda: _running(env, execution_id))
    worker.call.cancel()  # the stream breaks; the attempt goes on locally

    bogus = ws.AttemptRef()
    bogus.CopyFrom(dispatch.attempt)
    bogus.task_id = "no-such-task"
    again = RawWorker(env.channel, "raw-back", running=[dispatch.attempt, bogus])
    registered = await again.connect()
    assert [r.task_id for r in registered.revoked] == ["no-such-task"]
    again.send(output(dispatch, {"doubled": 4}))  # same token: accepted
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED, done.error
    assert "task_requeued" not in await kinds(env, execution_id)
    await again.close()


async def test_cancel_tells_the_worker(env: Env) -> None:
    worker = RawWorker(env.channel, "raw-cancel")
    await worker.connect()
    execution_id = await env.start(ONE)
    dispatch = (await worker.next_with("dispatches")).dispatches[0]
    worker.send(ack(dispatch))
    await env.until(lambda: _running(env, execution_id))
    await env.client.cancel(execution_id, reason="not needed")
    cancel = (await worker.next_with("cancels")).cancels[0]
    assert cancel.attempt.token == dispatch.attempt.token
    worker.send(output(dispatch, {"doubled": 4}))  # too late: rejected, not applied
    rejected = (await worker.next_with("rejections")).rejections[0]
    assert rejected.attempt.task_id == "work"
    done = await env.client.get(execution_id)
    assert done.state == ex.EXECUTION_STATE_CANCELLED
    await worker.close()


async def _running(env: Env, execution_id: str) -> bool:
    execution = await env.client.get(execution_id)
    return execution.tasks[0].state == ex.TASK_STATE_RUNNING


def test_attempt_token_is_the_fencing_pair() -> None:
    token = events_pb2.AttemptToken(attempt=1, lease_epoch=1)
    assert [f.name for f in token.DESCRIPTOR.fields] == ["attempt", "lease_epoch"]
