"""WatchExecutions with `batched`: the changes a round commits together come in one
response, in order, within the message limit; without it, one change a response.

The raw stub is used on purpose: these tests pin the wire contract. The SDKs ask
for `batched` (tests/ops/test_sdk.py and tests/wire/test_paging.py watch through
them)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from execplan.executor.values import fill_struct
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import executor_service_pb2 as pb
from execplan.wire.watch_batch import summary_batches

from tests.support.server import Env, environment

WAIT = """
name: batch
tasks:
  - {id: w, type: builtin.wait_for_event, inputs: {event: go}}
"""


def summary(n: int, blob: str = "") -> ex.Execution:
    execution = ex.Execution(execution_id=f"e{n}", workflow_name="batch")
    if blob:
        fill_struct(execution.inputs, {"blob": blob})
    return execution


async def responses(
    items: list[ex.Execution | None], max_bytes: int
) -> list[pb.WatchExecutionsResponse]:
    queue: asyncio.Queue[ex.Execution | None] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    return [response async for response in summary_batches(queue, max_bytes)]


def ids(response: pb.WatchExecutionsResponse) -> list[str]:
    assert not response.HasField("execution")
    return [execution.execution_id for execution in response.executions]


async def test_what_is_waiting_goes_in_one_response_in_order() -> None:
    got = await responses([summary(n) for n in range(5)] + [None], 1 << 20)
    assert [ids(r) for r in got] == [["e0", "e1", "e2", "e3", "e4"]]


async def test_a_response_stays_within_the_limit_and_the_rest_comes_next() -> None:
    limit = 2 * summary(0, "x" * 1000).ByteSize() + 100  # two of them, not three
    items: list[ex.Execution | None] = [summary(n, "x" * 1000) for n in range(5)]
    got = await responses([*items, None], limit)
    assert [ids(r) for r in got] == [["e0", "e1"], ["e2", "e3"], ["e4"]]
    assert all(r.ByteSize() <= limit for r in got)


async def test_a_summary_over_the_limit_goes_without_its_payloads() -> None:
    limit = 5_000
    got = await responses([summary(0), summary(1, "x" * 10_000), summary(2), None], limit)
    assert [ids(r) for r in got] == [["e0"], ["e1", "e2"]]
    big = got[1].executions[0]
    assert not big.HasField("inputs") and big.execution_id == "e1"


async def test_the_end_of_the_queue_ends_the_stream_after_what_came_before() -> None:
    assert await responses([None], 1 << 20) == []
    queue: asyncio.Queue[ex.Execution | None] = asyncio.Queue()
    stream = summary_batches(queue, 1 << 20)
    queue.put_nowait(summary(0))
    assert ids(await anext(stream)) == ["e0"]  # nothing waited for more
    queue.put_nowait(summary(1))
    queue.put_nowait(None)
    assert ids(await anext(stream)) == ["e1"]
    assert [r async for r in stream] == []


async def test_starts_of_one_call_reach_a_batched_watcher_together(tmp_path: Path) -> None:
    async with environment(Env, tmp_path) as env:
        stub = env.stub
        running = [ex.EXECUTION_STATE_RUNNING]
        batched = stub.WatchExecutions(
            pb.WatchExecutionsRequest(workflow_name="batch", states=running, batched=True)
        )
        single = stub.WatchExecutions(
            pb.WatchExecutionsRequest(workflow_name="batch", states=running)
        )
        hub = env.executor.engine.hub

        async def subscribed() -> bool:
            return bool(hub.watchers_of_all() == 2)

        async def read(call: object, count: int) -> list[pb.WatchExecutionsResponse]:
            got: list[pb.WatchExecutionsResponse] = []
            seen = 0
            async for response in call:  # type: ignore[attr-defined]
                got.append(response)
                seen += len(response.executions) or 1
                if seen == count:
                    return got
            raise AssertionError("the stream ended")

        readers = [asyncio.create_task(read(batched, 20)), asyncio.create_task(read(single, 20))]
        await env.until(subscribed)
        started = await stub.StartExecutions(
            pb.StartExecutionsRequest(
                requests=[pb.StartExecutionRequest(source=WAIT) for _ in range(20)]
            )
        )
        expected = [result.started.execution_id for result in started.results]
        async with asyncio.timeout(15):
            together, one_each = await asyncio.gather(*readers)
        batched.cancel()
        single.cancel()
        assert sorted(i for r in together for i in ids(r)) == sorted(expected)
        assert len(together) < 20  # committed together, sent together
        assert len(one_each) == 20
        assert all(r.HasField("execution") and not r.executions for r in one_each)
        assert sorted(r.execution.execution_id for r in one_each) == sorted(expected)
