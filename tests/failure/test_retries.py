"""Retries with backoff, non-retryable errors, fallback and cleanup branches."""

from __future__ import annotations

from collections import Counter
from typing import Any

from execplan.executor.decide.retry import backoff_ms
from execplan.executor.plan_view import RetryView
from execplan.v1 import execution_pb2 as ex
from execplan.worker import NonRetryableError, TaskContext

from .conftest import BACKOFF, RUN, Env, execution_kinds, task_kinds

FLAKY = """
name: flaky
tasks:
  - id: a
    type: t.flaky
    retry: {max_attempts: 4, initial_interval: 20ms, backoff_coefficient: 2.0, jitter: 0.5}
outputs: {v: "${{ tasks.a.output.v }}"}
"""


def fail_times(k: int) -> Any:
    """A handler that fails its first `k` attempts (per execution) and then succeeds."""

    async def handler(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        if ctx.attempt <= k:
            raise RuntimeError(f"flaky attempt {ctx.attempt}")
        return {"v": ctx.attempt}

    return handler


async def test_fail_twice_then_succeed_with_deterministic_backoff(env: Env) -> None:
    env.worker({"t.flaky": fail_times(2)})
    execution_id = await env.start(FLAKY)
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED
    assert done.outputs["v"] == 3
    events = await env.history(execution_id)
    assert task_kinds(events, "a") == [
        *RUN,
        "task_failed",
        *BACKOFF,
        *RUN,
        "task_failed",
        *BACKOFF,
        *RUN,
        "task_succeeded",
    ]
    policy = RetryView(4, 20, 2.0, 0, 0.5, frozenset())
    retries = [e for e in events if e.HasField("task_retry_scheduled")]
    for failed_attempt, event in enumerate(retries, start=1):
        body = event.task_retry_scheduled
        assert body.next_attempt == failed_attempt + 1
        assert f"attempt {failed_attempt} failed" in body.reason
        delay = body.fire_at.ToMilliseconds() - event.recorded_at.ToMilliseconds()
        assert delay == backoff_ms(policy, execution_id, "a", ex.TASK_PHASE_MAIN, failed_attempt)
    failures = [e.task_failed for e in events if e.HasField("task_failed")]
    assert [f.final for f in failures] == [False, False]
    assert [f.token.attempt for f in failures] == [1, 2]
    assert failures[0].error.message == "flaky attempt 1"


async def test_retries_exhausted_fail_the_execution(env: Env) -> None:
    env.worker({"t.flaky": fail_times(10)})
    execution_id = await env.start(FLAKY.replace("max_attempts: 4", "max_attempts: 2"))
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_FAILED
    events = await env.history(execution_id)
    assert task_kinds(events, "a") == [*RUN, "task_failed", *BACKOFF, *RUN, "task_failed"]
    assert [e.task_failed.final for e in events if e.HasField("task_failed")] == [False, True]


async def test_non_retryable_error_fails_at_once(env: Env) -> None:
    async def refuse(inputs: dict[str, Any]) -> None:
        raise NonRetryableError("bad input")

    env.worker({"t.flaky": refuse})
    execution_id = await env.start(FLAKY)
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_FAILED
    events = await env.history(execution_id)
    assert task_kinds(events, "a") == [*RUN, "task_failed"]
    failed = next(e.task_failed for e in events if e.HasField("task_failed"))
    assert failed.final and not failed.error.retryable


NON_RETRYABLE_TYPE = """
name: typed
tasks:
  - id: a
    type: t.typed
    retry: {max_attempts: 5, initial_interval: 10ms, non_retryable_errors: [CardDeclined]}
"""


async def test_non_retryable_error_type_from_the_plan(env: Env) -> None:
    class CardDeclined(Exception):  # retryable as far as the worker knows
        pass

    async def decline(inputs: dict[str, Any]) -> None:
        raise CardDeclined("declined")

    env.worker({"t.typed": decline})
    execution_id = await env.start(NON_RETRYABLE_TYPE)
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_FAILED
    assert await env.kinds(execution_id, "a") == [*RUN, "task_failed"]


FALLBACK = """
name: with-fallback
tasks:
  - id: a
    type: t.primary
    retry: {max_attempts: 2, initial_interval: 10ms}
    fallback: {type: t.backup, inputs: {why: fallback}}
  - {id: b, type: t.echo, depends_on: [a], inputs: {got: "${{ tasks.a.output }}"}}
outputs: {b: "${{ tasks.b.output }}"}
"""


async def test_fallback_output_stands_in_for_the_task(env: Env) -> None:
    async def primary(inputs: dict[str, Any]) -> None:
        raise RuntimeError("primary down")

    async def backup(inputs: dict[str, Any]) -> dict[str, Any]:
        return {"from": "backup", "why": inputs["why"]}

    async def echo(inputs: dict[str, Any]) -> Any:
        return inputs["got"]

    env.worker({"t.primary": primary, "t.backup": backup, "t.echo": echo})
    execution_id = await env.start(FALLBACK)
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED, done.error
    assert done.outputs["b"] == {"from": "backup", "why": "fallback"}
    events = await env.history(execution_id)
    assert task_kinds(events, "a") == [
        *RUN,
        "task_failed",
        *BACKOFF,
        *RUN,
        "task_failed",
        "task_queued:fallback",
        "task_dispatched:fallback",
        "task_started:fallback",
        "task_succeeded:fallback",
    ]
    assert [e.task_failed.final for e in events if e.HasField("task_failed")] == [False, False]


CLEANUP = """
name: cleanup
on_failure: continue
tasks:
  - {id: work, type: t.fail}
  - {id: ok, type: t.ok}
  - {id: on_fail, type: t.ok, depends_on: [work], trigger: all_failed}
  - {id: always, type: t.ok, depends_on: [work, ok], trigger: all_done}
  - {id: next, type: t.ok, depends_on: [work]}
"""


async def test_all_failed_and_all_done_cleanup_branches(env: Env) -> None:
    calls: Counter[str] = Counter()

    async def fail(inputs: dict[str, Any]) -> None:
        raise NonRetryableError("broken")

    async def ok(inputs: dict[str, Any], ctx: TaskContext) -> str:
        calls[ctx.task_id] += 1
        return ctx.task_id

    env.worker({"t.fail": fail, "t.ok": ok})
    execution_id = await env.start(CLEANUP)
    done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_FAILED
    events = await env.history(execution_id)
    assert task_kinds(events, "work") == [*RUN, "task_failed"]
    assert task_kinds(events, "on_fail") == [*RUN, "task_succeeded"]
    assert task_kinds(events, "always") == [*RUN, "task_succeeded"]
    assert task_kinds(events, "next") == ["task_skipped"]
    assert calls == {"ok": 1, "on_fail": 1, "always": 1}
    assert execution_kinds(events) == ["execution_started", "execution_completed"]
