"""ExecutorClient over a comma list of addresses: a call that meets UNAVAILABLE is
retried on the next address (two real in-process servers, the first one stopped)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from execplan.client import ExecutorClient, UnavailableError
from execplan.config import ServerConfig
from execplan.server import ExecplanServer
from execplan.v1 import execution_pb2 as ex
from execplan.worker import Worker

CHAIN = """
name: chain
inputs: {x: {type: integer, required: true}}
tasks:
  - {id: a, type: f.inc, inputs: {v: "${{ workflow.inputs.x }}"}}
  - {id: b, type: f.inc, depends_on: [a], inputs: {v: "${{ tasks.a.output.v }}"}}
outputs: {v: "${{ tasks.b.output.v }}"}
"""


async def inc(inputs: dict[str, Any]) -> dict[str, Any]:
    return {"v": inputs["v"] + 1}


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[str, ExecplanServer]]:
    """(address of a stopped server, a running server)."""
    configs = [
        ServerConfig(listen="127.0.0.1:0", db_path=str(tmp_path / f"{n}.db"), grace_seconds=0.5)
        for n in ("first", "second")
    ]
    async with ExecplanServer(configs[0]) as first, ExecplanServer(configs[1]) as second:
        stopped = first.address
        await first.stop()
        yield stopped, second


async def test_calls_fail_over_to_the_next_address(
    pair: tuple[str, ExecplanServer],
) -> None:
    stopped, live = pair
    async with ExecutorClient(f"{stopped},{live.address}") as client:
        assert (await client.compile(CHAIN)).plan_id
        started = await client.start(source=CHAIN, inputs={"x": 1}, request_id="once")
        assert client.address == live.address
        again = await client.start(source=CHAIN, inputs={"x": 1}, request_id="once")
        assert (again.execution_id, again.created) == (started.execution_id, False)
        eid = started.execution_id
        assert await client.pause(eid) == ex.EXECUTION_STATE_PAUSED
        assert await client.resume(eid) == ex.EXECUTION_STATE_RUNNING


async def test_watch_fails_over_and_resumes(
    pair: tuple[str, ExecplanServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    stopped, live = pair
    monkeypatch.setenv("EXECPLAN_ADDRESS", f"{stopped},{live.address}")
    worker = Worker(live.address, slots=2)
    worker.task("f.inc")(inc)
    serving = asyncio.create_task(worker.serve())
    try:
        async with ExecutorClient(live.address) as starter:
            eid = (await starter.start(source=CHAIN, inputs={"x": 1})).execution_id
        async with ExecutorClient() as client:  # the env list, dead address first
            async with asyncio.timeout(20):
                sequences = [event.sequence async for event in client.watch(eid)]
            assert sequences == list(range(1, len(sequences) + 1))
            done = await client.get(eid)
        assert done.state == ex.EXECUTION_STATE_SUCCEEDED
    finally:
        await worker.stop()
        await serving


async def test_one_address_is_not_retried(pair: tuple[str, ExecplanServer]) -> None:
    stopped, _ = pair
    async with ExecutorClient(stopped) as client:
        with pytest.raises(UnavailableError):
            await client.get("nope")


async def test_every_address_down_ends_in_unavailable(tmp_path: Path) -> None:
    import socket  # noqa: PLC0415

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    async with ExecutorClient(",".join(f"127.0.0.1:{p}" for p in ports)) as client:
        with pytest.raises(UnavailableError):
            await client.get("nope")
