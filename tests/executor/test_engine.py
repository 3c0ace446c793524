"""The engine behind a real server (in process, SQLite file, port 0) with SDK workers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest
from execplan.client import InvalidArgumentError
from execplan.client.values import to_struct
from execplan.executor.decide.evolve import evolve
from execplan.executor.plan_view import decode_plan
from execplan.executor.state import new_state
from execplan.executor.view import encode_execution
from execplan.v1 import events_pb2
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import executor_service_pb2 as pb
from execplan.worker import NonRetryableError, TaskContext
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from .conftest import Env

DIAMOND = """
name: diamond
inputs: {x: {type: integer, required: true}}
tasks:
  - {id: a, type: t.add, inputs: {v: "${{ workflow.inputs.x }}", k: 1}}
  - {id: b, type: t.mul, depends_on: [a], inputs: {v: "${{ tasks.a.output.v }}", k: 10}}
  - {id: c, type: t.add, depends_on: [a], inputs: {v: "${{ tasks.a.output.v }}", k: 100}}
  - {id: d, type: t.sum, inputs: {vs: ["${{ tasks.b.output.v }}", "${{ tasks.c.output.v }}"]}}
outputs: {total: "${{ tasks.d.output.v }}"}
"""


async def add(inputs: dict[str, Any]) -> dict[str, Any]:
    return {"v": inputs["v"] + inputs["k"]}


async def mul(inputs: dict[str, Any]) -> dict[str, Any]:
    return {"v": inputs["v"] * inputs["k"]}


def total(inputs: dict[str, Any]) -> dict[str, Any]:  # a sync handler, on a thread
    return {"v": sum(inputs["vs"])}


HANDLERS = {"t.add": add, "t.mul": mul, "t.sum": total}


async def assert_replays(env: Env, execution_id: str) -> None:
    """Folding the stored history into a fresh state gives what GetExecution shows."""
    served = await env.client.get(execution_id)
    plan = decode_plan(await env.client.get_plan(served.plan_id))
    state = new_state(execution_id, plan)
    for event in await env.history(execution_id):
        evolve(state, event)
    assert encode_execution(state) == served


def expected_total(x: int) -> int:
    return (x + 1) * 10 + (x + 1 + 100)


async def test_end_to_end_outputs(env: Env) -> None:
    env.worker(HANDLERS)
    ids = [await env.start(DIAMOND, {"x": x}) for x in range(5)]
    for x, execution_id in enumerate(ids):
        done = await env.finish(execution_id)
        assert done.state == ex.EXECUTION_STATE_SUCCEEDED, done.error
        assert done.outputs["total"] == expected_total(x)
        assert {t.task_id: t.state for t in done.tasks} == dict.fromkeys(
            "abcd", ex.TASK_STATE_SUCCEEDED
        )
        await assert_replays(env, execution_id)


CHAIN = """
name: chain
tasks:
  - {id: a, type: t.slow}
  - {id: b, type: t.slow, depends_on: [a]}
  - {id: c, type: t.slow, depends_on: [b]}
"""


async def test_pause_stops_new_dispatches_and_resume_continues(env: Env) -> None:
    started: list[str] = []
    release = asyncio.Event()

    async def slow(inputs: dict[str, Any], ctx: TaskContext) -> str:
        started.append(ctx.task_id)
        if ctx.task_id == "a":
            await release.wait()
        return ctx.task_id

    env.worker({"t.slow": slow})
    execution_id = await env.start(CHAIN)
    await env.until(lambda: _true(started == ["a"]))
    assert await env.client.pause(execution_id, "hold") == ex.EXECUTION_STATE_PAUSED
    release.set()  # the running attempt finishes while paused

    async def a_done() -> bool:
        got = await env.client.get(execution_id)
        return got.tasks[0].state == ex.TASK_STATE_SUCCEEDED

    await env.until(a_done)
    await asyncio.sleep(0.4)
    paused = await env.client.get(execution_id)
    assert paused.state == ex.EXECUTION_STATE_PAUSED
    assert started == ["a"]  # b is ready but was not dispatched
    assert paused.tasks[1].state == ex.TASK_STATE_QUEUED
    await env.client.resume(execution_id)
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED
    assert started == ["a", "b", "c"]
    await assert_replays(env, execution_id)


async def _true(value: bool) -> bool:
    return value


@pytest.mark.parametrize("terminate", [False, True], ids=["cancel", "terminate"])
async def test_cancel_and_terminate_a_running_execution(env: Env, terminate: bool) -> None:
    running = asyncio.Event()

    async def slow(inputs: dict[str, Any], ctx: TaskContext) -> str:
        running.set()
        await asyncio.sleep(30)
        return "late"

    env.worker({"t.slow": slow})
    execution_id = await env.start(CHAIN)
    async with asyncio.timeout(10):
        await running.wait()
    if terminate:
        await env.client.terminate(execution_id, "stop now")
    else:
        await env.client.cancel(execution_id, "no longer needed")
    done = await env.finish(execution_id)
    want = ex.EXECUTION_STATE_TERMINATED if terminate else ex.EXECUTION_STATE_CANCELLED
    assert done.state == want
    assert done.tasks[0].state == ex.TASK_STATE_CANCELLED
    # Tasks that never ran are closed too, so nothing stays PENDING forever.
    assert [t.state for t in done.tasks[1:]] == [ex.TASK_STATE_CANCELLED] * 2


WAIT = """
name: approve
tasks:
  - {id: w, type: builtin.wait_for_event, inputs: {event: approved, timeout: 30s}}
  - {id: after, type: t.echo, depends_on: [w], inputs: {by: "${{ tasks.w.output.data.by }}"}}
