"""Usage and budgets through a real server and the Python SDK (docs/usage.md).

Usage of failed, timed-out and retried attempts counts; usage beside an output counts;
a report sent twice counts once; a budget holds the next dispatch back (pause, or
fail by policy) and no attempt is dispatched past it; raising the budget and resuming
completes; the runaway cap on attempts; the history replays deterministically and
GetUsage agrees with the execution's own totals."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from execplan.client import FailedPreconditionError, InvalidArgumentError
from execplan.usage import Budget
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import worker_service_pb2 as ws
from execplan.worker import Output, TaskContext
from google.protobuf import struct_pb2

from tests.support.raw_worker import RawWorker
from tests.support.server import FAST, Env, environment

RETRIES = """
name: usage-retries
tasks:
  - id: ask
    type: u.ask
    retry: {max_attempts: 3, initial_interval: 10ms, jitter: 0}
"""


def _counters(message: Any) -> dict[str, float]:
    return dict(message.counters)


async def test_usage_of_failed_and_retried_attempts_is_counted(tmp_path: Path) -> None:
    async with environment(Env, tmp_path) as env:

        async def ask(inputs: dict[str, Any], ctx: TaskContext) -> Any:
            ctx.usage(tokens_in=100, tokens_out=20, cost=0.25)
            if ctx.attempt < 3:
                raise RuntimeError(f"flaky {ctx.attempt}")
            return Output({"answer": 42}, usage={"cost": 0.5, "searches": 2})

        env.worker({"u.ask": ask})
        execution = await env.finish(await env.start(RETRIES))
        assert execution.state == ex.EXECUTION_STATE_SUCCEEDED, execution.error
        expected = {"tokens_in": 300.0, "tokens_out": 60.0, "cost": 1.25, "searches": 2.0}
        assert _counters(execution.usage) == expected
        (task,) = execution.tasks
        assert _counters(task.usage) == expected
        per_attempt = [_counters(a.usage) for a in task.attempts]
        assert per_attempt[0] == {"tokens_in": 100.0, "tokens_out": 20.0, "cost": 0.25}
        assert per_attempt[2]["cost"] == 0.75 and per_attempt[2]["searches"] == 2.0
        events = await env.history(execution.execution_id)
        reports = [e.task_usage for e in events if e.HasField("task_usage")]
        assert [r.report for r in reports] == [1, 1, 1, 0]  # the last came with the result
        # The first attempt's usage was recorded before its failure.
        kinds = [e.WhichOneof("kind") for e in events]
        assert kinds.index("task_usage") < kinds.index("task_failed")
        totals = await env.client.usage(execution_id=execution.execution_id)
        assert _counters(totals.usage) == expected and totals.executions == 1
        by_workflow = await env.client.usage(workflow_name="usage-retries")
        assert _counters(by_workflow.usage) == expected
        replayed = await env.client.replay(execution.execution_id)
        assert replayed.deterministic, replayed.divergence


TIMES_OUT = """
name: usage-timeout
tasks:
  - id: slow
    type: u.slow
    timeouts: {start_to_close: 400ms}
    retry: {max_attempts: 2, initial_interval: 10ms}
