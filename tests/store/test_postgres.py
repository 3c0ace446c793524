"""The store contract against PostgresStore (a real server, see `pg.py`), plus what
only PostgreSQL has: group commit into multi-row statements, advisory-locked
migrations, and a second process writing the same execution."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from execplan.errors import ConcurrencyConflict, StoreError
from execplan.flow import rates
from execplan.store import Append, Store, open_store
from execplan.store.flow import SERVER, SlotRequest, TakeRequest, Use
from execplan.store.postgres import PostgresStore, writes
from execplan.store.postgres.schema import LATEST_VERSION, MIGRATIONS, migrate
from execplan.store.postgres.writer import GroupCommitWriter

from .contract import StoreContract, event, events, record, sequences, started
from .ops_contract import OpsContract
from .pg import PgServer, pg_dsn, pg_server

__all__ = ["pg_dsn", "pg_server"]  # fixtures, imported for pytest


class TestPostgresStore(StoreContract, OpsContract):
    @pytest.fixture
    async def store(self, pg_dsn: str) -> AsyncIterator[Store]:
        store = PostgresStore(pg_dsn)
        await store.open()
        yield store
        await store.close()


@pytest.fixture
async def pg_store(pg_dsn: str) -> AsyncIterator[PostgresStore]:
    store = PostgresStore(pg_dsn)
    await store.open()
    yield store
    await store.close()


def test_open_store_builds_postgres_store() -> None:
    for url in ("postgresql://u@h:5432/db", "postgres://u@h/db"):
        store = open_store(url)
        assert isinstance(store, PostgresStore)
        assert store.dsn == url


async def test_concurrent_appends_are_grouped_into_one_transaction(
    pg_store: PostgresStore,
) -> None:
    ids = [f"g{i:03}" for i in range(200)]
    for execution_id in ids:
        await started(pg_store, execution_id)
    before = pg_store.stats.transactions

    await asyncio.gather(*(pg_store.append([Append(i, events(i, 2, 3))]) for i in ids))

    assert pg_store.stats.transactions - before == 1
    assert pg_store.stats.largest_group == 200
    for execution_id in ids:
        assert sequences(await pg_store.read_events(execution_id)) == [1, 2, 3]


async def test_group_size_is_bounded(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn, max_group=50)
    await store.open()
    try:
        await asyncio.gather(*(started(store, f"g{i:03}") for i in range(120)))
        assert store.stats.largest_group == 50
        assert store.stats.transactions == 3
    finally:
        await store.close()


async def test_mixed_group_keeps_order(pg_store: PostgresStore) -> None:
    # create, then appends to it, then a snapshot: one group, in submission order.
    results = await asyncio.gather(
        pg_store.create_execution(record("m1"), events("m1", 1, 1)),
        pg_store.append([Append("m1", events("m1", 2, 2))]),
        pg_store.append([Append("m1", events("m1", 3, 4), state="SUCCEEDED", updated_at_ms=7)]),
        pg_store.put_kv("ns", "k", b"v"),
        pg_store.append([Append("m1", events("m1", 3, 3))]),  # duplicate
        return_exceptions=True,
    )
    assert pg_store.stats.transactions == 1
    assert isinstance(results[4], ConcurrencyConflict)
    assert sequences(await pg_store.read_events("m1")) == [1, 2, 3, 4]
    rec = await pg_store.get_execution("m1")
    assert rec is not None
    assert (rec.state, rec.last_sequence, rec.updated_at_ms) == ("SUCCEEDED", 4, 7)


async def test_write_by_another_process_fails_only_that_append(pg_dsn: str) -> None:
    """Two stores (two replicas) on one database: the primary key decides."""
    one, two = PostgresStore(pg_dsn), PostgresStore(pg_dsn)
    await one.open()
    await two.open()
    try:
        await started(one, "a")
        await started(one, "b")
        await two.append([Append("a", events("a", 2, 2))])
        results = await asyncio.gather(
            one.append([Append("a", events("a", 2, 2))]),  # stale view: conflict
            one.append([Append("b", events("b", 2, 2))]),
            return_exceptions=True,
        )
        assert isinstance(results[0], ConcurrencyConflict)
        assert results[1] is None
        assert sequences(await one.read_events("a")) == [1, 2]
        assert sequences(await one.read_events("b")) == [1, 2]
    finally:
        await one.close()
        await two.close()


async def test_racing_stores_on_one_execution_exactly_one_wins(pg_dsn: str) -> None:
    stores = [PostgresStore(pg_dsn) for _ in range(4)]
    for store in stores:
        await store.open()
    try:
        await started(stores[0], "e1")
        results = await asyncio.gather(
            *(s.append([Append("e1", (event("e1", 2),))]) for s in stores),
            return_exceptions=True,
        )
        assert results.count(None) == 1
        assert all(isinstance(r, ConcurrencyConflict) for r in results if r is not None)
    finally:
        for store in stores:
            await store.close()


async def test_migrates_old_database(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await migrate(conn, target=1) == [1]
        await conn.execute(
            "INSERT INTO executions VALUES ('old', 'p', 'w', 'RUNNING', 1, 1, 0, 'req-old')"
        )
    finally:
        await conn.close()
    store = PostgresStore(pg_dsn)
    await store.open()
    try:
        assert store.migrations_applied == [v.version for v in MIGRATIONS[1:]]
        old = await store.get_execution("old")
        assert old is not None
        assert old.fairness_key == ""  # column added by migration 2, defaulted
        assert old.request_digest == ""  # column added by migration 5, defaulted
        await store.put_kv("ns", "k", b"v")  # table added by migration 2
        again, created = await store.create_execution(
            record("new", request_id="req-old"), events("new", 1, 1)
        )
        assert not created  # the request_id index survived the migration
        assert again.execution_id == "old"
    finally:
        await store.close()


async def test_concurrent_open_migrates_once(pg_dsn: str) -> None:
    stores = [PostgresStore(pg_dsn) for _ in range(3)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        applied = sorted(v for s in stores for v in s.migrations_applied)
        assert applied == [m.version for m in MIGRATIONS]
        conn = await asyncpg.connect(pg_dsn)
        try:
            rows = await conn.fetch("SELECT version FROM schema_version ORDER BY version")
        finally:
            await conn.close()
        assert [r[0] for r in rows] == list(range(1, LATEST_VERSION + 1))
    finally:
        for store in stores:
            await store.close()


def test_migrations_are_numbered_in_order() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


async def test_refuses_database_from_newer_version(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn)
    await store.open()
    await store.close()
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(
            "INSERT INTO schema_version (version, description) VALUES ($1, 'future')",
            LATEST_VERSION + 1,
        )
    finally:
        await conn.close()
    with pytest.raises(StoreError, match="newer"):
        await PostgresStore(pg_dsn).open()


async def test_unreachable_server_is_store_error(pg_server: PgServer) -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/none", connect_timeout=2)
    with pytest.raises(StoreError):
        await store.open()


async def test_writer_and_readers_reconnect_after_connections_are_killed(
    pg_store: PostgresStore, pg_server: PgServer
) -> None:
    await started(pg_store, "e1")
    conn = await asyncpg.connect(pg_server.dsn(pg_dsn_name(pg_store)))
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    await asyncio.sleep(0.1)  # the client sees the server close the sockets
    # A group caught mid-flight would fail with StoreError (never acknowledged); the
    # next one reconnects.
    await pg_store.append([Append("e1", events("e1", 2, 2))])
    assert sequences(await pg_store.read_events("e1")) == [1, 2]


def pg_dsn_name(store: PostgresStore) -> str:
    return store.dsn.rsplit("/", 1)[1]


async def test_unexpected_sql_error_fails_only_that_append(pg_store: PostgresStore) -> None:
    """An event row the index does not account for (a writer that bypassed the store):
    the multi-row INSERT fails, the group re-runs with a savepoint per op, and only
    the append that hit the row fails."""
    for name in ("a", "b", "c"):
        await started(pg_store, name)
    conn = await asyncpg.connect(pg_store.dsn)
    try:
        await conn.execute(
            "INSERT INTO events VALUES ('b', 2, 'Rogue', 0, ''::bytea)"  # last_sequence stays 1
        )
    finally:
        await conn.close()
    before = pg_store.stats.transactions
    results = await asyncio.gather(
        pg_store.append([Append("a", events("a", 2, 2))]),
        pg_store.append([Append("b", events("b", 2, 2))]),
        pg_store.append([Append("c", events("c", 2, 3), state="SUCCEEDED", updated_at_ms=3)]),
        return_exceptions=True,
    )
    assert pg_store.stats.transactions - before == 1
    assert results[0] is None
    assert isinstance(results[1], ConcurrencyConflict)
    assert results[2] is None
    assert sequences(await pg_store.read_events("a")) == [1, 2]
    assert sequences(await pg_store.read_events("c")) == [1, 2, 3]
    rec = await pg_store.get_execution("b")
    assert rec is not None
    assert rec.last_sequence == 1


async def test_two_replicas_share_a_limit_and_a_bucket(pg_dsn: str) -> None:
    """Two stores on one database (two replicas) acquiring the same key at once
    never grant more than max between them, and take from one bucket."""
    a, b = PostgresStore(pg_dsn), PostgresStore(pg_dsn)
    await a.open()
    await b.open()
    try:
        await a.flow.release_slots([h.holder for h in await a.flow.holders()])
        await a.flow.delete_bucket("shared")
        requests = [
            (a if i % 2 else b).flow.acquire_slots([SlotRequest("llm", "shared", 3, f"e{i}/a")])
            for i in range(30)
        ]
        results = await asyncio.gather(*requests)
        assert sum(r[0] for r in results) == 3
        assert [
            (lv.in_use, lv.max) for lv in await b.flow.limit_levels() if lv.key == "shared"
        ] == [(3, 3)]
        await a.flow.set_bucket("shared", rates.settings(5, 60_000), SERVER)
        takes = [
            (a if i % 2 else b).flow.take_tokens([TakeRequest((Use("shared", "k", 1),))])
            for i in range(12)
        ]
        taken = await asyncio.gather(*takes)
        assert sum(r[0].taken for r in taken) == 5
    finally:
        await a.flow.release_slots([h.holder for h in await a.flow.holders()])
        await a.flow.delete_bucket("shared")
        await a.close()
        await b.close()


async def test_groups_creating_the_same_request_ids_in_opposite_orders_never_deadlock(
    pg_store: PostgresStore,
) -> None:
    """Two replicas, each with one group creating executions for request_ids r1 and r2,
    in opposite orders, each halfway when the other starts. Without the group's
    ordered claim, each would wait for the key the other holds: PostgreSQL fails one
    with a deadlock and that group runs again. Here neither group runs twice, and each
    request_id has one execution, which both replicas answer with."""
    writers = [GroupCommitWriter(lambda: asyncpg.connect(pg_store.dsn)) for _ in range(2)]
    for writer in writers:
        await writer.start()
    halfway = [asyncio.Event(), asyncio.Event()]
    runs = [0, 0]

    def create(replica: int, request_id: str) -> writes.CreateExecution:
        execution_id = f"{request_id}-by-{replica}"
        return writes.CreateExecution(
            record(execution_id, request_id=request_id), events(execution_id, 1, 1), None, None
        )

    def meet(replica: int) -> Callable[[asyncpg.Connection], Awaitable[None]]:
        async def op(conn: asyncpg.Connection) -> None:
            runs[replica] += 1
            halfway[replica].set()
            # The other group is blocked on its claim until we commit: do not wait long.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(halfway[1 - replica].wait(), 0.5)

        return op

    try:
        groups = [
            writers[0].enqueue([create(0, "r1"), meet(0), create(0, "r2")]),
            writers[1].enqueue([create(1, "r2"), meet(1), create(1, "r1")]),
        ]
        first, second = [await asyncio.gather(*futures) for futures in groups]
        assert runs == [1, 1]
        for mine, theirs in ((first[0], second[2]), (first[2], second[0])):
            assert mine[0].execution_id == theirs[0].execution_id
            assert mine[1] != theirs[1]  # created by exactly one of them
    finally:
        for writer in writers:
            await writer.close()