outputs: {by: "${{ tasks.after.output.by }}"}
"""


async def echo(inputs: dict[str, Any]) -> dict[str, Any]:
    return inputs


async def test_send_event_completes_a_wait(env: Env) -> None:
    env.worker({"t.echo": echo})
    execution_id = await env.start(WAIT)

    async def waiting() -> bool:
        got = await env.client.get(execution_id)
        return got.tasks[0].state == ex.TASK_STATE_WAITING

    await env.until(waiting)
    response = await env.client.send_event(execution_id, "approved", {"by": "ann"})
    assert response is not None
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED
    assert done.outputs["by"] == "ann"


async def test_watch_from_a_sequence_gets_exactly_the_rest(env: Env) -> None:
    env.worker(HANDLERS)
    execution_id = await env.start(DIAMOND, {"x": 1})
    await env.finish(execution_id)
    history = await env.history(execution_id)
    last = history[-1].sequence
    assert [e.sequence for e in history] == list(range(1, last + 1))
    for after in (0, 3, last - 1):
        call = env.stub.WatchExecution(
            pb.WatchExecutionRequest(execution_id=execution_id, after_sequence=after)
        )
        got = [r.event async for r in call]
        assert [e.sequence for e in got] == list(range(after + 1, last + 1))
        assert got[-1].HasField("execution_completed")
        assert got == history[after:]


async def test_watch_live_ends_with_completion(env: Env) -> None:
    gate = asyncio.Event()

    async def gated(inputs: dict[str, Any]) -> str:
        await gate.wait()
        return "ok"

    env.worker({"t.slow": gated})
    execution_id = await env.start(CHAIN)
    call = env.stub.WatchExecution(pb.WatchExecutionRequest(execution_id=execution_id))
    seen: list[int] = []

    async def collect() -> None:
        async for response in call:
            seen.append(response.event.sequence)
            if response.event.HasField("execution_completed"):
                return

    reader = asyncio.create_task(collect())
    await asyncio.sleep(0.2)
    gate.set()
    async with asyncio.timeout(10):
        await reader
    assert seen == list(range(1, len(seen) + 1))


async def test_get_and_list_with_state_filter_and_paging(env: Env) -> None:
    env.worker(HANDLERS)
    done_ids = [await env.start(DIAMOND, {"x": x}) for x in range(5)]
    for execution_id in done_ids:
        await env.finish(execution_id)
    waiting_ids = [await env.start(WAIT) for _ in range(3)]
    got = await env.client.get(done_ids[0])
    assert got.execution_id == done_ids[0] and got.workflow_name == "diamond"
    assert len(got.tasks) == 4

    async def listed(states: list[Any], page_size: int) -> list[str]:
        ids: list[str] = []
        request = pb.ListExecutionsRequest(states=states, page_size=page_size)
        pages = 0
        while True:
            response = await env.stub.ListExecutions(request)
            pages += 1
            assert len(response.executions) <= page_size
            ids.extend(e.execution_id for e in response.executions)
            if not response.next_page_token:
                break
            request.page_token = response.next_page_token
        assert pages >= len(ids) // page_size
        return ids

    succeeded = await listed([ex.EXECUTION_STATE_SUCCEEDED], 2)
    assert sorted(succeeded) == sorted(done_ids)
    running = await listed([ex.EXECUTION_STATE_RUNNING], 2)
    assert sorted(running) == sorted(waiting_ids)
    everything = await listed([], 3)
    assert sorted(everything) == sorted(done_ids + waiting_ids)  # no duplicates, none missed


async def test_history_paging(env: Env) -> None:
    env.worker(HANDLERS)
    execution_id = await env.start(DIAMOND, {"x": 3})
    await env.finish(execution_id)
    whole = await env.history(execution_id)
    request = pb.GetExecutionHistoryRequest(execution_id=execution_id, page_size=4)
    paged: list[Any] = []
    while True:
        response = await env.stub.GetExecutionHistory(request)
        assert len(response.events) <= 4
        paged.extend(response.events)
        if not response.next_page_token:
            break
        request.page_token = response.next_page_token
    assert paged == whole
    assert len(whole) > 8
    after = [e async for e in env.client.history(execution_id, after_sequence=5, page_size=2)]
    assert after == whole[5:]


async def test_start_is_idempotent_on_request_id(env: Env) -> None:
    first = await env.client.start(source=WAIT, request_id="order-42")
    second = await env.client.start(source=WAIT, request_id="order-42")
    assert first.created and not second.created
    assert second.execution_id == first.execution_id
    other = await env.client.start(source=WAIT, request_id="order-43")
    assert other.created and other.execution_id != first.execution_id
    listed = [e.execution_id async for e in env.client.list()]
    assert sorted(listed) == sorted({first.execution_id, other.execution_id})


def _bad_request(err: grpc.aio.AioRpcError) -> list[str]:
    status = rpc_status.from_call(err)
    assert status is not None
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend(v.field for v in bad.field_violations)
    return fields


async def test_bad_input_is_invalid_argument_naming_the_field(env: Env) -> None:
    request = pb.StartExecutionRequest(source=DIAMOND, inputs=to_struct({"x": "three"}))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await env.stub.StartExecution(request)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _bad_request(raised.value) == ["inputs.x"]
    missing = pb.StartExecutionRequest(source=DIAMOND)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await env.stub.StartExecution(missing)
    assert _bad_request(raised.value) == ["inputs.x"]


async def test_unknown_execution_is_not_found(env: Env) -> None:
    calls: list[Awaitable[object]] = [
        env.stub.GetExecution(pb.GetExecutionRequest(execution_id="nope")),
        env.stub.PauseExecution(pb.PauseExecutionRequest(execution_id="nope", request_id="r")),
        env.stub.GetExecutionHistory(pb.GetExecutionHistoryRequest(execution_id="nope")),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_resume_of_a_finished_execution_is_failed_precondition(env: Env) -> None:
    env.worker(HANDLERS)
    execution_id = await env.start(DIAMOND, {"x": 0})
    await env.finish(execution_id)
    calls: list[Awaitable[object]] = [
        env.stub.ResumeExecution(
            pb.ResumeExecutionRequest(execution_id=execution_id, request_id="r1")
        ),
        env.stub.CancelExecution(
            pb.CancelExecutionRequest(execution_id=execution_id, request_id="r2")
        ),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_worker_without_task_types_is_invalid_argument(env: Env) -> None:
    from execplan.worker import Worker  # noqa: PLC0415

    worker = Worker(env.address, slots=1)
    with pytest.raises(InvalidArgumentError):
        async with asyncio.timeout(10):
            await worker.serve()


async def test_task_without_a_worker_waits_then_runs_when_one_connects(env: Env) -> None:
    execution_id = await env.start(DIAMOND, {"x": 2})

    async def queued_with_message() -> bool:
        got = await env.client.get(execution_id)
        a = got.tasks[0]
        return a.state == ex.TASK_STATE_QUEUED and bool(a.status_message)

    await env.until(queued_with_message)
    await asyncio.sleep(0.3)
    got = await env.client.get(execution_id)
    assert got.state == ex.EXECUTION_STATE_RUNNING
    assert "t.add" in got.tasks[0].status_message
    env.worker(HANDLERS)
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED
    assert done.outputs["total"] == expected_total(2)
    await assert_replays(env, execution_id)


async def test_max_parallel_is_respected(env: Env) -> None:
    source = "name: wide\nmax_parallel: 3\ntasks:\n" + "".join(
        f"  - {{id: t{i}, type: t.count}}\n" for i in range(12)
    )
    now = 0
    peak = 0

    async def count(inputs: dict[str, Any]) -> None:
        nonlocal now, peak
        now += 1
        peak = max(peak, now)
        await asyncio.sleep(0.05)
        now -= 1

    env.worker({"t.count": count}, slots=10)
    done = await env.finish(await env.start(source))
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED
    assert peak == 3


async def test_fairness_small_execution_is_not_starved_by_a_big_one(env: Env) -> None:
    big_size = 600
    big = "name: big\ntasks:\n" + "".join(
        f"  - {{id: t{i}, type: t.tick}}\n" for i in range(big_size)
    )
    small = "name: small\ntasks:\n" + "".join(f"  - {{id: s{i}, type: t.tick}}\n" for i in range(3))
    ran = 0

    async def tick(inputs: dict[str, Any]) -> None:
        nonlocal ran
        ran += 1
        await asyncio.sleep(0.002)

    big_id = await env.start(big)
    small_id = await env.start(small)
    env.worker({"t.tick": tick}, slots=1)
    done_small = await env.finish(small_id, within=30)
    ran_when_small_done = ran
    done_big = await env.finish(big_id, within=60)
    assert done_small.state == done_big.state == ex.EXECUTION_STATE_SUCCEEDED
    # Round-robin between executions: the small one needs ~2x its 3 tasks, not the flood.
    assert ran_when_small_done <= 20, ran_when_small_done


async def test_priority_orders_dispatch(env: Env) -> None:
    source = """
