"""ListPlans and ListWorkers through the Python client and `execplan plans|workers`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from execplan.cli import main
from execplan.v1 import executor_service_pb2

if TYPE_CHECKING:
    from tests.support.server import Env, environment
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support.server import Env, environment

FLOW = """
name: {name}
version: "{version}"
tasks:
  - id: a
    type: inv.echo
  - id: b
    type: inv.echo
    depends_on: [a]
"""


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with environment(Env, tmp_path) as environment_:
        yield environment_


async def test_list_plans_newest_first_by_workflow_and_paged(env: Env) -> None:
    ids = []
    for name, version in (("inv-a", "1"), ("inv-b", "1"), ("inv-a", "2")):
        plan = await env.client.compile(FLOW.format(name=name, version=version))
        assert await env.client.register_plan(plan) == plan.plan_id
        ids.append(plan.plan_id)
        await asyncio.sleep(0.005)  # distinct registration times
    # Registering again (or starting an execution of it) keeps the first time.
    await env.client.register_plan(await env.client.get_plan(ids[0]))
    listed = [p async for p in env.client.list_plans(page_size=1)]
    assert [p.plan_id for p in listed] == ids[::-1]
    assert [(p.workflow_name, p.workflow_version, p.node_count) for p in listed] == [
        ("inv-a", "2", 2), ("inv-b", "1", 2), ("inv-a", "1", 2)
    ]  # fmt: skip
    assert listed[0].registered_at.ToMilliseconds() >= listed[1].registered_at.ToMilliseconds()
    only_a = [p.plan_id async for p in env.client.list_plans("inv-a")]
    assert only_a == [ids[2], ids[0]]
    assert len([p async for p in env.client.list_plans(page_size=5000)]) == 3  # served as 1000
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await env.stub.ListPlans(executor_service_pb2.ListPlansRequest(page_token="nope!"))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in (bad.value.details() or "")


async def test_list_workers_shows_slots_in_use(env: Env) -> None:
    release = asyncio.Event()

    async def hold(inputs: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return {}

    env.worker({"inv.echo": hold}, slots=3, worker_id="w-inv")
    await env.until(lambda: _workers(env))
    execution_id = await env.start(FLOW.format(name="inv-run", version="1"))

    async def busy() -> bool:
        (worker,) = await env.client.list_workers(["inv.echo"])
        return worker.slots_in_use == 1

    await env.until(busy)
    (worker,) = await env.client.list_workers()
    assert (worker.worker_id, list(worker.task_types), worker.slots) == ("w-inv", ["inv.echo"], 3)
    assert worker.sdk and worker.connected_at.seconds and worker.last_seen_at.seconds
    assert await env.client.list_workers(["inv.other"]) == []
    release.set()
    await env.finish(execution_id)


async def _workers(env: Env) -> bool:
    return bool(await env.client.list_workers())


async def test_cli_plans_and_workers(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    plan = await env.client.compile(FLOW.format(name="inv-cli", version="7"))
    await env.client.register_plan(plan)
    env.worker({"inv.echo": lambda inputs: {}}, slots=2, worker_id="w-cli")
    await env.until(lambda: _workers(env))

    assert await asyncio.to_thread(main, ["plans", "--address", env.address]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["WORKFLOW", "VERSION", "TASKS", "STORED", "PLAN"]
    assert lines[1].split()[:3] == ["inv-cli", "7", "2"] and plan.plan_id in lines[1]
    args = ["plans", "--address", env.address, "--format", "json", "--workflow", "inv-cli"]
    assert await asyncio.to_thread(main, args) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["planId"] == plan.plan_id and listed["nodeCount"] == 2

    assert await asyncio.to_thread(main, ["workers", "--address", env.address]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["WORKER", "SLOTS", "TYPES", "LABELS", "LAST", "SEEN", "SDK"]
    assert lines[1].split()[:4] == ["w-cli", "0/2", "inv.echo", "-"]
    assert (
        await asyncio.to_thread(main, ["workers", "--address", env.address, "--format", "json"])
        == 0
    )
    (worker,) = json.loads(capsys.readouterr().out)
    assert worker["workerId"] == "w-cli" and worker["slots"] == 2
