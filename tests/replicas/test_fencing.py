"""Store-level ownership: leases, epoch fencing of appends, takeover (ownership.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from execplan.errors import OwnershipLost
from execplan.store import Append, ExecutionRecord, StoredEvent
from execplan.store.postgres import PostgresStore


def event(execution_id: str, sequence: int) -> StoredEvent:
    return StoredEvent(execution_id, sequence, "k", sequence, f"{execution_id}#{sequence}".encode())


def events(execution_id: str, first: int, last: int) -> tuple[StoredEvent, ...]:
    return tuple(event(execution_id, s) for s in range(first, last + 1))


def record(execution_id: str, state: str = "RUNNING") -> ExecutionRecord:
    return ExecutionRecord(execution_id, "plan-1", "orders", state, 1_000, 1_000, 0)


def sequences(stored: list[StoredEvent]) -> list[int]:
    return [e.sequence for e in stored]


@pytest.fixture
async def two(pg_dsn: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    a, b = PostgresStore(pg_dsn), PostgresStore(pg_dsn)
    await a.open()
    await b.open()
    yield a, b
    await a.close()
    await b.close()


async def test_new_executions_belong_to_their_creator(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two
    await a.register_replica("a", "127.0.0.1:1", 5_000)
    await b.register_replica("b", "127.0.0.1:2", 5_000)
    await a.create_execution(record("x"), events("x", 1, 1))
    assert await a.owner_of("x") == ("a", "127.0.0.1:1")
    assert [r.execution_id for r in await a.list_active()] == ["x"]
    assert await b.list_active() == []
    await a.append([Append("x", (event("x", 2),))])
    with pytest.raises(OwnershipLost) as lost:
        await b.append([Append("x", (event("x", 3),))])
    assert lost.value.execution_ids == ("x",)
    assert sequences(await a.read_events("x")) == [1, 2]
    assert await b.claim_executions(100) == []  # a's lease is live


async def test_a_stale_epoch_cannot_append_and_nothing_is_written(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    old, new = two
    await old.register_replica("r", "h:1", 5_000)
    await old.create_execution(record("x"), events("x", 1, 1))
    await old.create_execution(record("y"), events("y", 1, 1))
    # The same replica id restarts elsewhere: a newer epoch; the old one is fenced.
    await new.register_replica("r", "h:1", 5_000)
    assert not await old.renew_lease(5_000)
    with pytest.raises(OwnershipLost) as lost:
        await old.append([Append("x", (event("x", 2),)), Append("y", (event("y", 2),))])
    assert sorted(lost.value.execution_ids) == ["x", "y"]
    assert sequences(await new.read_events("x")) == [1]
    assert sorted(await new.claim_executions(100)) == ["x", "y"]
    await new.append([Append("x", (event("x", 2),), state="RUNNING", updated_at_ms=5)])
    assert sequences(await new.read_events("x")) == [1, 2]


async def test_an_expired_lease_stops_writes_and_is_taken_over(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two
    await a.register_replica("a", "h:1", 300)
    await b.register_replica("b", "h:2", 5_000)
    await a.create_execution(record("x"), events("x", 1, 1))
    await a.create_execution(record("done", state="SUCCEEDED"), events("done", 1, 1))
    await asyncio.sleep(0.4)
    # Expired but not yet claimed: a may not write any more either.
    with pytest.raises(OwnershipLost):
        await a.append([Append("x", (event("x", 2),))])
    assert not await a.renew_lease(300)
    assert await b.claim_executions(100) == ["x"]  # terminal ones stay put
    assert await b.owner_of("x") == ("b", "h:2")
    await b.append([Append("x", (event("x", 2),))])
    # a comes back with a new epoch: x stays b's.
    await a.register_replica("a", "h:1", 5_000)
    assert await a.claim_executions(100) == []
    with pytest.raises(OwnershipLost):
        await a.append([Append("x", (event("x", 3),))])
    assert sequences(await b.read_events("x")) == [1, 2]


async def test_released_lease_is_claimable_at_once_and_mixed_batches_commit_the_rest(
    two: tuple[PostgresStore, PostgresStore],
) -> None:
    a, b = two
    await a.register_replica("a", "h:1", 60_000)
    await b.register_replica("b", "h:2", 60_000)
    await a.create_execution(record("x"), events("x", 1, 1))
    await a.create_execution(record("z"), events("z", 1, 1))
    await a.release_lease()
    assert await b.claim_executions(1) == ["x"]  # batches of `limit`
    assert await b.claim_executions(1) == ["z"]
    await b.append([Append("x", (event("x", 2),))])
    await a.register_replica("a", "h:1", 60_000)
    await a.create_execution(record("y"), events("y", 1, 1))
    # One batch, one foreign execution: only that one is refused.
    with pytest.raises(OwnershipLost) as lost:
        await a.append([Append("x", (event("x", 3),)), Append("y", (event("y", 2),))])
    assert lost.value.execution_ids == ("x",)
    assert sequences(await a.read_events("y")) == [1, 2]
    assert sequences(await a.read_events("x")) == [1, 2]