"""


async def test_usage_of_an_attempt_that_times_out_is_counted(tmp_path: Path) -> None:
    async with environment(Env, tmp_path) as env:

        async def slow(inputs: dict[str, Any], ctx: TaskContext) -> Any:
            ctx.usage(cost=1.0)
            if ctx.attempt == 1:
                await asyncio.sleep(5)  # past start_to_close: cancelled
            return {"ok": True}

        env.worker({"u.slow": slow})
        execution = await env.finish(await env.start(TIMES_OUT))
        assert execution.state == ex.EXECUTION_STATE_SUCCEEDED, execution.error
        assert _counters(execution.usage) == {"cost": 2.0}
        first = execution.tasks[0].attempts[0]
        assert first.error.type == "Timeout" and _counters(first.usage) == {"cost": 1.0}


FAN = """
name: usage-fan
max_parallel: 10
budget: {cost: 5}
tasks:
""" + "".join(f"  - {{id: t{i}, type: u.spend, estimate: {{cost: 1}}}}\n" for i in range(10))


async def test_a_budget_pauses_the_fan_out_and_raise_and_resume_completes(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with environment(Env, tmp_path) as env:
        running: list[str] = []

        async def spend(inputs: dict[str, Any], ctx: TaskContext) -> Any:
            running.append(ctx.task_id)
            ctx.usage(cost=1.0)
            await release.wait()
            return {"done": ctx.task_id}

        env.worker({"u.spend": spend}, slots=10)
        execution_id = await env.start(FAN)

        async def paused() -> bool:
            got = await env.client.get(execution_id)
            return got.state == ex.EXECUTION_STATE_PAUSED

        await env.until(paused)
        held = await env.client.get(execution_id)
        # Five estimates of 1 fill the budget of 5: the sixth is held back.
        dispatched = [t for t in held.tasks if t.attempts]
        assert len(dispatched) == 5
        assert held.budget_exceeded.counter == "cost"
        assert held.budget_exceeded.limit == 5.0
        assert held.budget_exceeded.estimate == 1.0
        assert "BudgetExceeded" not in held.budget_exceeded.message
        assert "would exceed the budget of 5" in held.budget_exceeded.message
        release.set()

        async def reported() -> bool:
            got = await env.client.get(execution_id)
            return sum(1 for t in got.tasks if t.state == ex.TASK_STATE_SUCCEEDED) == 5

        await env.until(reported)
        got = await env.client.get(execution_id)
        assert got.state == ex.EXECUTION_STATE_PAUSED  # nothing goes while it is paused
        assert _counters(got.usage) == {"cost": 5.0} and not got.reserved.counters
        changed = await env.client.set_budget(execution_id, cost=20, resume=True)
        assert changed.budget.cost == 20.0
        done = await env.finish(execution_id)
        assert done.state == ex.EXECUTION_STATE_SUCCEEDED, done.error
        assert _counters(done.usage) == {"cost": 10.0}
        assert done.budget.cost == 20.0 and not done.HasField("budget_exceeded")
        events = await env.history(execution_id)
        kinds = [e.WhichOneof("kind") for e in events]
        pause = kinds.index("execution_paused")
        resumed = kinds.index("execution_resumed")
        assert "task_dispatched" not in kinds[pause:resumed]  # none past the budget
        assert kinds.index("budget_changed") < resumed
        reason = events[pause].execution_paused.reason
        assert reason.startswith("BudgetExceeded: cost ") and reason.endswith("budget of 5")
        replayed = await env.client.replay(execution_id)
        assert replayed.deterministic, replayed.divergence


async def test_resuming_without_raising_pauses_again(tmp_path: Path) -> None:
    source = (
        "name: once\nbudget: {cost: 1}\ntasks:\n"
        "  - {id: a, type: u.one}\n  - {id: b, type: u.one, depends_on: [a]}\n"
    )
    async with environment(Env, tmp_path) as env:

        async def one(inputs: dict[str, Any], ctx: TaskContext) -> Any:
            ctx.usage(cost=1.0)
            return {}

        env.worker({"u.one": one})
        execution_id = await env.start(source)

        async def paused() -> bool:
            return (await env.client.get(execution_id)).state == ex.EXECUTION_STATE_PAUSED

        await env.until(paused)
        await env.client.resume(execution_id)
        await env.until(paused)
        events = await env.history(execution_id)
        pauses = [e for e in events if e.HasField("execution_paused")]
        assert len(pauses) == 2
        assert pauses[1].execution_paused.budget_exceeded.message == (
            "cost 1 spent has reached the budget of 1; b is not dispatched"
        )
        assert sum(1 for e in events if e.HasField("task_dispatched")) == 1
        await env.client.set_budget(execution_id, cost=2, resume=True)
        done = await env.finish(execution_id)
        assert done.state == ex.EXECUTION_STATE_SUCCEEDED


FAIL_POLICY = """
name: usage-fail
budget: {cost: 1.5, on_exceeded: fail}
tasks:
  - {id: a, type: u.one}
  - {id: b, type: u.one, depends_on: [a], estimate: {cost: 1}}
