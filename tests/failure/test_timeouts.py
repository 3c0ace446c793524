"""The four timeouts, a worker that stops heartbeating, answers late, or dies."""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import worker_service_pb2 as ws
from execplan.worker import TaskContext
from execplan.worker._stream import StreamThread

from .conftest import BACKOFF, RUN, Env, task_kinds


def _timeouts(events: list[ev.ExecutionEvent]) -> list[tuple[int, bool]]:
    return [
        (e.task_timed_out.timeout, e.task_timed_out.final)
        for e in events
        if e.HasField("task_timed_out")
    ]


HANG = """
name: hang
tasks:
  - id: a
    type: t.hang
    retry: {max_attempts: 2, initial_interval: 10ms}
    timeouts: {start_to_close: 300ms}
outputs: {v: "${{ tasks.a.output }}"}
"""


async def test_start_to_close_cancels_the_attempt_and_retries(env: Env) -> None:
    cancelled: list[int] = []

    async def hang(inputs: dict[str, Any], ctx: TaskContext) -> str:
        if ctx.attempt == 1:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.append(ctx.attempt)
                raise
        return f"attempt {ctx.attempt}"

    env.worker({"t.hang": hang})
    execution_id = await env.start(HANG)
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED
    assert done.outputs["v"] == "attempt 2"
    events = await env.history(execution_id)
    assert task_kinds(events, "a") == [*RUN, "task_timed_out", *BACKOFF, *RUN, "task_succeeded"]
    assert _timeouts(events) == [(ev.TIMEOUT_KIND_START_TO_CLOSE, False)]
    assert cancelled == [1]  # the worker was told to cancel it


async def test_late_answer_is_rejected_by_the_fencing_token(env: Env) -> None:
    second = asyncio.Event()
    release = asyncio.Event()

    async def slow(inputs: dict[str, Any], ctx: TaskContext) -> str:
        if ctx.attempt == 1:
            await asyncio.sleep(30)
        second.set()
        await release.wait()
        return f"attempt {ctx.attempt}"

    env.worker({"t.hang": slow}, worker_id="w-late")
    execution_id = await env.start(HANG)
    async with asyncio.timeout(10):
        await second.wait()
    # Attempt 1 answers now, after its timeout: its token (attempt 1, epoch 1) is stale.
    engine = env.executor.engine
    late = ws.TaskResult(
        attempt=ws.AttemptRef(
            execution_id=execution_id,
            task_id="a",
            phase=ex.TASK_PHASE_MAIN,
            token=ev.AttemptToken(attempt=1, lease_epoch=1),
        )
    )
    late.output.string_value = "late"
    engine.worker_message(engine.workers.workers["w-late"], ws.ConnectRequest(results=[late]))
    await asyncio.sleep(0.2)
    release.set()
    done = await env.finish(execution_id)
    assert done.outputs["v"] == "attempt 2"
    events = await env.history(execution_id)
    assert task_kinds(events, "a") == [*RUN, "task_timed_out", *BACKOFF, *RUN, "task_succeeded"]
    assert [e.task_succeeded.token.attempt for e in events if e.HasField("task_succeeded")] == [2]


HEARTBEAT = """
name: heartbeat
tasks:
  - id: a
    type: t.quiet
    retry: {max_attempts: 2, initial_interval: 10ms}
    timeouts: {heartbeat: 400ms}
"""


