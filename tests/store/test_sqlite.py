"""The store contract against SqliteStore, plus what only SQLite has: group commit,
schema migrations, durability across reopen and across `kill -9`."""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from execplan.errors import StoreError
from execplan.flow import rates
from execplan.store import Append, ExecutionRecord, SqliteStore, Store, StoredEvent
from execplan.store.flow import SERVER, CacheEntry, SlotRequest, TakeRequest, Use
from execplan.store.port import TERMINAL_STATES
from execplan.store.sql import BY_REQUEST_ID, list_query
from execplan.store.sqlite.schema import ACTIVE, LATEST_VERSION, MIGRATIONS, migrate

from .contract import StoreContract, event, events, record, sequences, started
from .ops_contract import OpsContract


class TestSqliteStore(StoreContract, OpsContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[Store]:
        store = SqliteStore(tmp_path / "execplan.db")
        await store.open()
        yield store
        await store.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "execplan.db")
    await store.open()
    yield store
    await store.close()


async def test_concurrent_appends_are_grouped_into_few_transactions(
    sqlite_store: SqliteStore,
) -> None:
    ids = [f"g{i:03}" for i in range(200)]
    for execution_id in ids:
        await started(sqlite_store, execution_id)
    before = sqlite_store.stats.transactions

    await asyncio.gather(
        *(sqlite_store.append([Append(i, (event(i, 2),))]) for i in ids),
    )

    # 200 callers in one loop iteration: one group, one transaction, one fsync.
    assert sqlite_store.stats.transactions - before == 1
    assert sqlite_store.stats.largest_group == 200


