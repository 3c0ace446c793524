"""SqliteStore: the embedded, durable `Store` (one SQLite file, WAL).

Usage::

    store = SqliteStore("/var/lib/execplan/execplan.db")
    await store.open()          # creates the file, enables WAL, migrates the schema
    ...
    await store.close()         # flushes pending group commits, closes connections

Layout (simonw/datasette's pattern): ONE writer connection, on which every write goes
through a `GroupCommitWriter` (one transaction and one fsync per group, one thread hop
per group), and a few reader connections used round-robin, so reads never queue
behind a commit. One process per file, enforced by `lock.FileLock` on `<path>.lock`.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
from execplan.errors import ExecplanError, StoreError, Unavailable

from ..checks import check_batch_shape, failures_of
from ..flow import FlowStore
from ..port import Append, ExecutionRecord, Snapshot, StoredEvent
from ..schedules import ScheduleRecord, ScheduleUpdate
from ..sql import Rows, SqlStore
from . import writes
from .flow import SqliteFlowStore
from .lock import FileLock
from .schema import configure_reader, configure_writer, migrate
from .thread import connect, run_on
from .writer import GroupCommitWriter, WriterStats

T = TypeVar("T")


class SqliteStore(SqlStore):
    def __init__(
        self,
        path: str | Path,
        *,
        readers: int = 2,
        max_group: int = 5000,
        lock_timeout: float = 10.0,
    ) -> None:
        self._path = str(path)
        self._lock = FileLock(self._path + ".lock")
        self._lock_timeout = lock_timeout
        self._reader_count = max(readers, 1)
        self._max_group = max_group
        self._conn: aiosqlite.Connection | None = None
        self._writer: GroupCommitWriter | None = None
        self._readers: list[aiosqlite.Connection] = []
        self._next_reader: itertools.cycle[aiosqlite.Connection] | None = None
        self._flow = SqliteFlowStore(self)

    @property
    def flow(self) -> FlowStore:
        return self._flow

    @property
    def path(self) -> str:
        return self._path

    @property
    def stats(self) -> WriterStats:
        """Group-commit counters (transactions, operations, largest group)."""
        return self._require_writer().stats

    async def open(self) -> None:
        if self._writer is not None:
            return
        try:
            await self._lock.acquire(self._lock_timeout)
        except OSError as exc:  # e.g. the directory does not exist
            raise StoreError(f"cannot open SQLite store at {self._path}: {exc}") from exc
        try:
            self._conn = await connect(self._path)
            await run_on(self._conn, configure_writer)
            await run_on(self._conn, migrate)
            for _ in range(self._reader_count):
                reader = await connect(self._path)
                self._readers.append(reader)
                await run_on(reader, configure_reader)
        except sqlite3.Error as exc:
            await self._close_connections()
            raise StoreError(f"cannot open SQLite store at {self._path}: {exc}") from exc
        except BaseException:
            await self._close_connections()
            raise
        self._next_reader = itertools.cycle(self._readers)
        self._writer = GroupCommitWriter(self._conn, self._max_group)

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.close()
        await self._close_connections()

    async def _close_connections(self) -> None:
        readers, self._readers, self._next_reader = self._readers, [], None
        conn, self._conn = self._conn, None
        for connection in [*readers, conn]:
            if connection is not None:
                await connection.close()
        self._lock.release()

    def _require_writer(self) -> GroupCommitWriter:
        if self._writer is None:
            raise Unavailable("store is not open")
        return self._writer

    async def _query(self, sql: str, params: Sequence[Any], convert: Callable[[Rows], T]) -> T:
        # The rows are converted on the reader's thread: the loop gets finished objects.
        def run(conn: sqlite3.Connection) -> T:
            return convert(conn.execute(sql, params).fetchall())

        if self._next_reader is None:
            raise Unavailable("store is not open")
        try:
            return await run_on(next(self._next_reader), run)
        except ExecplanError:
            raise
        except (sqlite3.Error, ValueError) as exc:  # aiosqlite: ValueError if closed
            raise StoreError(f"read failed: {exc}") from exc

    async def _write(self, sql: str, params: Sequence[Any]) -> None:
        await self._require_writer().submit(partial(writes.execute, sql, params))

    # -- writes whose transactions are SQLite's own (writes.py) ---------------------

    async def create_execution(
        self,
        record: ExecutionRecord,
        events: Sequence[StoredEvent],
        schedule: ScheduleUpdate | None = None,
    ) -> tuple[ExecutionRecord, bool]:
        check_batch_shape(record.execution_id, events)
        return await self._require_writer().submit(
            partial(writes.create_execution, record, tuple(events), schedule)
        )

    async def append_each(self, batch: Sequence[Append]) -> dict[str, ExecplanError]:
        for item in batch:
            check_batch_shape(item.execution_id, item.events)
        futures = self._require_writer().enqueue([partial(writes.append, item) for item in batch])
        return await failures_of(batch, futures)

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        await self._require_writer().submit(partial(writes.save_snapshot, snapshot))

    async def delete_execution(self, execution_id: str, max_events: int) -> bool:
        done: bool = await self._require_writer().submit(
            partial(writes.delete_execution, execution_id, max_events)
        )
        return done

    async def create_schedule(self, record: ScheduleRecord) -> tuple[ScheduleRecord, bool]:
        return await self._require_writer().submit(partial(writes.create_schedule, record))

    async def update_schedule(self, update: ScheduleUpdate) -> None:
        await self._require_writer().submit(partial(writes.update_schedule, update))
