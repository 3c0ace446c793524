"""A burst of 2,000 WatchExecution streams over a few channels against a real
`execplan serve`: every watch ends with the terminal event, none sees an error.

Before, ~150 of them got a bare CANCELLED (gRPC core dropping calls queued beyond
its backlog, before any handler ran) that the SDK did not retry. Now the server
lets the burst reach its handlers and sheds explicitly past `--max-watch-streams`
(RESOURCE_EXHAUSTED + RetryInfo), which the SDK honours and hides.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from execplan.client import ExecutorClient
from execplan.client.errors import decode_details
from execplan.v1 import executor_service_pb2 as pb
from execplan.v1 import executor_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from tests.support.processes import LISTENING, serve_args
else:
    from support.processes import LISTENING, serve_args

WATCHES = 2_000
CHANNELS = 4
EXECUTIONS = 40
SLEEPY = """
name: sleepy
tasks:
  - {id: nap, type: builtin.sleep, inputs: {duration: 1s}}
"""


@contextmanager
def serve(db: Path, *options: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    args = [*serve_args(db), "--log-level", "warning", *options]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith(LISTENING), line
    try:
        yield line.split()[-1], proc
    finally:
        proc.terminate()
        proc.wait(15)


async def burst(address: str) -> Counter[str]:
    """WATCHES watches of EXECUTIONS running executions, over CHANNELS clients."""
    clients = [ExecutorClient(address) for _ in range(CHANNELS)]
    try:
        ids = [(await clients[0].start(source=SLEEPY)).execution_id for _ in range(EXECUTIONS)]

        async def watch(i: int) -> str:
            last = ""
            async for event in clients[i % CHANNELS].watch(ids[i % EXECUTIONS]):
                last = event.WhichOneof("kind") or ""
            return last

        ends = await asyncio.wait_for(asyncio.gather(*(watch(i) for i in range(WATCHES))), 120)
        return Counter(ends)
    finally:
        for client in clients:
            await client.close()


@pytest.mark.parametrize("limit", [None, 100], ids=["default-limit", "shedding"])
async def test_every_watch_of_a_burst_ends_with_the_terminal_event(
    tmp_path: Path, limit: int | None
) -> None:
    options = () if limit is None else ("--max-watch-streams", str(limit))
    with serve(tmp_path / "execplan.db", *options) as (address, proc):
        ends = await burst(address)
    assert ends == {"execution_completed": WATCHES}
    _, log = proc.communicate()
    if limit is not None:  # the limit was hit, and the SDK rode it out
        assert "shedding watch streams" in log, log


async def test_raw_streams_past_the_limit_get_resource_exhausted_with_retry_info(
    tmp_path: Path,
) -> None:
    """What the SDK hides: over the bound, a watch is refused at once with
    RESOURCE_EXHAUSTED and a google.rpc.RetryInfo delay, never a bare CANCELLED."""
    with serve(tmp_path / "execplan.db", "--max-watch-streams", "10") as (address, _):
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.ExecutorServiceStub(channel)
            started = await stub.StartExecution(
                pb.StartExecutionRequest(source=SLEEPY.replace("1s", "30s"), request_id="r")
            )
            request = pb.WatchExecutionRequest(execution_id=started.execution_id)
            held = [stub.WatchExecution(request) for _ in range(10)]
            for call in held:  # each has its first event, so each holds a slot
                await call.read()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.WatchExecution(request).read()
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert decode_details(info.value).retry_after == 1.0
            for call in held:
                call.cancel()
            await stub.TerminateExecution(
                pb.TerminateExecutionRequest(execution_id=started.execution_id, request_id="t")
            )