"""


async def test_a_budget_that_fails_fails_the_task_held_back(tmp_path: Path) -> None:
    async with environment(Env, tmp_path) as env:

        async def one(inputs: dict[str, Any], ctx: TaskContext) -> Any:
            ctx.usage(cost=1.0)
            return {}

        env.worker({"u.one": one})
        done = await env.finish(await env.start(FAIL_POLICY))
        assert done.state == ex.EXECUTION_STATE_FAILED
        b = next(t for t in done.tasks if t.task_id == "b")
        assert b.error.type == "BudgetExceeded" and not b.error.retryable
        assert b.error.message == (
            "cost 1 spent + 1 estimated for b would exceed the budget of 1.5"
        )
        assert not b.attempts  # never dispatched


TASK_BUDGET = """
name: usage-task-budget
tasks:
  - id: a
    type: u.flaky
    budget: {cost: 2.5, on_exceeded: fail}
    retry: {max_attempts: 10, initial_interval: 10ms, jitter: 0}
"""


async def test_a_task_budget_covers_its_retries(tmp_path: Path) -> None:
    async with environment(Env, tmp_path) as env:

        async def flaky(inputs: dict[str, Any], ctx: TaskContext) -> Any:
            ctx.usage(cost=1.0)
            raise RuntimeError("try again")

        env.worker({"u.flaky": flaky})
        done = await env.finish(await env.start(TASK_BUDGET))
        (a,) = done.tasks
        assert a.state == ex.TASK_STATE_FAILED and a.error.type == "BudgetExceeded"
        assert len(a.attempts) == 3  # 1 + 1 + 1 reached 2.5 only after the third
        assert "the budget of a of 2.5" in a.error.message


CAPPED = """
name: usage-cap
tasks:
  - {id: a, type: u.fails, retry: {max_attempts: 20, initial_interval: 5ms, jitter: 0}}
