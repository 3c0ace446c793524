"""Acks and results in one ConnectRequest: the server applies a result whose ack is
in the same message as its implied ack (one input), and every other ack on its own.
What a worker sees and what the history holds must not depend on which way it went:
duplicated acks, an ack of another attempt (a stale token), an ack whose AttemptRef
carries bytes the server does not know, a result with no ack at all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from execplan.client.values import to_value
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import worker_service_pb2 as ws

from tests.support.server import Env, environment
from tests.wire.test_worker_protocol import FAST, ONE, RawWorker, kinds

SUCCEEDED = [
    "execution_started",
    "task_queued",
    "task_dispatched",
    "task_started",
    "task_succeeded",
    "execution_completed",
]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with environment(Env, tmp_path, FAST) as env:
        yield env


def result(ref: ws.AttemptRef) -> ws.TaskResult:
    return ws.TaskResult(attempt=ref, output=to_value({"doubled": 4}))


def with_unknown_field(ref: ws.AttemptRef) -> ws.AttemptRef:
    """The same attempt, with a field this server does not know (a newer worker's)."""
    other = ws.AttemptRef()
    other.ParseFromString(ref.SerializeToString() + b"\xf8\x3f\x01")  # field 1023, varint 1
    assert other != ref or other.SerializeToString() != ref.SerializeToString()
    return other


def stale(ref: ws.AttemptRef) -> ws.AttemptRef:
    other = ws.AttemptRef()
    other.CopyFrom(ref)
    other.token.lease_epoch += 7
    return other


@pytest.mark.parametrize(
    "acks",
    [
        pytest.param(lambda ref: [ref], id="ack"),
        pytest.param(lambda ref: [ref, ref], id="duplicated"),
        pytest.param(lambda ref: [], id="no-ack"),
        pytest.param(lambda ref: [with_unknown_field(ref)], id="unknown-field"),
        pytest.param(lambda ref: [with_unknown_field(ref), ref], id="unknown-and-plain"),
        pytest.param(lambda ref: [stale(ref), ref], id="stale-and-current"),
    ],
)
async def test_an_ack_with_its_result_in_one_message(env: Env, acks) -> None:  # type: ignore[no-untyped-def]
    worker = RawWorker(env.channel, "raw-acks")
    await worker.connect()
    execution_id = await env.start(ONE)
    dispatch = (await worker.next_with("dispatches")).dispatches[0]
    ref = dispatch.attempt
    sent = [ws.AssignmentAck(attempt=a) for a in acks(ref)]
    worker.send(ws.ConnectRequest(acks=sent, results=[result(ref)]))
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED, done.error
    assert dict(done.outputs) == {"doubled": 4.0}
    assert await kinds(env, execution_id) == SUCCEEDED
    await worker.close()


async def test_a_stale_ack_alone_with_a_result_is_rejected(env: Env) -> None:
    """The stale ack is told apart from the result's attempt: rejected with its
    reason, the result (current token) still completes the task."""
    worker = RawWorker(env.channel, "raw-stale-ack")
    await worker.connect()
    execution_id = await env.start(ONE)
    dispatch = (await worker.next_with("dispatches")).dispatches[0]
    ref = dispatch.attempt
    old = stale(ref)
    worker.send(ws.ConnectRequest(acks=[ws.AssignmentAck(attempt=old)], results=[result(ref)]))
    rejected = (await worker.next_with("rejections")).rejections[0]
    assert rejected.attempt.token.lease_epoch == old.token.lease_epoch
    assert rejected.reason
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED, done.error
    assert await kinds(env, execution_id) == SUCCEEDED
    await worker.close()
