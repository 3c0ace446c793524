"""A replica that loses its lease stops writing, drops its executions, registers a new
epoch and (the old owner being dead) claims them back; plus the serve options."""

from __future__ import annotations

import argparse
import asyncio

from execplan.cli.serve import config_from_args, register
from execplan.client import ExecutorClient
from execplan.server import ExecutorComponent, build_components
from execplan.store.postgres import PostgresStore
from execplan.v1 import execution_pb2 as ex
from execplan.worker import Worker

from .test_routing import CHAIN, inc, replica


async def test_a_fenced_replica_disowns_then_reclaims_under_a_new_epoch(pg_dsn: str) -> None:
    async with replica(pg_dsn, "a") as server:
        (executor,) = [c for c in server.components if isinstance(c, ExecutorComponent)]
        store = executor.store
        assert executor.replica is not None and isinstance(store, PostgresStore)
        assert store.owner is not None
        first_epoch = store.owner.epoch
        client = ExecutorClient(server.address)
        thief = PostgresStore(pg_dsn)
        await thief.open()
        try:
            eid = (await client.start(source=CHAIN, inputs={"x": 1})).execution_id
            # Another process registers the same replica id: a newer epoch fences us.
            await thief.register_replica("a", "elsewhere:1", 60_000)
            await thief.release_lease()  # ... and vanishes at once
            worker = Worker(server.address, slots=2)
            worker.task("t.inc")(inc)
            serving = asyncio.create_task(worker.serve())
            try:
                async with asyncio.timeout(15):
                    async for _ in client.watch(eid):
                        pass
            finally:
                await worker.stop()
                await serving
            execution = await client.get(eid)
            assert execution.state == ex.EXECUTION_STATE_SUCCEEDED
            assert execution.outputs["v"] == 3
            assert store.owner.epoch >= first_epoch + 2  # re-registered
            assert executor.replica.claimed >= 1
            history = [e.WhichOneof("kind") async for e in client.history(eid)]
            assert history.count("task_succeeded") == 2
        finally:
            await thief.close()
            await client.close()


def test_serve_replica_options(pg_dsn: str) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = ["serve", "--store", pg_dsn, "--replica-id", "exec-a", "--advertise", "10.0.0.5:7070"]
    config = config_from_args(parser.parse_args([*args, "--lease", "7"]))
    assert (config.replica_id, config.advertise, config.lease_seconds) == (
        "exec-a",
        "10.0.0.5:7070",
        7.0,
    )
    (executor, *_) = build_components(config)
    assert isinstance(executor, ExecutorComponent) and executor.replica is not None
    assert executor.replica.config.replica_id == "exec-a"
    assert executor.replica.config.advertise == "10.0.0.5:7070"
    assert executor.replica.config.lease_ms == 7_000
    sqlite = build_components(config_from_args(parser.parse_args(["serve", "--db", "x.db"])))
    assert isinstance(sqlite[0], ExecutorComponent) and sqlite[0].replica is None
