"""Replay: every example's recorded history replays deterministically; an
incompatible candidate plan and a tampered history are reported."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from execplan.cli import main
from execplan.executor.decide.replay import compatibility, replay
from execplan.executor.plan_view import decode_plan
from execplan.planner import compile_source
from execplan.v1 import execution_pb2
from execplan.wire.plan_codec import encode_plan

from .conftest import EXAMPLES, Env

HAPPY: list[tuple[str, dict[str, Any]]] = [
    ("hello.yaml", {"name": "Ada"}),
    ("order_saga.yaml", {"order_id": "o-1"}),
    ("order_saga.yaml", {"order_id": "o-2", "card": "declined"}),
    ("order_saga.yaml", {"order_id": "o-3", "ship_fail": True}),
    ("etl.yaml", {"day": "2026-11-26", "refunds": 0}),
    ("ml_pipeline.yaml", {}),
    ("research_agents.yaml", {"question": "why?"}),  # for_each, repeat, children
    ("research_review.yaml", {"question": "why?"}),  # the child of research_agents
    ("agent_subplan.yaml", {"goal": "ship", "broken_first": True}),  # a repaired sub-plan
    # usage reported before a failure, estimates recorded with dispatches
    ("agent_budget.yaml", {"question": "tides", "flaky": True}),
    # fetch's circuit breaker is shared by these runs (5 failures in a row open it for
    # 10 s): together they fail fetch 3 times, so it stays closed and the test quick.
    ("failure_policies.yaml", {}),  # two retries with backoff
    ("failure_policies.yaml", {"fail_times": 0, "enrich_down": True}),  # fallback
    ("failure_policies.yaml", {"fail_times": 0, "ship_fail": True}),  # Saga
    ("failure_policies.yaml", {"fail_times": 0, "slow_ms": 1500}),  # start_to_close
    ("llm_quota.yaml", {}),
    ("llm_quota.yaml", {"question": "Why is water wet?", "throttle": True}),  # a 429 first
    ("incident_runbook.yaml", {"service": "checkout"}),  # last: approved below
]


def test_every_example_is_covered() -> None:
    assert {p.name for p in EXAMPLES.glob("*.yaml")} <= {name for name, _ in HAPPY}


async def _run_all(env: Env) -> list[str]:
    # research_agents.yaml runs research_review.yaml as a child: registered first.
    review = (EXAMPLES / "research_review.yaml").read_text(encoding="utf-8")
    await env.client.register(source=review)
    ids = [await env.start(name, inputs) for name, inputs in HAPPY]
    runbook = ids[-1]

    async def approve() -> None:
        while True:
            execution = await env.client.get(runbook)
            waiting = [t for t in execution.tasks if t.state == execution_pb2.TASK_STATE_WAITING]
            if waiting:
                await env.client.send_event(runbook, "approved", {"by": "alice", "approve": True})
                return
            await asyncio.sleep(0.02)

    await asyncio.wait_for(approve(), 15)
    for execution_id in ids:
        execution = await env.finish(execution_id)
        assert execution.state in (
            execution_pb2.EXECUTION_STATE_SUCCEEDED,
            execution_pb2.EXECUTION_STATE_COMPENSATED,
        ), (execution.workflow_name, execution.error)
    return ids


async def test_replay_of_every_example_is_deterministic(env: Env) -> None:
    ids = await _run_all(env)
    kinds: set[str] = set()
    for execution_id in ids:
        history = await env.history(execution_id)
        kinds |= {e.WhichOneof("kind") or "" for e in history}
        execution = await env.client.get(execution_id)
        plan = decode_plan(await env.client.get_plan(execution.plan_id))
        result = replay(plan, history)
        assert result.deterministic, (execution.workflow_name, result.divergence)
        assert result.events == len(history)
        # Over the RPC as well.
        response = await env.client.replay(execution_id)
        assert response.deterministic, response.divergence
        assert response.events == len(history)
    # The histories exercised every kind of input and decision that matters here.
    assert {
        "task_timed_out",
        "task_retry_scheduled",
        "timer_fired",
        "external_event_received",
        "compensation_started",
        "task_skipped",
        "task_cancelled",
        "task_expanded",
        "iteration_completed",
        "plan_revised",
        "child_execution_started",
        "child_execution_ended",
    } <= kinds, kinds


async def test_tampered_history_reports_first_divergence(env: Env) -> None:
    execution_id = await env.start("hello.yaml", {"name": "Ada"})
    await env.finish(execution_id)
    history = await env.history(execution_id)
    execution = await env.client.get(execution_id)
    plan = decode_plan(await env.client.get_plan(execution.plan_id))
    queued = next(e for e in history if e.HasField("task_queued") and e.sequence > 1)
    queued.task_queued.attempt = 7
    result = replay(plan, history)
    assert not result.deterministic
    assert result.divergence is not None
    assert result.divergence.sequence == queued.sequence
    assert '"attempt":7' in result.divergence.expected
    assert '"attempt":1' in result.divergence.actual


async def test_incompatible_candidate_plan(env: Env, tmp_path: Any, capsys: Any) -> None:
    execution_id = await env.start("hello.yaml", {"name": "Ada"})
    await env.finish(execution_id)
    history = await env.history(execution_id)
    source = (EXAMPLES / "hello.yaml").read_text(encoding="utf-8")
    execution = await env.client.get(execution_id)
    old = decode_plan(await env.client.get_plan(execution.plan_id))
    # Same plan: compatible. Renamed type of a task that ran: not.
    same = compatibility(old, old, history)
    assert same.compatible, same.incompatibilities
    changed_source = source.replace("type: hello.upper", "type: hello.shout")
    assert changed_source != source
    changed = compile_source(changed_source)
    assert changed.ok and changed.plan is not None
    verdict = compatibility(old, decode_plan(encode_plan(changed.plan)), history)
    assert not verdict.compatible
    assert any("changed type: hello.upper -> hello.shout" in p for p in verdict.incompatibilities)
    # A new root task would have been queued at the start: the replay diverges there.
    extra = source.replace(
        "tasks:\n", "tasks:\n  - id: audit\n    type: hello.greet\n    inputs: {name: x}\n", 1
    )
    added = compile_source(extra)
    assert added.ok and added.plan is not None
    verdict = compatibility(old, decode_plan(encode_plan(added.plan)), history)
    assert not verdict.compatible
    assert verdict.divergence is not None
    assert "audit" in verdict.divergence.actual, verdict.divergence

    # The same through the CLI: exit 1, the reasons printed.
    candidate = tmp_path / "hello_v2.yaml"
    candidate.write_text(changed_source, encoding="utf-8")
    address = env.server.address
    code = await asyncio.to_thread(
        main, ["replay", execution_id, "--plan", str(candidate), "--address", address]
    )
    out = capsys.readouterr().out
    assert code == 1, out
    assert "incompatible" in out and "hello.shout" in out
    code = await asyncio.to_thread(main, ["replay", execution_id, "--address", address])
    assert code == 0
    assert "deterministic" in capsys.readouterr().out
    same_code = await asyncio.to_thread(
        main, ["replay", execution_id, "--plan", execution.plan_id, "--address", address]
    )
    assert same_code == 0


@pytest.mark.parametrize("at", [1, 3])
async def test_time_travel(env: Env, at: int, capsys: Any) -> None:
    execution_id = await env.start("hello.yaml", {"name": "Ada"})
    final = await env.finish(execution_id)
    past = await env.client.get(execution_id, at_sequence=at)
    assert past.last_sequence == at
    assert past.state == execution_pb2.EXECUTION_STATE_RUNNING
    assert final.last_sequence > at
    address = env.server.address
    code = await asyncio.to_thread(
        main, ["get", execution_id, "--at", str(at), "--address", address]
    )
    out = capsys.readouterr().out
    assert code == 0 and f"as of event {at}" in out and "RUNNING" in out
    code = await asyncio.to_thread(main, ["history", execution_id, "--address", address])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and len(lines) == final.last_sequence


async def test_replay_of_an_unknown_execution_is_not_found(env: Env, capsys: Any) -> None:
    address = env.server.address
    code = await asyncio.to_thread(main, ["replay", "nope", "--address", address])
    assert code == 1
    assert "NOT_FOUND" in capsys.readouterr().err


async def test_time_travel_through_a_plan_that_grows(env: Env, capsys: Any) -> None:
    # Before task_expanded there are no instances, after it there are; before
    # plan_revised no sub-plan tasks, after it there are (their plan revision too).
    execution_id = await env.start("agent_subplan.yaml", {"goal": "ship", "broken_first": True})
    final = await env.finish(execution_id)
    assert final.state == execution_pb2.EXECUTION_STATE_SUCCEEDED, final.error
    history = await env.history(execution_id)
    revised = next(e.sequence for e in history if e.HasField("plan_revised"))
    before = await env.client.get(execution_id, at_sequence=revised - 1)
    after = await env.client.get(execution_id, at_sequence=revised)
    assert not any(t.task_id.startswith("improvise/") for t in before.tasks)
    assert [t.task_id for t in after.tasks if t.task_id.startswith("improvise/")] == [
        "improvise/step_0",
        "improvise/step_1",
        "improvise/step_2",
    ]
    assert len(before.plan_revisions) == 0 and len(after.plan_revisions) == 1
    failed = [a for a in before.tasks[0].attempts if a.error.type]
    assert [a.error.type for a in failed] == ["PlanInvalid"]  # the first, repaired answer
    address = env.server.address
    code = await asyncio.to_thread(
        main, ["get", execution_id, "--at", str(revised), "--address", address]
    )
    out = capsys.readouterr().out
    assert code == 0 and f"as of event {revised}" in out and "improvise/step_2" in out

    review = (EXAMPLES / "research_review.yaml").read_text(encoding="utf-8")
    await env.client.register(source=review)
    fan = await env.start("research_agents.yaml", {"question": "why?", "parts": 4})
    assert (await env.finish(fan)).state == execution_pb2.EXECUTION_STATE_SUCCEEDED
    history = await env.history(fan)
    expanded = next(e.sequence for e in history if e.HasField("task_expanded"))
    before = await env.client.get(fan, at_sequence=expanded - 1)
    after = await env.client.get(fan, at_sequence=expanded)
    assert not any(t.task_id.startswith("research[") for t in before.tasks)
    research = next(t for t in after.tasks if t.task_id == "research")
    assert research.instance_count == 4
    instances = [t for t in after.tasks if t.parent_task_id == "research"]
    assert [t.item_index for t in instances] == [0, 1, 2, 3]
    assert all(t.state == execution_pb2.TASK_STATE_PENDING for t in instances)
