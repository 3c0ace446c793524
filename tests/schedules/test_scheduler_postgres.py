"""Schedulers of three executor replicas, each with its own PostgresStore on one
database, firing the same slots at the same moments: one run per slot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from execplan.schedules.scheduler import Scheduler
from execplan.schedules.spec import MINUTE
from execplan.store import Append
from execplan.store.postgres import PostgresStore

from .test_scheduler import T0, Clock, Starter, definition, slots_of

if TYPE_CHECKING:
    from tests.store.pg import pg_dsn, pg_server
else:  # tests/ is on sys.path (tests/support/__init__.py)
    from store.pg import pg_dsn, pg_server

__all__ = ["pg_dsn", "pg_server"]  # fixtures, imported for pytest


@pytest.fixture
async def stores(pg_dsn: str) -> AsyncIterator[list[PostgresStore]]:
    opened = [PostgresStore(pg_dsn) for _ in range(3)]
    for store in opened:
        await store.open()
    yield opened
    for store in opened:
        await store.close()


async def test_replicas_on_postgres_start_one_run_per_slot(stores: list[PostgresStore]) -> None:
    clock = Clock()
    replicas = [Scheduler(store, Starter(store), clock=clock) for store in stores]
    await replicas[0].create(definition(overlap="skip"))
    for step in range(1, 6):
        clock.now = T0 + step * MINUTE
        for _ in range(2):
            await asyncio.gather(*(r.tick("every-minute", clock.now) for r in replicas))
        # Each run ends before the next slot, so skip never skips.
        for record in await stores[0].list_executions():
            if record.state == "RUNNING":
                await stores[0].append(
                    [Append(record.execution_id, (), state="SUCCEEDED", updated_at_ms=1)]
                )
    assert await slots_of(stores[0]) == [T0 + m * MINUTE for m in range(1, 6)]
    schedule = await stores[1].get_schedule("every-minute")
    assert schedule is not None and schedule.last_slot_ms == T0 + 5 * MINUTE