async def test_group_size_is_bounded(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db", max_group=50)
    await store.open()
    try:
        ids = [f"g{i:03}" for i in range(120)]
        await asyncio.gather(*(started(store, i) for i in ids))
        assert store.stats.largest_group == 50
        assert store.stats.transactions == 3
    finally:
        await store.close()


async def test_close_flushes_pending_writes(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = SqliteStore(path)
    await store.open()
    await started(store, "e1")
    pending = [asyncio.ensure_future(store.put_kv("ns", f"k{i}", b"v")) for i in range(50)]
    await asyncio.sleep(0)  # queued, not yet committed
    await store.close()
    await asyncio.gather(*pending)

    reopened = SqliteStore(path)
    await reopened.open()
    try:
        assert len(await reopened.list_kv("ns")) == 50
    finally:
        await reopened.close()


async def test_reopen_sees_everything_committed(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = SqliteStore(path)
    await store.open()
    await started(store, "e1", 3)
    await store.append([Append("e1", events("e1", 4, 5), state="SUCCEEDED", updated_at_ms=5)])
    await store.close()

    reopened = SqliteStore(path)
    await reopened.open()
    try:
        assert sequences(await reopened.read_events("e1")) == [1, 2, 3, 4, 5]
        rec = await reopened.get_execution("e1")
        assert rec is not None
        assert (rec.state, rec.last_sequence) == ("SUCCEEDED", 5)
    finally:
        await reopened.close()


async def test_reads_do_not_wait_for_the_writer(sqlite_store: SqliteStore) -> None:
    await started(sqlite_store, "e1")
    release = threading.Event()

    def stuck(conn: sqlite3.Connection) -> None:
        # Holds the writer thread (inside an open group transaction) until released.
        release.wait(10)

    writer = sqlite_store._require_writer()  # white-box: block the writer on purpose
    blocked = asyncio.ensure_future(writer.submit(stuck))
    queued = asyncio.ensure_future(sqlite_store.put_kv("ns", "k", b"v"))
    await asyncio.sleep(0.05)
    try:
        async with asyncio.timeout(5):
            assert await sqlite_store.get_execution("e1") is not None
            assert await sqlite_store.get_kv("ns", "k") is None  # not committed yet
        assert not blocked.done()
        assert not queued.done()
    finally:
        release.set()
    await blocked
    await queued
    assert await sqlite_store.get_kv("ns", "k") == b"v"


def _old_database(path: Path) -> None:
    """A database as execplan wrote it at schema version 1, with one execution."""
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, target=1) == 1
    conn.execute(
        "INSERT INTO executions VALUES ('old', 'p', 'orders', 'RUNNING', 1, 1, 1, 'r-old')"
    )
    conn.execute("INSERT INTO events VALUES ('old', 1, 'Started', 1, x'00')")
    conn.close()


async def test_migrates_old_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _old_database(path)

    store = SqliteStore(path)
    await store.open()
    try:
        rec = await store.get_execution("old")
        assert rec == ExecutionRecord("old", "p", "orders", "RUNNING", 1, 1, 1, "r-old", "")
        assert rec.request_digest == ""  # column added by migration 5, defaulted
        await store.append([Append("old", (event("old", 2),))])
        assert sequences(await store.read_events("old")) == [1, 2]
        await store.put_kv("ns", "k", b"v")  # table added by a later migration
        _, created = await store.create_execution(record("new", request_id="r-old"), [])
        assert not created  # the request_id index survived the migration
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(LATEST_VERSION,)]
    conn.close()


def test_migrations_are_numbered_in_order() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


async def test_refuses_database_from_newer_version(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn)
    conn.execute("UPDATE schema_version SET version = ?", (LATEST_VERSION + 1,))
    conn.close()
    store = SqliteStore(path)
    with pytest.raises(StoreError, match="newer"):
        await store.open()
    await store.close()


async def test_unopenable_path_is_store_error(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "missing-dir" / "db")
    with pytest.raises(StoreError):
        await store.open()


@pytest.mark.parametrize("kill_after", [40, 700, 3000])
async def test_kill_9_keeps_exactly_the_acknowledged_events(
    tmp_path: Path, kill_after: int
) -> None:
    path = tmp_path / "killed.db"
    writers = 8
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).with_name("kill_child.py")),
        str(path),
        str(writers),
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    acked: dict[str, int] = {}
    try:
        async with asyncio.timeout(20):
            while sum(acked.values()) < kill_after:
                line = await child.stdout.readline()
                assert line, "child exited early"
                execution_id, sequence = line.split()
                acked[execution_id.decode()] = int(sequence)
    finally:
        child.send_signal(signal.SIGKILL)
    # Lines already in the pipe were acknowledged before the kill: count them too.
    for line in (await child.stdout.read()).splitlines():
        if len(parts := line.split()) == 2:
            acked[parts[0].decode()] = int(parts[1])
    await child.wait()
    assert child.returncode == -signal.SIGKILL

    store = SqliteStore(path)
    await store.open()
    try:
        assert len(acked) == writers  # every execution was created and acknowledged
        for name, last_acked in acked.items():
            stored = await store.read_events(name)
            got = sequences(stored)
            # No gaps, nothing torn: 1..n, and n covers every acknowledged append.
            assert got == list(range(1, len(got) + 1))
            assert len(got) >= last_acked
            # At most the in-flight group committed after the last ack we read.
            rec = await store.get_execution(name)
            assert rec is not None
            assert rec.last_sequence == len(got)
            assert all(isinstance(e, StoredEvent) and len(e.payload) == 200 for e in stored)
            # The crashed database is fully usable: the log continues where it stopped.
            await store.append([Append(name, (event(name, len(got) + 1),))])
    finally:
        await store.close()


