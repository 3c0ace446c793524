"""Live output, progress, search, paging, schedules and purge through the Python SDK
against an in-process server (real SQLite file, port 0, SDK workers): what the
watchers see, a slow watcher dropped while a fast one gets everything, filtered
paging that stays stable, coalesced progress, a schedule's life and purge in pages."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from execplan.client import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    from_search_attributes,
    from_value,
)
from execplan.v1 import events_pb2, execution_pb2, executor_service_pb2
from execplan.worker import TaskContext

if TYPE_CHECKING:
    from tests.support.server import FAST, Env, environment
else:
    from support.server import FAST, Env, environment

GATED = """
name: gated
inputs:
  count: {type: integer, default: 3}
  size: {type: integer, default: 5}
tasks:
  - id: gate
    type: builtin.wait_for_event
    inputs: {event: go, timeout: 1m}
  - id: talk
    type: sdk.talk
    depends_on: [gate]
    inputs: {count: "${{ workflow.inputs.count }}", size: "${{ workflow.inputs.size }}"}
  - id: quiet
    type: sdk.talk
    depends_on: [gate]
    inputs: {count: 1, size: 1}
"""

QUICK = """
name: quick
tasks:
  - id: nap
    type: builtin.sleep
    inputs: {duration: 1ms}
"""


async def talk(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    count, size = int(inputs["count"]), int(inputs["size"])
    for i in range(count):
        ctx.stream(f"{i:06d}:" + "x" * max(0, size - 7))
        if i % 10 == 9:
            await asyncio.sleep(0.01)  # a steady stream (~1,000 a second), not one burst
    return {"sent": count}


async def subscribed(env: Env, execution_id: str, watchers: int) -> None:
    engine = env.executor.engine

    async def probe() -> bool:
        return engine.streams.subscribers(execution_id) >= watchers

    await env.until(probe)


async def test_watch_stream_and_task_stream(tmp_path: Path) -> None:
    async with environment(Env, tmp_path) as env:
        env.worker({"sdk.talk": talk})
        execution_id = await env.start(GATED, {"count": 5, "size": 9})
        items: list[Any] = []
        task_chunks: list[executor_service_pb2.StreamChunk] = []

        async def watch_all() -> None:
            async for item in env.client.watch(execution_id, stream=True):
                items.append(item)

        async def watch_task() -> None:
            async for chunk in env.client.watch_task_stream(execution_id, "talk"):
                task_chunks.append(chunk)

        watchers = [asyncio.create_task(watch_all()), asyncio.create_task(watch_task())]
        await subscribed(env, execution_id, 2)
        await env.client.send_event(execution_id, "go")
        async with asyncio.timeout(15):
            await asyncio.gather(*watchers)
        chunks = [i for i in items if isinstance(i, executor_service_pb2.StreamChunk)]
        events = [i for i in items if isinstance(i, events_pb2.ExecutionEvent)]
        assert events[-1].HasField("execution_completed")
        talked = [c for c in chunks if c.task_id == "talk"]
        assert [c.text[:6] for c in talked] == [f"{i:06d}" for i in range(5)]
        assert [c.index for c in talked] == [1, 2, 3, 4, 5]
        assert {c.task_id for c in chunks} == {"talk", "quiet"}
        # The task stream: that task only, ended when it did (not at the execution end).
        assert [c.text for c in task_chunks] == [c.text for c in talked]
        talk_done = next(
            e.sequence
            for e in events
            if e.HasField("task_succeeded") and e.task_succeeded.task_id == "talk"
        )
        first_chunk_at = items.index(talked[0])
        done_at = next(
            i for i, item in enumerate(items) if getattr(item, "sequence", 0) == talk_done
        )
        assert first_chunk_at < done_at  # live: before the task's result
        history = await env.history(execution_id)
        assert not any("000001:" in str(e) for e in history)  # no chunk was stored


async def test_a_slow_watcher_is_dropped_and_a_fast_one_gets_everything(tmp_path: Path) -> None:
    engine = dataclasses.replace(FAST, stream_backlog=200)
    async with environment(Env, tmp_path, engine) as env:
        env.worker({"sdk.talk": talk})
        # 12 MB in all: more than the slow reader's HTTP/2 window lets through, so
        # its chunks pile up on the server until it is dropped.
        count = 1500
        execution_id = await env.start(GATED, {"count": count, "size": 8 * 1024})
        request = executor_service_pb2.WatchTaskStreamRequest(
            execution_id=execution_id, task_id="talk"
        )
        slow = env.stub.WatchTaskStream(request)  # never read until the end
        fast: list[executor_service_pb2.StreamChunk] = []

        async def read_fast() -> None:
            async for chunk in env.client.watch_task_stream(execution_id, "talk"):
                fast.append(chunk)

        reader = asyncio.create_task(read_fast())
        await subscribed(env, execution_id, 2)
        await env.client.send_event(execution_id, "go")
        async with asyncio.timeout(30):
            await reader
        assert [c.index for c in fast] == list(range(1, count + 1))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async with asyncio.timeout(15):
                async for _ in slow:
                    pass
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "dropped" in (caught.value.details() or "")
        done = await env.finish(execution_id)
        assert done.state == execution_pb2.EXECUTION_STATE_SUCCEEDED


async def test_filtered_pages_stay_stable_while_executions_start(tmp_path: Path) -> None:
    async with environment(Env, tmp_path) as env:
        first = [
            await env.start(QUICK, search_attributes={"batch": "b1", "n": i}) for i in range(25)
        ]
        seen: list[str] = []
        extra = 0
        async for execution in env.client.list(filter='batch = "b1"', page_size=4):
            seen.append(execution.execution_id)
            attrs = from_search_attributes(execution.search_attributes)
            assert attrs["batch"] == "b1"
            if len(seen) % 4 == 0:  # between pages: newer ones must not shift the rest
                await env.start(QUICK, search_attributes={"batch": "b1", "n": 100 + extra})
                extra += 1
        assert seen == list(reversed(first))
        odd = [e.execution_id async for e in env.client.list(filter='batch = "b1" AND n < 5')]
        assert odd == list(reversed(first[:5]))


def test_a_handler_learns_a_bad_search_attribute_where_it_sets_it() -> None:
    from execplan.worker._context import AttemptInfo, TaskContext  # noqa: PLC0415

    info = AttemptInfo("e", "t", 1, 1, "k", "ty", "wf", {}, {}, None)
    ctx = TaskContext(info, lambda: None)
    ctx.set_search_attributes(customer="acme", priority=3, gone=None)
    assert set(ctx.take_search_attributes()) == {"customer", "priority", "gone"}
    for bad in ({"bad-name": 1}, {"execplan_schedule": "x"}, {"big": "x" * 2000}):
        with pytest.raises(ValueError, match="search attribute"):
            ctx.set_search_attributes(bad)
    with pytest.raises(TypeError):
        ctx.set_search_attributes(when=object())


STEPS = """
name: steps
tasks:
  - id: work
    type: sdk.steps