name: prio
tasks:
  - {id: low, type: t.rec, priority: 1}
  - {id: high, type: t.rec, priority: 50}
  - {id: mid, type: t.rec, priority: 10}
  - {id: top, type: t.rec, priority: 99}
"""
    order: list[str] = []

    async def rec(inputs: dict[str, Any], ctx: TaskContext) -> None:
        order.append(ctx.task_id)
        await asyncio.sleep(0.01)

    execution_id = await env.start(source)
    env.worker({"t.rec": rec}, slots=1)
    await env.finish(execution_id)
    assert order == ["top", "high", "mid", "low"]


FLAKY = """
name: flaky
tasks:
  - id: a
    type: t.flaky
    retry: {max_attempts: 3, initial_interval: 50ms, backoff_coefficient: 2.0, jitter: 0}
    timeouts: {start_to_close: 400ms}
outputs: {v: "${{ tasks.a.output }}"}
"""


async def test_retries_with_real_timers_then_success(env: Env) -> None:
    async def flaky(inputs: dict[str, Any], ctx: TaskContext) -> int:
        if ctx.attempt < 3:
            raise RuntimeError(f"attempt {ctx.attempt} breaks")
        return ctx.attempt

    env.worker({"t.flaky": flaky})
    execution_id = await env.start(FLAKY)
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED
    assert done.outputs["v"] == 3
    kinds = [e.WhichOneof("kind") for e in await env.history(execution_id)]
    assert kinds.count("task_failed") == 2
    assert kinds.count("task_retry_scheduled") == 2
    assert kinds.count("timer_fired") == 2
    assert [a.attempt for a in done.tasks[0].attempts] == [1, 2, 3]
    assert done.tasks[0].attempts[0].error.type == "RuntimeError"
    await assert_replays(env, execution_id)


async def test_start_to_close_timeout_retries_the_attempt(env: Env) -> None:
    async def sleepy(inputs: dict[str, Any], ctx: TaskContext) -> int:
        if ctx.attempt == 1:
            await asyncio.sleep(3)
        return ctx.attempt

    env.worker({"t.flaky": sleepy})
    execution_id = await env.start(FLAKY)
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED
    assert done.outputs["v"] == 2
    events = await env.history(execution_id)
    timed_out = [e.task_timed_out for e in events if e.HasField("task_timed_out")]
    assert len(timed_out) == 1
    assert timed_out[0].timeout == events_pb2.TIMEOUT_KIND_START_TO_CLOSE
    assert not timed_out[0].final


async def test_non_retryable_error_from_a_worker_fails_at_once(env: Env) -> None:
    async def fatal(inputs: dict[str, Any]) -> None:
        raise NonRetryableError("card declined")

    env.worker({"t.flaky": fatal})
    execution_id = await env.start(FLAKY)
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_FAILED
    assert done.error.type == "NonRetryableError"
    assert done.tasks[0].state == ex.TASK_STATE_FAILED
    assert len(done.tasks[0].attempts) == 1
