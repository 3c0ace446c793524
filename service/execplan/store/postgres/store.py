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

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import asyncpg
from execplan.errors import ExecplanError, OwnershipLost, StoreError, Unavailable

from ..checks import check_batch_shape, failures_of
from ..flow import FlowStore
from ..port import Append, ExecutionRecord, Owner, Snapshot, StoredEvent
from ..schedules import ScheduleRecord, ScheduleUpdate
from ..sql import Rows, SqlStore, numbered
from . import ownership, writes
from .flow import PostgresFlowStore
from .ownership import EventListener
from .schema import migrate
from .writer import GroupCommitWriter, WriterStats

T = TypeVar("T")


class PostgresStore(SqlStore):
    """Also the `ReplicaStore` of executor replicas (ownership.py)."""

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
        self._owner: Owner | None = None
        self._flow = PostgresFlowStore(self)

    @property
    def flow(self) -> FlowStore:
        return self._flow

    @property
    def dsn(self) -> str:
        return self._dsn

    @property
    def owner(self) -> Owner | None:
        """Replicas: who this store writes as (None: no fencing, one executor)."""
        return self._owner

    @owner.setter
    def owner(self, owner: Owner | None) -> None:
        self._owner = owner
        if self._writer is not None:
            self._writer.owner = owner

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
        writer.owner = self._owner
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

    async def _read(self, fn: Callable[[asyncpg.Pool], Any]) -> Any:
        if self._pool is None:
            raise Unavailable("store is not open")
        try:
            return await fn(self._pool)
        except ExecplanError:
            raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise StoreError(f"read failed: {exc}") from exc

    async def _query(self, sql: str, params: Sequence[Any], convert: Callable[[Rows], T]) -> T:
        rows = await self._read(lambda db: db.fetch(numbered(sql), *params))
        return convert(rows)

    async def _write(self, sql: str, params: Sequence[Any]) -> None:
        await self._require_writer().submit(partial(writes.execute, numbered(sql), params))

    # -- writes whose transactions are PostgreSQL's own (writes.py) -----------------

    async def create_execution(
        self,
        record: ExecutionRecord,
        events: Sequence[StoredEvent],
        schedule: ScheduleUpdate | None = None,
    ) -> tuple[ExecutionRecord, bool]:
        check_batch_shape(record.execution_id, events)
        return await self._require_writer().submit(
            writes.CreateExecution(record, tuple(events), self._owner, schedule)
        )

    async def append(self, batch: Sequence[Append]) -> None:
        failures = await self.append_each(batch)
        first_error = next((e for e in failures.values() if not isinstance(e, OwnershipLost)), None)
        if first_error is not None:
            raise first_error
        lost = list(failures)
        if lost:
            # Only these were refused: the caller may treat the rest as committed.
            raise OwnershipLost(f"{len(lost)} executions are owned by another replica", lost)

    async def append_each(self, batch: Sequence[Append]) -> dict[str, ExecplanError]:
        """Per-execution failures; OwnershipLost names the executions another replica
        owns, so the engine can disown those and still act on everything else."""
        for item in batch:
            check_batch_shape(item.execution_id, item.events)
        futures = self._require_writer().enqueue(batch)
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

    async def list_active(self) -> list[ExecutionRecord]:
        """Every active execution; with an `owner` set, only those it owns."""
        active = await super().list_active()
        owner = self._owner
        if owner is None:
            return active
        mine = set(await self._read(lambda db: ownership.list_owned(db, *_key(owner))))
        return [r for r in active if r.execution_id in mine]

    # -- ReplicaStore (ownership.py) ------------------------------------------------

    async def register_replica(self, replica_id: str, address: str, lease_ms: int) -> Owner:
        """New epoch and lease for `replica_id`; sets and returns `owner`."""
        epoch = await self._read(lambda db: ownership.register(db, replica_id, address, lease_ms))
        self.owner = Owner(replica_id, epoch)
        return self.owner

    async def renew_lease(self, lease_ms: int) -> bool:
        owner = self._require_owner()
        renewed: bool = await self._read(lambda db: ownership.renew(db, *_key(owner), lease_ms))
        return renewed

    async def release_lease(self) -> None:
        owner = self._require_owner()
        await self._read(lambda db: ownership.release(db, *_key(owner)))

    async def claim_executions(self, limit: int) -> list[str]:
        owner = self._require_owner()
        claimed: list[str] = await self._read(lambda db: ownership.claim(db, *_key(owner), limit))
        return claimed

    async def owner_of(self, execution_id: str) -> tuple[str, str] | None:
        """(replica_id, address) of the live owner of an execution, if any."""
        found: tuple[str, str] | None = await self._read(
            lambda db: ownership.owner_address(db, execution_id)
        )
        return found

    async def listener(self) -> EventListener:
        """A started LISTEN connection for commit notifications of any replica."""
        listener = EventListener(self._connect)
        try:
            await listener.start()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"cannot LISTEN: {exc}") from exc
        return listener

    def _require_owner(self) -> Owner:
        if self._owner is None:
            raise Unavailable("this store has no replica owner")
        return self._owner


def _key(owner: Owner) -> tuple[str, int]:
    return owner.replica_id, owner.epoch


__all__ = ["PostgresStore"]
