"""The Node worker against a scripted fake of the executor (a real gRPC server): a
rejection means the attempt is no longer this worker's, so the handler is aborted and
its result never sent, as the Python SDK does."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from execplan.v1 import events_pb2, execution_pb2
from execplan.v1 import worker_service_pb2 as pb

from tests.support.fake_worker_service import FakeWorkerService, ServerThread

ROOT = Path(__file__).resolve().parents[3]
NODE_PACKAGE = Path(os.environ.get("EXECPLAN_NODE_PACKAGE", ROOT / "clients" / "node"))
SCRIPT = Path(__file__).with_name("rejected_worker.mjs")


def ref(task_id: str) -> pb.AttemptRef:
    return pb.AttemptRef(
        execution_id="ex-1",
        task_id=task_id,
        phase=execution_pb2.TASK_PHASE_MAIN,
        token=events_pb2.AttemptToken(attempt=1, lease_epoch=1),
    )


@pytest.fixture
async def node_worker() -> AsyncIterator[tuple[ServerThread, asyncio.subprocess.Process]]:
    assert shutil.which("node"), "node is not on PATH: install Node 20"
    assert (NODE_PACKAGE / "dist" / "index.js").is_file(), (
        f"{NODE_PACKAGE}/dist is missing: run scripts/test (it builds the Node client)"
    )
    server = ServerThread(FakeWorkerService(asyncio.get_running_loop()))
    server.start()
    proc = await asyncio.create_subprocess_exec(
        "node", str(SCRIPT), server.address, stdout=asyncio.subprocess.PIPE
    )
    try:
        yield server, proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()
        server.stop()


async def line(proc: asyncio.subprocess.Process) -> str:
    assert proc.stdout is not None
    return (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().strip()


async def test_a_rejection_aborts_the_handler_and_drops_its_result(
    node_worker: tuple[ServerThread, asyncio.subprocess.Process],
) -> None:
    server, proc = node_worker
    fake = server.servicer
    await fake.next_request(lambda r: r.register.worker_id == "w-node", within=20)
    server.send(pb.ConnectResponse(dispatches=[pb.Dispatch(attempt=ref("t1"), task_type="wait")]))
    await fake.next_request(lambda r: len(r.acks) > 0)
    assert await line(proc) == "started"

    server.send(
        pb.ConnectResponse(rejections=[pb.ResultRejected(attempt=ref("t1"), reason="stale")])
    )
    assert await line(proc) == "aborted: stale"

    # The worker goes on serving: the next dispatch's result is the only one sent.
    server.send(pb.ConnectResponse(dispatches=[pb.Dispatch(attempt=ref("t2"), task_type="quick")]))
    sent = await fake.next_request(lambda r: len(r.results) > 0)
    assert [r.attempt.task_id for r in sent.request.results] == ["t2"]
    await asyncio.sleep(0.3)  # more than a heartbeat interval of the fake (50 ms)
    assert not [i for i in fake.log if i.request.results and i is not sent]
