"""PostgresStore: the `Store` for more than one machine (asyncpg).

Usage::

    store = PostgresStore("postgresql://execplan@db.internal:5432/execplan")
    await store.open()          # connects, migrates the schema (advisory-locked)
    ...
    await store.close()         # flushes pending group commits, closes connections

Layout: ONE writer connection owned by a `GroupCommitWriter` (one transaction, one
WAL flush and a handful of round trips per group of concurrent writes), and an
`asyncpg` pool for reads, so reads never queue behind a commit. The schema is the
SQLite one in PostgreSQL types; see `schema.py`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from functools import partial
from typing import TypeVar

import asyncpg
from execplan.errors import ExecplanError, StoreError, Unavailable

from ..checks import check_batch_shape
from ..port import (
    Append,
    ExecutionRecord,
    Snapshot,
    Store,
    StoredEvent,
    TimerRecord,
    decode_cursor,
)
from . import reads, writes
from .schema import migrate
from .writer import GroupCommitWriter, WriterStats

T = TypeVar("T")


class PostgresStore(Store):
    def __init__(
        self,
        dsn: str,
        *,
        readers: int = 4,
        max_group: int = 5000,
        connect_timeout: float = 10.0,
    ) -> None:
        self._dsn = dsn
        self._readers = max(readers, 1)
        self._max_group = max_group
        self._timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None
        self._writer: GroupCommitWriter | None = None
        self.migrations_applied: list[int] = []

    @property
    def dsn(self) -> str:
        return self._dsn

    @property
    def stats(self) -> WriterStats:
        """Group-commit counters (transactions, operations, largest group)."""
        return self._require_writer().stats

    async def _connect(self) -> asyncpg.Connection:
        # The writer's connection: an acknowledged append must survive a server crash
        # whatever the database's default is (the counterpart of SQLite's
        # synchronous=FULL); group commit pays for the WAL flush once per group.
        return await asyncpg.connect(
            self._dsn,
            timeout=self._timeout,
            server_settings={"synchronous_commit": "on", "application_name": "execplan"},
        )

    async def open(self) -> None:
        if self._writer is not None:
            return
        writer = GroupCommitWriter(self._connect, self._max_group)
        try:
            conn = await self._connect()
            try:
                self.migrations_applied = await migrate(conn)
            finally:
                await conn.close()
            await writer.start()
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._readers,
                timeout=self._timeout,
                server_settings={"application_name": "execplan-read"},
            )
        except ExecplanError:
            await writer.close()
            raise
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            await writer.close()
            raise StoreError(f"cannot open PostgreSQL store: {exc}") from exc
        self._writer = writer

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        pool, self._pool = self._pool, None
        if writer is not None:
            await writer.close()
        if pool is not None:
            await pool.close()

    def _require_writer(self) -> GroupCommitWriter:
        if self._writer is None:
            raise Unavailable("store is not open")
        return self._writer

    async def _read(self, fn: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
        if self._pool is None:
            raise Unavailable("store is not open")
        try:
            return await fn(self._pool)
        except ExecplanError:
            raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise StoreError(f"read failed: {exc}") from exc

    # -- writes --------------------------------------------------------------------

    async def put_plan(self, plan_id: str, payload: bytes) -> None:
        await self._require_writer().submit(partial(writes.put_plan, plan_id, payload))

    async def create_execution(
        self, record: ExecutionRecord, events: Sequence[StoredEvent]
    ) -> tuple[ExecutionRecord, bool]:
        check_batch_shape(record.execution_id, events)
        return await self._require_writer().submit(
            partial(writes.create_execution, record, tuple(events))
        )

    async def append(self, batch: Sequence[Append]) -> None:
        for item in batch:
            check_batch_shape(item.execution_id, item.events)
        futures = self._require_writer().enqueue(batch)
        first_error: BaseException | None = None
        for future in futures:
            try:
                await future
            except ExecplanError as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        await self._require_writer().submit(partial(writes.save_snapshot, snapshot))

    async def put_timer(self, timer: TimerRecord) -> None:
        await self._require_writer().submit(partial(writes.put_timer, timer))

    async def delete_timer(self, timer_id: str) -> None:
        await self._require_writer().submit(partial(writes.delete_timer, timer_id))

    async def put_kv(self, namespace: str, key: str, payload: bytes) -> None:
        await self._require_writer().submit(partial(writes.put_kv, namespace, key, payload))

    # -- reads ---------------------------------------------------------------------

    async def get_plan(self, plan_id: str) -> bytes | None:
        return await self._read(lambda db: reads.get_plan(db, plan_id))

    async def read_events(
        self, execution_id: str, after_sequence: int = 0, limit: int | None = None
    ) -> list[StoredEvent]:
        return await self._read(
            lambda db: reads.read_events(db, execution_id, after_sequence, limit)
        )

    async def get_execution(self, execution_id: str) -> ExecutionRecord | None:
        return await self._read(lambda db: reads.get_execution(db, execution_id))

    async def list_executions(
        self,
        *,
        states: Collection[str] = (),
        workflow_name: str = "",
        limit: int = 100,
        after: str = "",
    ) -> list[ExecutionRecord]:
        bound = decode_cursor(after) if after else None
        return await self._read(
            lambda db: reads.list_executions(db, tuple(states), workflow_name, limit, bound)
        )

    async def list_active(self) -> list[ExecutionRecord]:
        return await self._read(reads.list_active)

    async def load_snapshot(self, execution_id: str) -> Snapshot | None:
        return await self._read(lambda db: reads.load_snapshot(db, execution_id))

    async def list_timers(self) -> list[TimerRecord]:
        return await self._read(reads.list_timers)

    async def get_kv(self, namespace: str, key: str) -> bytes | None:
        return await self._read(lambda db: reads.get_kv(db, namespace, key))

    async def list_kv(self, namespace: str) -> list[tuple[str, bytes]]:
        return await self._read(lambda db: reads.list_kv(db, namespace))


__all__ = ["PostgresStore"]
