"""The executor on the PostgreSQL store: an in-process server (`--store postgresql://`
as `execplan serve` builds it), an SDK worker, a small workflow end to end; then a
second server on the same database sees what the first one committed."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import grpc
from execplan.cli.serve import config_from_args, register
from execplan.client import ExecutorClient, from_struct
from execplan.server import ExecutorComponent, build_components
from execplan.store.postgres import PostgresStore
from execplan.v1 import execution_pb2 as ex
from execplan.worker import SubPlan, Worker

from .pg import pg_dsn, pg_server

if TYPE_CHECKING:
    from tests.support.server import FAST, finish, serving, stop_worker
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support.server import FAST, finish, serving, stop_worker

__all__ = ["pg_dsn", "pg_server"]  # fixtures, imported for pytest

DIAMOND = """
name: diamond
inputs: {x: {type: integer, required: true}}
tasks:
  - {id: a, type: t.add, inputs: {v: "${{ workflow.inputs.x }}", k: 1}}
  - {id: b, type: t.add, depends_on: [a], inputs: {v: "${{ tasks.a.output.v }}", k: 10}}
  - {id: c, type: t.add, depends_on: [a], inputs: {v: "${{ tasks.a.output.v }}", k: 100}}
  - {id: d, type: t.sum, inputs: {vs: ["${{ tasks.b.output.v }}", "${{ tasks.c.output.v }}"]}}
outputs: {total: "${{ tasks.d.output.v }}"}
"""


async def add(inputs: dict[str, Any]) -> dict[str, Any]:
    return {"v": inputs["v"] + inputs["k"]}


async def total(inputs: dict[str, Any]) -> dict[str, Any]:
    return {"v": sum(inputs["vs"])}


def test_serve_store_option_reaches_the_executor(pg_dsn: str) -> None:
    import argparse  # noqa: PLC0415

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    config = config_from_args(parser.parse_args(["serve", "--store", pg_dsn]))
    assert config.db_path == pg_dsn
    (executor, *_) = build_components(config)
    assert isinstance(executor, ExecutorComponent)
    assert isinstance(executor.store, PostgresStore)
    default = config_from_args(parser.parse_args(["serve", "--db", "x.db"]))
    assert default.db_path == "x.db"


async def test_workflow_end_to_end_on_postgres(pg_dsn: str) -> None:
    async with serving(pg_dsn, FAST) as (server, executor):
        assert isinstance(executor.store, PostgresStore)
        worker = Worker(server.address, slots=8)
        worker.task("t.add")(add)
        worker.task("t.sum")(total)
        serving_task = asyncio.create_task(worker.serve())
        channel = grpc.aio.insecure_channel(server.address)
        try:
            client = ExecutorClient(channel=channel)
            ids = [
                (await client.start(source=DIAMOND, inputs={"x": x})).execution_id for x in range(5)
            ]
            for x, execution_id in enumerate(ids):
                done = await finish(client, execution_id, within=20)
                assert done.state == ex.EXECUTION_STATE_SUCCEEDED, done.error
                assert done.outputs["total"] == (x + 1 + 10) + (x + 1 + 100)
        finally:
            await stop_worker(worker, serving_task)
            await channel.close()

    # Everything acknowledged is in PostgreSQL: a fresh store on the database sees it.
    store = PostgresStore(pg_dsn)
    await store.open()
    try:
        for execution_id in ids:
            rec = await store.get_execution(execution_id)
            assert rec is not None
            assert rec.state == "SUCCEEDED"
            assert len(await store.read_events(execution_id)) == rec.last_sequence
        assert await store.list_active() == []
    finally:
        await store.close()


GROW_CHILD = """
name: pg-child
version: "1"
inputs: {n: {type: integer, required: true}}
tasks:
  - {id: twice, type: t.add, inputs: {v: "${{ workflow.inputs.n }}", k: "${{ workflow.inputs.n }}"}}
outputs: {v: "${{ tasks.twice.output.v }}"}
"""
GROW = """
name: pg-grow
tasks:
  - id: fan
    type: t.add
    for_each: "[1, 2, 3, 4]"
    max_parallel: 2
    inputs: {v: "${{ item }}", k: "${{ index }}"}
  - id: agent
    type: t.agent
    dynamic: true
    inputs: {start: "${{ tasks.fan.output[3].v }}"}
  - id: child
    type: builtin.workflow
    workflow: pg-child@1
    for_each: "[tasks.agent.output.v]"
    inputs: {n: "${{ item }}"}
outputs:
  fan: "${{ tasks.fan.output.map(o, o.v) }}"
  child: "${{ tasks.child.output[0].v }}"
"""


async def agent(inputs: dict[str, Any]) -> SubPlan:
    doc = {
        "name": "pg-sub",
        "inputs": {"start": {"type": "integer", "required": True}},
        "tasks": [
            {"id": "a", "type": "t.add", "inputs": {"v": "${{ workflow.inputs.start }}", "k": 5}}
        ],
        "outputs": {"v": "${{ tasks.a.output.v }}"},
    }
    return SubPlan(doc, inputs={"start": inputs["start"]})


async def test_plans_that_grow_at_runtime_on_postgres(pg_dsn: str) -> None:
    # for_each instances, a sub-plan and a child execution, recorded in PostgreSQL and
    # read back by a second server on the same database (its checkpoint included).
    async with serving(pg_dsn, FAST) as (server, _):
        worker = Worker(server.address, slots=8)
        worker.task("t.add")(add)
        worker.task("t.agent")(agent)
        serving_task = asyncio.create_task(worker.serve())
        try:
            async with ExecutorClient(server.address) as client:
                await client.register(source=GROW_CHILD)
                execution_id = (await client.start(source=GROW)).execution_id
                done = await finish(client, execution_id, within=30)
        finally:
            await stop_worker(worker, serving_task)
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED, done.error
    # fan: 1+0, 2+1, 3+2, 4+3 = [1, 3, 5, 7]; the sub-plan: 7 + 5; the child: 12 + 12.
    assert from_struct(done.outputs) == {"fan": [1, 3, 5, 7], "child": 24}
    async with serving(pg_dsn, FAST) as (server, _), ExecutorClient(server.address) as client:
        again = await client.get(execution_id)
        assert again.state == ex.EXECUTION_STATE_SUCCEEDED
        assert {t.task_id for t in again.tasks} >= {"fan[3]", "agent/a", "child[0]"}
        children = [e async for e in client.list(parent_execution_id=execution_id)]
        assert [c.parent_task_id for c in children] == ["child[0]"]  # from the index row
        child = await client.get(children[0].execution_id)
        assert child.state == ex.EXECUTION_STATE_SUCCEEDED
        assert (child.parent_execution_id, child.parent_task_id) == (execution_id, "child[0]")
        replay = await client.replay(execution_id)
        assert replay.deterministic, replay.divergence
