"""The worker protocol's edge cases, driven by a raw stream against a real server:
`free_slots`, malformed results, a result before its ack (implied ack), fencing of
heartbeats, the output size limit, and reconciliation of `running` by task type."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from execplan.executor.decide.replay import replay
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import worker_service_pb2 as ws

if TYPE_CHECKING:
    from tests.support.raw_worker import RawWorker
    from tests.support.server import Env
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support.raw_worker import RawWorker
    from support.server import Env

ONE = """
name: one
tasks:
  - {id: a, type: p.work, retry: {max_attempts: 1}}
outputs: {v: "${{ tasks.a.output }}"}
"""


def _registration(worker_id: str, slots: int = 4, **kw: object) -> ws.WorkerRegistration:
    return ws.WorkerRegistration(worker_id=worker_id, task_types=["p.work"], slots=slots, **kw)  # type: ignore[arg-type]


def _result(dispatch: ws.Dispatch, value: str) -> ws.TaskResult:
    result = ws.TaskResult(attempt=dispatch.attempt)
    result.output.string_value = value
    return result


async def _kinds(env: Env, execution_id: str) -> list[str]:
    return [e.WhichOneof("kind") or "" for e in await env.history(execution_id)]


async def _started(env: Env, execution_id: str) -> None:
    """Until the ack is committed (acks ride along with the next commit)."""

    async def committed() -> bool:
        return "task_started" in await _kinds(env, execution_id)

    await env.until(committed)


async def test_free_slots_caps_dispatches_until_the_worker_reports_more(env: Env) -> None:
    async with RawWorker.open(env.channel, _registration("w-status", slots=4)) as raw:
        await raw.registered()
        raw.send(ws.ConnectRequest(status=ws.WorkerStatus(free_slots=0)))
        await asyncio.sleep(0.2)  # the status is applied before anything is queued
        ids = [await env.start(ONE) for _ in range(3)]
        await asyncio.sleep(1.0)
        assert raw.all_dispatches() == []  # four slots registered, none free by its word
        raw.send(ws.ConnectRequest(status=ws.WorkerStatus(free_slots=1)))
        (first,) = await raw.dispatches(1)
        await asyncio.sleep(0.5)
        assert len(raw.all_dispatches()) == 1
        # The result frees the one slot it reported: the next task follows.
        raw.ack(first)
        raw.send(ws.ConnectRequest(results=[_result(first, "ok")]))
        second = (await raw.dispatches(2))[1]
        await asyncio.sleep(0.5)
        assert len(raw.all_dispatches()) == 2
        # Draining wins over free_slots.
        raw.send(ws.ConnectRequest(status=ws.WorkerStatus(free_slots=4, draining=True)))
        raw.ack(second)
        raw.send(ws.ConnectRequest(results=[_result(second, "ok")]))
        await asyncio.sleep(0.5)
        assert len(raw.all_dispatches()) == 2
    done = [await env.client.get(i) for i in ids]
    assert sorted(e.state for e in done).count(ex.EXECUTION_STATE_SUCCEEDED) == 2


async def test_a_result_without_outcome_is_rejected_and_the_lease_stays(env: Env) -> None:
    execution_id = await env.start(ONE)
    async with RawWorker.open(env.channel, _registration("w-malformed")) as raw:
        (dispatch,) = await raw.dispatches(1)
        raw.ack(dispatch)
        raw.send(ws.ConnectRequest(results=[ws.TaskResult(attempt=dispatch.attempt)]))
        (rejection,) = await raw.rejections(1)
        assert rejection.attempt == dispatch.attempt
        assert rejection.reason.startswith("malformed result: set either `output` or `error`")
        view = await env.client.get(execution_id)
        assert view.state == ex.EXECUTION_STATE_RUNNING
        (task,) = view.tasks  # still leased (the ack may not be committed yet)
        assert task.state in (ex.TASK_STATE_DISPATCHED, ex.TASK_STATE_RUNNING)
        raw.send(ws.ConnectRequest(results=[_result(dispatch, "proper")]))
        done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED
    assert done.outputs["v"] == "proper"
    assert "task_failed" not in await _kinds(env, execution_id)


async def test_a_result_before_the_ack_is_an_implied_ack(env: Env) -> None:
    execution_id = await env.start(ONE)
    async with RawWorker.open(env.channel, _registration("w-eager")) as raw:
        (dispatch,) = await raw.dispatches(1)
        raw.send(ws.ConnectRequest(results=[_result(dispatch, "no ack")]))
        done = await env.finish(execution_id)
        await asyncio.sleep(0.2)
        assert raw.all_rejections() == []
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED
    events = await env.history(execution_id)
    kinds = [e.WhichOneof("kind") for e in events]
    assert kinds[kinds.index("task_dispatched") :] == [
        "task_dispatched",
        "task_started",
        "task_succeeded",
        "execution_completed",
    ]
    started = next(e.task_started for e in events if e.HasField("task_started"))
    assert started.worker_id == "w-eager"
    assert started.token == dispatch.attempt.token
    plan = await env.executor.engine.reads.plan_view(done.plan_id)
    assert replay(plan, events).deterministic


async def test_heartbeats_and_results_with_a_forged_token_are_rejected(env: Env) -> None:
    execution_id = await env.start(ONE)
    async with RawWorker.open(env.channel, _registration("w-forger")) as raw:
        (dispatch,) = await raw.dispatches(1)
        raw.ack(dispatch)
        await _started(env, execution_id)
        forged = ws.AttemptRef()
        forged.CopyFrom(dispatch.attempt)
        forged.phase = ex.TASK_PHASE_FALLBACK
        raw.send(ws.ConnectRequest(heartbeats=[ws.TaskHeartbeat(attempt=forged)]))
        stolen = ws.TaskResult(attempt=forged)
        stolen.output.string_value = "forged"
        raw.send(ws.ConnectRequest(results=[stolen]))
        first, second = await raw.rejections(2)
        # Attempt and epoch are right; the message says it is the phase that is not.
        expected = (
            "stale token for a fallback attempt 1 epoch 1 (current: main attempt 1 epoch 1, "
            "RUNNING)"
        )
        assert (first.reason, second.reason) == (expected, expected)
        raw.send(ws.ConnectRequest(results=[_result(dispatch, "real")]))
        done = await env.finish(execution_id)
    assert done.outputs["v"] == "real"


async def test_an_output_over_the_payload_limit_fails_the_attempt(env: Env) -> None:
    execution_id = await env.start(ONE)
    limit = env.executor.engine.config.max_payload_bytes
    async with RawWorker.open(env.channel, _registration("w-big")) as raw:
        registered = await raw.registered()
        assert registered.max_output_bytes == limit
        assert registered.max_message_bytes == 64 * 1024 * 1024
        (dispatch,) = await raw.dispatches(1)
        raw.ack(dispatch)
        raw.send(ws.ConnectRequest(results=[_result(dispatch, "x" * (limit + 1))]))
        done = await env.finish(execution_id)
        assert not raw.ended.is_set()  # the stream lives on
    assert done.state == ex.EXECUTION_STATE_FAILED
    failed = [e.task_failed for e in await env.history(execution_id) if e.HasField("task_failed")]
    assert [(f.error.type, f.error.retryable, f.final) for f in failed] == [
        ("PayloadTooLarge", False, True)
    ]
    assert f"exceeds the limit of {limit}" in failed[0].error.message


async def test_an_error_over_the_payload_limit_is_stored_truncated(env: Env) -> None:
    execution_id = await env.start(ONE)
    limit = env.executor.engine.config.max_payload_bytes
    async with RawWorker.open(env.channel, _registration("w-loud")) as raw:
        (dispatch,) = await raw.dispatches(1)
        error = ex.ErrorInfo(type="Boom", message="e" * limit, retry=ex.ERROR_RETRY_NON_RETRYABLE)
        raw.send(ws.ConnectRequest(results=[ws.TaskResult(attempt=dispatch.attempt, error=error)]))
        await env.finish(execution_id)
    (failed,) = [
        e.task_failed for e in await env.history(execution_id) if e.HasField("task_failed")
    ]
    assert failed.error.type == "Boom"
    size = error.ByteSize()
    assert size > limit
    assert failed.error.message == "e" * 4096 + f" ... (truncated: an error of {size} bytes)"


async def test_a_reconnect_keeps_only_attempts_of_task_types_it_registers(env: Env) -> None:
    execution_id = await env.start(ONE)
    async with RawWorker.open(env.channel, _registration("w-types")) as raw:
        (dispatch,) = await raw.dispatches(1)
        raw.ack(dispatch)
        await _started(env, execution_id)
    # The same worker id comes back registering another type only.
    other = ws.WorkerRegistration(
        worker_id="w-types", task_types=["p.other"], slots=4, running=[dispatch.attempt]
    )
    async with RawWorker.open(env.channel, other) as back:
        registered = await back.registered()
        assert list(registered.revoked) == [dispatch.attempt]

    async def requeued_() -> bool:
        return "task_requeued" in await _kinds(env, execution_id)

    await env.until(requeued_)
    events = await env.history(execution_id)
    requeued = [e.task_requeued for e in events if e.HasField("task_requeued")]
    assert [r.reason for r in requeued] == ["worker restarted"]
    assert requeued[0].token == dispatch.attempt.token
