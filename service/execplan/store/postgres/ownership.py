"""Replica leases and execution ownership in PostgreSQL (docs/replicas.md).

Every executor replica has a row in `replicas` (`replica_id`, `epoch`, `address`,
`lease_until`); every execution row names its owner (`owner_id`, `owner_epoch`). An
owner is *live* while its replicas row has that epoch and `lease_until` lies in the
future, by the database's clock (`clock_timestamp()`), so replica clocks never matter.

    epoch = await register(db, "r1", "10.0.0.5:7070", lease_ms=5000)   # new epoch
    await renew(db, "r1", epoch, 5000)       # False: the lease expired -> re-register
    ids = await claim(db, "r1", epoch, 500)  # executions of dead owners, now ours
    await release(db, "r1", epoch)           # graceful stop: others may claim at once

The fence is in `writes.append_many`: the append's `SELECT ... FOR UPDATE` of the
execution rows also evaluates `OWNED`, and rows not owned by a live (replica, epoch)
reject their Append with `OwnershipLost`. `claim` locks the same rows (`SKIP LOCKED`:
an owner's in-flight commit is never waited for, it is simply claimed next round), so
an append and a takeover of one execution are serialized by its row lock.

`EventListener` is the receiving side of `NOTIFY execplan_events, '<execution_id>'`,
which every replica's append sends in its commit: a watcher on any replica tails the
store and wakes when the owner commits, with no polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeAlias

import asyncpg

from ..port import Owner
from ..sql import ACTIVE

__all__ = ["CHANNEL", "OWNED", "Db", "EventListener", "Owner"]

log = logging.getLogger("execplan.store.postgres")

CHANNEL = "execplan_events"


# A pool (reads, lease operations) or the writer's connection.
Db: TypeAlias = "asyncpg.Pool | asyncpg.Connection"

# $2 = replica_id, $3 = epoch: is the locked row ours, under a live lease?
OWNED = (
    "(e.owner_id = $2 AND e.owner_epoch = $3 AND EXISTS (SELECT 1 FROM replicas r"
    " WHERE r.replica_id = $2 AND r.epoch = $3 AND r.lease_until > clock_timestamp()))"
)

_LEASE = "clock_timestamp() + $2 * interval '1 millisecond'"


async def register(db: Db, replica_id: str, address: str, lease_ms: int) -> int:
    """Start (or restart) a replica: a fresh epoch and lease; returns the epoch."""
    epoch: int = await db.fetchval(
        "INSERT INTO replicas (replica_id, epoch, address, lease_until)"
        f" VALUES ($1, 1, $3, {_LEASE}) ON CONFLICT (replica_id) DO UPDATE"
        " SET epoch = replicas.epoch + 1, address = excluded.address,"
        " lease_until = excluded.lease_until RETURNING epoch",
        replica_id,
        lease_ms,
        address,
    )
    return epoch


async def renew(db: Db, replica_id: str, epoch: int, lease_ms: int) -> bool:
    """Extend a live lease. False when it expired or a newer epoch exists: this
    incarnation then owns nothing any more and must re-register."""
    row = await db.fetchval(
        f"UPDATE replicas SET lease_until = {_LEASE}"
        " WHERE replica_id = $1 AND epoch = $3 AND lease_until > clock_timestamp()"
        " RETURNING 1",
        replica_id,
        lease_ms,
        epoch,
    )
    return row is not None


async def release(db: Db, replica_id: str, epoch: int) -> None:
    await db.execute(
        "UPDATE replicas SET lease_until = clock_timestamp() WHERE replica_id = $1 AND epoch = $2",
        replica_id,
        epoch,
    )


async def claim(db: Db, replica_id: str, epoch: int, limit: int) -> list[str]:
    """Take over up to `limit` active executions whose owner is not live (oldest
    first), provided our own lease is; returns their ids."""
    rows = await db.fetch(
        f"""WITH victims AS (
            SELECT e.execution_id FROM executions e
            WHERE {ACTIVE}
              AND NOT EXISTS (SELECT 1 FROM replicas r WHERE r.replica_id = e.owner_id
                  AND r.epoch = e.owner_epoch AND r.lease_until > clock_timestamp())
              AND EXISTS (SELECT 1 FROM replicas m WHERE m.replica_id = $1
                  AND m.epoch = $2 AND m.lease_until > clock_timestamp())
            ORDER BY e.created_at_ms, e.execution_id LIMIT $3
            FOR UPDATE OF e SKIP LOCKED)
        UPDATE executions e SET owner_id = $1, owner_epoch = $2
        FROM victims v WHERE e.execution_id = v.execution_id
        RETURNING e.execution_id""",
        replica_id,
        epoch,
        limit,
    )
    return [r[0] for r in rows]


async def owner_address(db: Db, execution_id: str) -> tuple[str, str] | None:
    """(replica_id, advertise address) of the live owner of an execution, if any."""
    row = await db.fetchrow(
        "SELECT r.replica_id, r.address FROM executions e JOIN replicas r"
        " ON r.replica_id = e.owner_id AND r.epoch = e.owner_epoch"
        " WHERE e.execution_id = $1 AND r.lease_until > clock_timestamp()",
        execution_id,
    )
    return None if row is None else (row[0], row[1])


async def list_owned(db: Db, replica_id: str, epoch: int) -> list[str]:
    rows = await db.fetch(
        f"SELECT execution_id FROM executions e WHERE {ACTIVE}"
        " AND owner_id = $1 AND owner_epoch = $2 ORDER BY created_at_ms, execution_id",
        replica_id,
        epoch,
    )
    return [r[0] for r in rows]


class EventListener:
    """LISTEN on one dedicated connection; wakes the waiters of an execution id
    (the `CommitListener` of the store port)."""

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]]) -> None:
        self._connect = connect
        self._conn: asyncpg.Connection | None = None
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self.closed = asyncio.Event()
        self._restarting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._conn = await self._connect()
        await self._conn.add_listener(CHANNEL, self._notified)
        self._conn.add_termination_listener(self._lost)

    async def close(self) -> None:
        self.closed.set()
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.close()

    @contextlib.contextmanager
    def waiter(self, execution_id: str) -> Iterator[asyncio.Event]:
        """An Event set whenever a commit touches `execution_id` (or on close)."""
        event = asyncio.Event()
        self._waiters.setdefault(execution_id, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(execution_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[execution_id]

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        for event in self._waiters.get(payload, ()):
            event.set()

    def _lost(self, conn: Any) -> None:
        # Waiters fall back to their periodic re-read; reconnect in the background.
        if not self.closed.is_set():
            log.warning("LISTEN connection lost; reconnecting")
            self._restarting = asyncio.get_running_loop().create_task(self._restart())

    async def _restart(self) -> None:
        while not self.closed.is_set():
            try:
                await self.start()
                for waiters in self._waiters.values():
                    for event in waiters:
                        event.set()  # may have missed notifications meanwhile
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                await asyncio.sleep(1.0)
