"""Child workflows across replicas: three replica processes on one PostgreSQL, parents
that run one child execution per item (builtin.workflow + for_each), the replica
that started them SIGKILLed while the children run. The survivors adopt parents and
children (not necessarily the same survivor for a parent and its children): every
parent completes with its children's outputs, each child task is started once, and
no child is started twice (docs/runtime-plans.md, docs/replicas.md)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from execplan.client import ExecutorClient, from_struct
from execplan.v1 import execution_pb2 as ex

from .cluster import DIAMOND, ReplicaCluster, expected_total

PARENT = """
name: fan-children
tasks:
  - id: each
    type: builtin.workflow
    workflow: diamond
    for_each: "[1, 2, 3, 4]"
    inputs: {x: "${{ item }}"}
outputs:
  totals: "${{ tasks.each.output.map(o, o.total) }}"
"""
PARENTS = 6


@pytest.fixture
def cluster(tmp_path: Path, pg_dsn: str) -> Iterator[ReplicaCluster]:
    cluster = ReplicaCluster(tmp_path, pg_dsn, 3)
    try:
        yield cluster
    finally:
        cluster.close()


async def test_children_and_parents_survive_the_replica_that_started_them(
    cluster: ReplicaCluster, tmp_path: Path
) -> None:
    cluster.start_replicas()
    cluster.start_worker("w1", slots=16, delay=0.3, starts=tmp_path / "starts.log")
    clients = [ExecutorClient(address) for address in cluster.addresses]
    try:
        await clients[1].register(source=DIAMOND)
        started = [(await clients[1].start(source=PARENT)).execution_id for _ in range(PARENTS)]
        await asyncio.sleep(1.0)  # children started on replica 1, their tasks running
        before = [await clients[1].get(execution_id) for execution_id in started]
        running = [e for e in before if e.state == ex.EXECUTION_STATE_RUNNING]
        assert running, "every parent finished before the kill: nothing was tested"
        assert any(t.child_execution_id for e in running for t in e.tasks)
        cluster.kill(1)
        survivor = clients[0]
        deadline = time.monotonic() + 90
        done: dict[str, ex.Execution] = {}
        while len(done) < PARENTS and time.monotonic() < deadline:
            for execution_id in started:
                if execution_id not in done:
                    execution = await survivor.get(execution_id)
                    if execution.state != ex.EXECUTION_STATE_RUNNING:
                        done[execution_id] = execution
            await asyncio.sleep(0.5)
        assert len(done) == PARENTS, f"{PARENTS - len(done)} parents did not finish"
        expected = [expected_total(x) for x in (1, 2, 3, 4)]
        for execution_id, execution in done.items():
            assert execution.state == ex.EXECUTION_STATE_SUCCEEDED, execution.error
            assert from_struct(execution.outputs) == {"totals": expected}
            children = [c async for c in survivor.list(parent_execution_id=execution_id)]
            assert sorted(c.parent_task_id for c in children) == [f"each[{i}]" for i in range(4)]
            events = [e async for e in survivor.history(execution_id)]
            starts = Counter(
                e.child_execution_started.task_id
                for e in events
                if e.HasField("child_execution_started")
            )
            assert starts == {f"each[{i}]": 1 for i in range(4)}, starts
    finally:
        for client in clients:
            await client.close()