async def test_a_worker_that_stops_heartbeating_loses_the_attempt(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(StreamThread, "_queue_heartbeats", lambda self, only_dirty: None)

    async def quiet(inputs: dict[str, Any], ctx: TaskContext) -> int:
        if ctx.attempt == 1:
            await asyncio.sleep(30)
        return ctx.attempt

    env.worker({"t.quiet": quiet})
    execution_id = await env.start(HEARTBEAT)
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED
    events = await env.history(execution_id)
    assert task_kinds(events, "a") == [*RUN, "task_timed_out", *BACKOFF, *RUN, "task_succeeded"]
    assert _timeouts(events) == [(ev.TIMEOUT_KIND_HEARTBEAT, False)]


async def test_heartbeats_keep_a_long_attempt_alive(env: Env) -> None:
    async def long(inputs: dict[str, Any], ctx: TaskContext) -> int:
        await asyncio.sleep(1.0)  # 2.5x the heartbeat timeout; the SDK heartbeats
        return ctx.attempt

    env.worker({"t.quiet": long})
    execution_id = await env.start(HEARTBEAT)
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED
    assert await env.kinds(execution_id, "a") == [*RUN, "task_succeeded"]


NO_WORKER = """
name: unserved
tasks:
  - id: a
    type: t.nobody
    retry: {max_attempts: 2, initial_interval: 10ms}
    timeouts: {schedule_to_start: 200ms}
"""


async def test_schedule_to_start_fails_attempts_nobody_picks_up(env: Env) -> None:
    execution_id = await env.start(NO_WORKER)
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_FAILED
    events = await env.history(execution_id)
    assert task_kinds(events, "a") == [
        "task_queued",
        "task_timed_out",
        *BACKOFF,
        "task_queued",
        "task_timed_out",
    ]
    kind = ev.TIMEOUT_KIND_SCHEDULE_TO_START
    assert _timeouts(events) == [(kind, False), (kind, True)]


TOTAL_BACKOFF = """
name: total
tasks:
  - id: a
    type: t.fail
    retry: {max_attempts: 10, initial_interval: 2s}
    timeouts: {schedule_to_close: 300ms}
"""


async def test_schedule_to_close_during_backoff_gives_up_for_good(env: Env) -> None:
    async def fail(inputs: dict[str, Any]) -> None:
        raise RuntimeError("down")

    env.worker({"t.fail": fail})
    execution_id = await env.start(TOTAL_BACKOFF)
    began = time.monotonic()
    done = await env.finish(execution_id)
    assert time.monotonic() - began < 1.5  # did not wait for the 2 s backoff
    assert done.state == ex.EXECUTION_STATE_FAILED
    events = await env.history(execution_id)
    assert task_kinds(events, "a") == [
        *RUN,
        "task_failed",
        "task_retry_scheduled",
        "timer_scheduled",
        "task_timed_out",
    ]
    assert _timeouts(events) == [(ev.TIMEOUT_KIND_SCHEDULE_TO_CLOSE, True)]


TOTAL_RUNNING = """
name: total-running
tasks:
  - id: a
    type: t.hang
    retry: {max_attempts: 5, initial_interval: 10ms}
    timeouts: {schedule_to_close: 300ms}
"""


async def test_schedule_to_close_while_running_cancels_and_gives_up(env: Env) -> None:
    cancelled = asyncio.Event()

    async def hang(inputs: dict[str, Any]) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    env.worker({"t.hang": hang})
    execution_id = await env.start(TOTAL_RUNNING)
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_FAILED
    events = await env.history(execution_id)
    assert task_kinds(events, "a") == [*RUN, "task_timed_out"]
    assert _timeouts(events) == [(ev.TIMEOUT_KIND_SCHEDULE_TO_CLOSE, True)]
    async with asyncio.timeout(5):
        await cancelled.wait()


CRASH_WORKER = """
import sys, time
from execplan.worker import Worker

worker = Worker(sys.argv[1], worker_id="w-crash", slots=1)

@worker.task("t.crashy")
def crashy(inputs):
    print("started", flush=True)
    time.sleep(60)
    return "never"

print("ready", flush=True)
worker.run()
"""

CRASHY = """
name: crashy
tasks:
  - {id: a, type: t.crashy}
outputs: {v: "${{ tasks.a.output }}"}
"""


async def test_worker_killed_mid_task_the_attempt_is_re_leased(env: Env, tmp_path: Path) -> None:
    script = tmp_path / "crash_worker.py"
    script.write_text(CRASH_WORKER)
    proc = subprocess.Popen(  # noqa: ASYNC220 - the test owns this child and kills it
        [sys.executable, str(script), env.address], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        execution_id = await env.start(CRASHY)
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 15)
        assert line.strip() == "started"
        # The SDK holds an ack back a few ms (for a quick result to carry it): kill
        # the worker once the executor has recorded the start, i.e. mid-task.
        async with asyncio.timeout(10):
            for _ in itertools.count():
                if "task_started" in task_kinds(await env.history(execution_id), "a"):
                    break
                await asyncio.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def survivor(inputs: dict[str, Any], ctx: TaskContext) -> str:
        return f"attempt {ctx.attempt} epoch {ctx.lease_epoch}"

    env.worker({"t.crashy": survivor})
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED
    assert done.outputs["v"] == "attempt 1 epoch 2"  # a recorded re-lease, not a retry
    events = await env.history(execution_id)
    assert task_kinds(events, "a") == [
        *RUN,
        "task_requeued",
        "task_dispatched",
        "task_started",
        "task_succeeded",
    ]


FALLBACK_HANG = """
name: fallback-hang
tasks:
  - id: a
    type: t.broken
    retry: {max_attempts: 1}
    fallback:
      type: t.backup
      retry: {max_attempts: 2, initial_interval: 10ms}
      timeouts: {start_to_close: 300ms}
outputs: {v: "${{ tasks.a.output }}"}
"""


async def test_a_fallback_runs_under_its_own_timeouts(env: Env) -> None:
    def broken(inputs: dict[str, Any]) -> str:
        raise RuntimeError("down")

    async def backup(inputs: dict[str, Any], ctx: TaskContext) -> str:
        if ctx.attempt == 1:
            await asyncio.sleep(30)  # only the fallback's own start_to_close ends this
        return f"backup attempt {ctx.attempt}"

    env.worker({"t.broken": broken, "t.backup": backup})
    execution_id = await env.start(FALLBACK_HANG)
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED
    assert done.outputs["v"] == "backup attempt 2"
    events = await env.history(execution_id)
    timed_out = [e.task_timed_out for e in events if e.HasField("task_timed_out")]
    assert [(t.phase, t.timeout) for t in timed_out] == [
        (ex.TASK_PHASE_FALLBACK, ev.TIMEOUT_KIND_START_TO_CLOSE)
    ]