"""


async def steps(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    for i in range(50):  # far chattier than the 1 s progress interval lets through
        ctx.heartbeat({"step": i})
        await asyncio.sleep(0.03)
    return {"steps": 50}


REPORT = """
name: report
tasks:
  - id: work
    type: sdk.report
"""


async def report(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    ctx.heartbeat({"step": "last"})
    return {}  # at once: the progress must not be lost with the attempt


async def test_progress_reported_just_before_the_result_is_recorded(tmp_path: Path) -> None:
    async with environment(Env, tmp_path) as env:
        env.worker({"sdk.report": report})
        for _ in range(5):
            execution_id = await env.start(REPORT)
            await env.finish(execution_id)
            history = await env.history(execution_id)
            kinds = [e.WhichOneof("kind") for e in history]
            progress = [
                from_value(e.task_progress.progress) for e in history if e.HasField("task_progress")
            ]
            assert progress == [{"step": "last"}], kinds
            assert kinds.index("task_progress") < kinds.index("task_succeeded")


async def test_progress_reaches_a_python_watcher_coalesced(tmp_path: Path) -> None:
    async with environment(Env, tmp_path) as env:
        env.worker({"sdk.steps": steps})
        execution_id = await env.start(STEPS)
        live: list[Any] = []
        async with asyncio.timeout(20):
            async for event in env.client.watch(execution_id):
                if event.HasField("task_progress"):
                    live.append(from_value(event.task_progress.progress))
                if event.HasField("execution_completed"):
                    break
        # ~1.5 s of heartbeats at a 1 s interval: a few events, not 50; the last kept.
        assert 1 <= len(live) <= 4, live
        assert [p["step"] for p in live] == sorted(p["step"] for p in live)
        stored = [e for e in await env.history(execution_id) if e.HasField("task_progress")]
        assert [from_value(e.task_progress.progress) for e in stored] == live
        got = await env.client.get(execution_id)
        assert got.state == execution_pb2.EXECUTION_STATE_SUCCEEDED


async def test_schedules_and_purge_through_the_python_client(tmp_path: Path) -> None:
    async with environment(Env, tmp_path) as env:
        schedules = env.client.schedules
        created = await schedules.create("every-second", every=1, source=QUICK, overlap="allow")
        assert created.created and created.schedule.name == "every-second"
        again = await schedules.create("every-second", every=1, source=QUICK, overlap="allow")
        assert not again.created  # the same definition: idempotent
        with pytest.raises(AlreadyExistsError):
            await schedules.create("every-second", every=2, source=QUICK)
        with pytest.raises(InvalidArgumentError) as bad:
            await schedules.create("bad", cron="61 * * * *", source=QUICK)
        assert any(v.field.startswith("spec") for v in bad.value.violations)

        async def ran() -> list[execution_pb2.Execution]:
            f = 'execplan_schedule = "every-second"'
            return [e async for e in env.client.list(filter=f)]

        async def two_runs() -> bool:
            return len(await ran()) >= 2

        await env.until(two_runs, within=15)
        assert [s.name async for s in schedules.list()] == ["every-second"]
        paused = await schedules.pause("every-second", "maintenance")
        assert paused.paused and paused.note == "maintenance"
        await asyncio.sleep(0.3)  # a run the loop had in flight lands before the count
        count = len(await ran())
        await asyncio.sleep(2.2)
        assert len(await ran()) == count  # paused: no slot fired
        # Backfill three slots a minute ago, twice: the second finds them all run.
        end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
        first = await schedules.backfill("every-second", end - timedelta(seconds=2), end)
        assert (first.slots, first.started, first.already_run) == (3, 3, 0)
        second = await schedules.backfill("every-second", end - timedelta(seconds=2), end)
        assert (second.slots, second.started, second.already_run) == (3, 0, 3)
        resumed = await schedules.resume("every-second")
        assert not resumed.paused and resumed.info.runs >= count
        assert await schedules.delete("every-second")
        assert not await schedules.delete("every-second")
        with pytest.raises(NotFoundError):
            await schedules.get("every-second")

        runs = await ran()
        for run in runs:
            await env.finish(run.execution_id)
        dry = await env.client.purge('execplan_schedule = "every-second"', dry_run=True)
        assert sorted(dry.execution_ids) == sorted(r.execution_id for r in runs)
        done = await env.client.purge('execplan_schedule = "every-second"', limit=2)
        assert done.purged == 2 and done.more
        rest = await env.client.purge('execplan_schedule = "every-second"')
        assert done.purged + rest.purged == len(runs) and not rest.more
        assert await ran() == []
        with pytest.raises(NotFoundError):
            await env.client.get(runs[0].execution_id)


async def test_watch_all_gets_only_the_summaries_its_filter_admits(tmp_path: Path) -> None:
    """Filters apply where summaries are made: a watcher of terminal states gets no
    summary of a start, and one that nobody's filter admits is never encoded."""
    done = execution_pb2.EXECUTION_STATE_SUCCEEDED
    running = execution_pb2.EXECUTION_STATE_RUNNING
    async with environment(Env, tmp_path) as env:
        hub = env.executor.engine.hub
        by_workflow: list[execution_pb2.Execution] = []
        finished: list[execution_pb2.Execution] = []

        async def watch(into: list[execution_pb2.Execution], count: int, **kw: Any) -> None:
            async for execution in env.client.watch_all(**kw):
                into.append(execution)
                if len(into) == count:
                    return

        watchers = [
            asyncio.create_task(watch(by_workflow, 4, workflow_name="quick")),
            asyncio.create_task(watch(finished, 3, states=[done])),
        ]

        async def subscribed() -> bool:
            return hub.watchers_of_all() == 2

        await env.until(subscribed)
        assert hub.wants_summary(running, "quick")
        assert not hub.wants_summary(running, "other")  # no summary is encoded for it
        quick = [await env.start(QUICK), await env.start(QUICK)]
        other = await env.start(QUICK.replace("name: quick", "name: other"))
        async with asyncio.timeout(15):
            await asyncio.gather(*watchers)
        for execution_id in quick:
            states = [e.state for e in by_workflow if e.execution_id == execution_id]
            assert states == [running, done]
        assert sorted(e.execution_id for e in finished) == sorted([*quick, other])
        assert {e.state for e in finished} == {done}