"""


async def test_the_attempt_cap_stops_a_runaway_retry_loop(tmp_path: Path) -> None:
    engine = dataclasses.replace(FAST, max_attempts_per_execution=3)
    async with environment(Env, tmp_path, engine) as env:

        async def fails(inputs: dict[str, Any], ctx: TaskContext) -> Any:
            raise RuntimeError("no")

        env.worker({"u.fails": fails})
        done = await env.finish(await env.start(CAPPED))
        (a,) = done.tasks
        assert len(a.attempts) == 4  # one per task of the plan, and 3 more
        assert a.error.type == "TooManyAttempts"
        assert a.error.message == (
            "the execution has dispatched 4 attempts, the most this server allows it: one "
            "per task of its plan (1) and 3 more (execplan serve --max-attempts-per-execution)"
        )
        events = await env.history(done.execution_id)
        assert events[0].execution_started.caps.max_attempts == 4


async def test_a_server_default_budget_applies_limit_by_limit(tmp_path: Path) -> None:
    engine = dataclasses.replace(FAST, default_budget=Budget.of({"cost": 3.0, "tokens": 100.0}))
    source = "name: dflt\nbudget: {cost: 7}\ntasks:\n  - {id: a, type: u.ok}\n"
    async with environment(Env, tmp_path, engine) as env:
        env.worker({"u.ok": lambda inputs: {}})
        done = await env.finish(await env.start(source))
        assert (done.budget.cost, done.budget.tokens) == (7.0, 100.0)
        plain = await env.finish(await env.start("name: none\ntasks:\n  - {id: a, type: u.ok}\n"))
        assert (plain.budget.cost, plain.budget.tokens) == (3.0, 100.0)


async def test_set_budget_checks_its_request_and_the_execution(tmp_path: Path) -> None:
    async with environment(Env, tmp_path) as env:
        env.worker({"u.ok": lambda inputs: {}})
        done = await env.finish(await env.start("name: s\ntasks:\n  - {id: a, type: u.ok}\n"))
        with pytest.raises(FailedPreconditionError, match="SUCCEEDED"):
            await env.client.set_budget(done.execution_id, cost=5)
        with pytest.raises(InvalidArgumentError, match="negative"):
            await env.client.set_budget(done.execution_id, cost=-1)
        with pytest.raises(InvalidArgumentError, match="sets nothing"):
            await env.client.set_budget(done.execution_id)


async def test_reports_over_the_protocol_count_once_and_only_for_their_worker(
    tmp_path: Path,
) -> None:
    """What a worker without an SDK sees: each report acknowledged after it is durable;
    a report sent again (after a reconnect) counted once; another worker's, a malformed
    one and one for an ended execution refused; a report after the attempt's result
    still counted while the execution runs."""
    source = (
        "name: raw-usage\ntasks:\n  - {id: a, type: r.a}\n  - {id: b, type: r.b, depends_on: [a]}\n"
    )
    async with environment(Env, tmp_path) as env:
        registration = ws.WorkerRegistration(worker_id="raw-1", task_types=["r.a", "r.b"], slots=2)
        other = ws.WorkerRegistration(worker_id="raw-2", task_types=["r.z"], slots=1)
        async with (
            RawWorker.open(env.channel, registration) as raw,
            RawWorker.open(env.channel, other) as stranger,
        ):
            await raw.registered()
            await stranger.registered()
            execution_id = await env.start(source)
            (dispatch,) = await raw.dispatches(1)
            raw.ack(dispatch)

            def report(n: int, cost: float) -> ws.UsageReport:
                return ws.UsageReport(
                    attempt=dispatch.attempt, sequence=n, usage=ex.Usage(counters={"cost": cost})
                )

            def acks(worker: RawWorker) -> list[ws.UsageAck]:
                return [a for r in worker.responses for a in r.usage_acks]

            raw.send(ws.ConnectRequest(usage=[report(1, 1.0), report(2, 0.5)]))
            raw.send(ws.ConnectRequest(usage=[report(1, 1.0)]))  # sent again
            stranger.send(ws.ConnectRequest(usage=[report(3, 100.0)]))
            bad = ws.UsageReport(
                attempt=dispatch.attempt, sequence=4, usage=ex.Usage(counters={"Cost": 1.0})
            )
            raw.send(ws.ConnectRequest(usage=[bad]))
            await raw.wait(lambda: len(acks(raw)) == 4)
            await stranger.wait(lambda: acks(stranger))
            assert [(a.sequence, a.recorded) for a in acks(raw)] == [
                (1, True),
                (2, True),
                (1, True),
                (4, False),
            ]
            assert "malformed usage" in acks(raw)[3].reason
            (refused,) = acks(stranger)
            assert not refused.recorded
            assert refused.reason == "not an attempt leased to this worker"
            # The result, then a late report of the same attempt: it still counts.
            raw.send(
                ws.ConnectRequest(
                    results=[ws.TaskResult(attempt=dispatch.attempt, output=struct_pb2.Value())]
                )
            )
            second = (await raw.dispatches(2))[1]
            raw.send(ws.ConnectRequest(usage=[report(3, 0.25)]))
            await raw.wait(lambda: len(acks(raw)) == 5)
            assert acks(raw)[4].recorded
            raw.ack(second)
            raw.send(
                ws.ConnectRequest(
                    results=[ws.TaskResult(attempt=second.attempt, output=struct_pb2.Value())]
                )
            )
            done = await env.finish(execution_id)
            assert _counters(done.usage) == {"cost": 1.75}
            raw.send(ws.ConnectRequest(usage=[report(5, 9.0)]))  # the execution has ended
            await raw.wait(lambda: len(acks(raw)) == 6)
            assert not acks(raw)[5].recorded
            assert _counters((await env.client.get(execution_id)).usage) == {"cost": 1.75}
