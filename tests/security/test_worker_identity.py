"""A worker id belongs to the principal that registered it; a worker can touch only
its own leases, of task types it registered (docs/security.md, "Worker identity").

The attack this closes: a worker principal allowed only task type X registered with
another worker's `worker_id`, listed that worker's running attempt (of type Y) in
`running`, and completed it with a forged output; the execution succeeded with it.
Real tokens over TLS, a real server, and a restart on the same database.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import executor_service_pb2 as es
from execplan.v1 import executor_service_pb2_grpc as es_grpc
from execplan.v1 import worker_service_pb2 as ws

from .conftest import TOKENS, Pki, ServerFactory, secure_channel, sha

if TYPE_CHECKING:
    from tests.support.raw_worker import RawWorker
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support.raw_worker import RawWorker

INTRUDER_TOKEN = "tok-intruder-1"
SOURCE = """
name: identity
tasks:
  - {id: pay, type: sec.echo, retry: {max_attempts: 1}}
outputs: {v: "${{ tasks.pay.output }}"}
"""


@pytest.fixture
def tokens(tmp_path: Path) -> str:
    """`billing` may run sec.echo; `intruder` only sec.other."""
    path = tmp_path / "tokens.txt"
    path.write_text(
        f"ci-bot    client  sha256:{sha(TOKENS['client'])}\n"
        f"billing   worker  sha256:{sha(TOKENS['worker'])}  sec.echo\n"
        f"intruder  worker  sha256:{sha(INTRUDER_TOKEN)}  sec.other\n"
    )
    return str(path)


def _as(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _registration(worker_id: str, task_type: str, *running: ws.AttemptRef) -> ws.WorkerRegistration:
    return ws.WorkerRegistration(
        worker_id=worker_id, task_types=[task_type], slots=2, running=list(running)
    )


def _result(ref: ws.AttemptRef, value: str) -> ws.TaskResult:
    result = ws.TaskResult(attempt=ref)
    result.output.string_value = value
    return result


async def _start(channel: grpc.aio.Channel) -> str:
    stub = es_grpc.ExecutorServiceStub(channel)
    reply = await stub.StartExecution(
        es.StartExecutionRequest(source=SOURCE), metadata=_as(TOKENS["client"])
    )
    return reply.execution_id


async def _execution(channel: grpc.aio.Channel, execution_id: str) -> ex.Execution:
    stub = es_grpc.ExecutorServiceStub(channel)
    reply = await stub.GetExecution(
        es.GetExecutionRequest(execution_id=execution_id), metadata=_as(TOKENS["client"])
    )
    return reply.execution


async def _denied(channel: grpc.aio.Channel, registration: ws.WorkerRegistration) -> str:
    """The PERMISSION_DENIED message a registration gets (fails if it is accepted)."""
    async with RawWorker.open(channel, registration, _as(INTRUDER_TOKEN)) as raw:
        await raw.ended.wait()
        assert raw.responses == [], "the registration was accepted"
        assert raw.error is not None
        assert raw.error.code() == grpc.StatusCode.PERMISSION_DENIED, raw.error
        return raw.error.details() or ""


async def test_another_principal_cannot_take_a_worker_id_or_its_attempts(
    secured: ServerFactory, pki: Pki, tokens: str
) -> None:
    async with (
        secured(tls=True, auth_tokens=tokens) as server,
        secure_channel(pki, server.address) as channel,
    ):
        execution_id = await _start(channel)
        victim = RawWorker(channel, _registration("w-victim", "sec.echo"), _as(TOKENS["worker"]))
        (dispatch,) = await victim.dispatches(1)
        victim.ack(dispatch)
        ref = dispatch.attempt

        # The attack as reported: the victim's worker id, its attempt in `running`.
        message = await _denied(channel, _registration("w-victim", "sec.other", ref))
        assert message == (
            "worker id 'w-victim' is registered by another principal; "
            "'intruder' must use a worker id of its own"
        )
        # Under its own worker id, it cannot ack, heartbeat or complete the attempt.
        async with RawWorker.open(
            channel, _registration("w-intruder", "sec.other", ref), _as(INTRUDER_TOKEN)
        ) as intruder:
            registered = await intruder.registered()
            assert list(registered.revoked) == [ref]
            # The ack alone: one with its result in the same message is implied by it.
            intruder.send(ws.ConnectRequest(acks=[ws.AssignmentAck(attempt=ref)]))
            intruder.send(
                ws.ConnectRequest(
                    heartbeats=[ws.TaskHeartbeat(attempt=ref)],
                    results=[_result(ref, "forged")],
                )
            )
            reasons = {r.reason for r in await intruder.rejections(3)}
        assert reasons == {"attempt is leased to worker w-victim, not w-intruder"}
        assert (await _execution(channel, execution_id)).state == ex.EXECUTION_STATE_RUNNING
        assert not victim.ended.is_set()  # the victim's stream was never replaced
        await victim.close()

    # After a restart the binding is rebuilt from the log (each lease records its
    # holder's principal): the orphaned attempt still cannot be claimed by another.
    async with (
        secured(tls=True, auth_tokens=tokens) as server,
        secure_channel(pki, server.address) as channel,
    ):
        message = await _denied(channel, _registration("w-victim", "sec.other", ref))
        assert "registered by another principal" in message
        async with RawWorker.open(
            channel, _registration("w-victim", "sec.echo", ref), _as(TOKENS["worker"])
        ) as back:
            registered = await back.registered()
            assert list(registered.revoked) == []  # the real owner reclaims it
            back.send(ws.ConnectRequest(results=[_result(ref, "genuine")]))
            execution = await _finished(channel, execution_id)
    assert execution.state == ex.EXECUTION_STATE_SUCCEEDED
    assert execution.outputs["v"] == "genuine"


async def _finished(channel: grpc.aio.Channel, execution_id: str) -> ex.Execution:
    stub = es_grpc.ExecutorServiceStub(channel)
    async for reply in stub.WatchExecution(
        es.WatchExecutionRequest(execution_id=execution_id), metadata=_as(TOKENS["client"])
    ):
        if reply.event.HasField("execution_completed"):
            break
    return await _execution(channel, execution_id)


async def test_one_principal_may_run_many_worker_ids(
    secured: ServerFactory, pki: Pki, tokens: str
) -> None:
    async with (
        secured(tls=True, auth_tokens=tokens) as server,
        secure_channel(pki, server.address) as channel,
    ):
        for worker_id in ("billing-1", "billing-2", "billing-1"):  # and a reconnect
            async with RawWorker.open(
                channel, _registration(worker_id, "sec.echo"), _as(TOKENS["worker"])
            ) as raw:
                assert (await raw.registered()).worker_id == worker_id