async def test_unexpected_failure_in_a_group_fails_only_that_append(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = SqliteStore(path)
    await store.open()
    await started(store, "a")
    await started(store, "b")
    # Corrupt b behind the store's back: its next sequence already exists, so its
    # insert hits the primary key inside the group; only its savepoint is undone.
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("INSERT INTO events VALUES ('b', 2, 'Rogue', 0, x'')")
    raw.close()
    try:
        results = await asyncio.gather(
            store.append([Append("a", events("a", 2, 2))]),
            store.append([Append("b", events("b", 2, 2))]),
            store.append([Append("a", events("a", 3, 3))]),
            return_exceptions=True,
        )
        assert results[0] is None
        assert isinstance(results[1], StoreError)
        assert results[2] is None
        assert sequences(await store.read_events("a")) == [1, 2, 3]
        assert [e.kind for e in await store.read_events("b")] == ["TaskCompleted", "Rogue"]
    finally:
        await store.close()


async def test_failed_transaction_fails_the_whole_group_and_store_recovers(
    sqlite_store: SqliteStore,
) -> None:
    def sabotage(conn: sqlite3.Connection) -> None:
        # Ends the group's transaction under the writer's feet: its own RELEASE and
        # the COMMIT then fail, as they would on an I/O error.
        conn.execute("ROLLBACK")

    writer = sqlite_store._require_writer()  # white-box: inject a failing op
    results = await asyncio.gather(
        sqlite_store.put_kv("ns", "before", b"1"),
        writer.submit(sabotage),
        sqlite_store.put_kv("ns", "after", b"2"),
        return_exceptions=True,
    )
    assert all(isinstance(r, StoreError) for r in results), results
    assert await sqlite_store.list_kv("ns") == []
    await sqlite_store.put_kv("ns", "later", b"3")
    assert await sqlite_store.list_kv("ns") == [("later", b"3")]


def test_active_predicate_names_exactly_the_terminal_states() -> None:
    named = set(re.findall(r"'([A-Z_]+)'", ACTIVE))
    assert named == TERMINAL_STATES


async def test_recovery_query_uses_the_partial_index(sqlite_store: SqliteStore) -> None:
    await started(sqlite_store, "e1")
    conn = sqlite3.connect(sqlite_store.path)
    try:
        sql = f"SELECT execution_id FROM executions WHERE {ACTIVE} ORDER BY created_at_ms"
        plan = " ".join(str(row) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
    finally:
        conn.close()
    assert "executions_active" in plan


async def test_lookups_by_request_and_parent_use_their_partial_indexes(
    sqlite_store: SqliteStore,
) -> None:
    """A partial index serves only a query whose WHERE implies the index's: without
    the repeated `!= ''` both were scans of every execution (twice per StartExecution
    with a request_id, one of them on the writer thread)."""
    await started(sqlite_store, "e1")
    by_parent, params = list_query(
        states=(), workflow_name="", limit=10, after=None, parent_execution_id="p"
    )
    conn = sqlite3.connect(sqlite_store.path)
    try:
        plans = {
            name: " ".join(str(row) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", args))
            for name, sql, args in (
                ("executions_by_request", BY_REQUEST_ID, ("r",)),
                ("executions_by_parent", by_parent, params),
            )
        }
    finally:
        conn.close()
    for index, plan in plans.items():
        assert f"USING INDEX {index}" in plan, plan
        assert "SCAN executions" not in plan, plan


async def test_second_store_on_the_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db"
    first = SqliteStore(path)
    await first.open()
    second = SqliteStore(path, lock_timeout=0.2)
    with pytest.raises(StoreError, match="another execplan process"):
        await second.open()
    await first.close()
    await second.open()  # released on close
    await second.close()


async def test_flow_state_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "execplan.db"
    store = SqliteStore(path)
    await store.open()
    await store.flow.acquire_slots([SlotRequest("llm", "m", 1, "e1/a")])
    await store.flow.set_bucket("rpm", rates.settings(1, 60_000), SERVER)
    assert (await store.flow.take_tokens([TakeRequest((Use("rpm", "m", 1),))]))[0].taken
    await store.flow.put_cache(CacheEntry("t", "k", b"v", 1, 0, "e1", "a"))
    await store.close()

    store = SqliteStore(path)
    await store.open()
    try:
        assert await store.flow.acquire_slots([SlotRequest("llm", "m", 1, "e2/a")]) == [False]
        (r,) = await store.flow.take_tokens([TakeRequest((Use("rpm", "m", 1),))])
        assert not r.taken  # the bucket is still empty: its level was kept
        assert await store.flow.get_cache("t", "k", 2) is not None
    finally:
        await store.close()
