"""Group commit on PostgreSQL: every write of the process goes through one writer.

Same shape as `sqlite/writer.py`: `submit(op)` / `enqueue(appends)` queue work and
return futures; a single drain task takes everything pending (up to `max_group`) and
runs it as ONE transaction on the writer's own connection::

    BEGIN
      SELECT pg_advisory_xact_lock(...)  -- request_ids the group creates, in one order
      SELECT ... FOR UPDATE        -- last_sequence of every execution in a run of appends
      INSERT INTO events SELECT * FROM unnest(...)   -- all accepted events, one statement
      UPDATE executions ... FROM unnest(...)         -- all index rows, one statement
      op(conn)                     -- other writes (create, snapshot, kv, plan)
      ...
    COMMIT                         -- one WAL flush for the group

and only then resolves each caller's future. Consecutive appends form one run (three
round trips whatever its size); other ops keep their place in the order, so an append
queued after a create sees the execution. Writes submitted while a commit is in flight
wait for the next one: the group grows with the load, with no timer.

A rejected op (conflict, not found, already exists) writes nothing and never fails the
rest. Any SQL error aborts a PostgreSQL transaction, so an unexpected one (e.g. a
unique violation because another process wrote the same sequence) rolls the group
back and re-runs it with a SAVEPOINT around each op, which then fails alone. If the
transaction itself fails (connection lost), every op of the group gets a
`StoreError`: none of it is acknowledged; the next group reconnects.

Caller cancellation does not withdraw an op: it may still commit (at-least-once).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import asyncpg
from execplan.errors import ConcurrencyConflict, ExecplanError, StoreError

from ..group_commit import Failed, GroupCommitQueue, WriterStats
from ..port import Append, Owner
from .writes import CreateExecution, append_many

T = TypeVar("T")
Op = Callable[[asyncpg.Connection], Awaitable[Any]]
Work = Op | Append
Connect = Callable[[], Awaitable[asyncpg.Connection]]

__all__ = ["GroupCommitWriter", "WriterStats"]


class _Retry(Exception):
    """An unexpected SQL error aborted the fast attempt; re-run with savepoints."""


class GroupCommitWriter(GroupCommitQueue[Work]):
    """The PostgreSQL writer: each group is one transaction on its own connection."""

    def __init__(self, connect: Connect, max_group: int = 5000) -> None:
        super().__init__(max_group)
        self._connect = connect
        self._conn: asyncpg.Connection | None = None
        # Replicas: appends are fenced by this owner (writes.append_many).
        self.owner: Owner | None = None

    async def start(self) -> None:
        self._conn = await self._connect()

    async def submit(self, op: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run `op` in the next group transaction; returns after that commit."""
        (future,) = self.enqueue([op])
        result: T = await future
        return result

    async def close(self) -> None:
        """Refuse new ops, wait until everything queued is committed, disconnect."""
        await self._close_queue()
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def _run_group(self, work: list[Work]) -> list[Any]:
        # A lost connection fails this group (never acknowledged); the next reconnects.
        conn = await self._connection()
        try:
            return await _attempt(conn, work, savepoints=False, owner=self.owner)
        except _Retry:
            return await _attempt(conn, work, savepoints=True, owner=self.owner)

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await self._connect()
        return self._conn


async def _attempt(
    conn: asyncpg.Connection, work: Sequence[Work], *, savepoints: bool, owner: Owner | None
) -> list[Any]:
    outcomes: list[Any] = []
    async with conn.transaction():
        await _claim_request_ids(conn, work)
        i = 0
        while i < len(work):
            item = work[i]
            if isinstance(item, Append):
                j = i
                while j < len(work) and isinstance(work[j], Append):
                    j += 1
                run: list[Append] = [w for w in work[i:j] if isinstance(w, Append)]
                if savepoints:
                    for append in run:
                        outcomes.append(await _in_savepoint(conn, _single_append(append, owner)))
                else:
                    outcomes.extend(await _fast(conn, partial(_append_run, run, owner)))
                i = j
                continue
            if savepoints:
                outcomes.append(await _in_savepoint(conn, item))
            else:
                outcomes.append(await _fast(conn, item))
            i += 1
    return outcomes


# Two replicas given the same starts insert the same request_ids, each in a group of
# its own and not always in one order: halfway through, each would wait for a key the
# other holds, and PostgreSQL would fail one with a deadlock. So a group first takes a
# transaction-scoped advisory lock per request_id it creates, in one order in every
# process: the second group waits for the first's commit before inserting anything,
# then finds those executions. unnest() yields the sorted keys in array order.
_CLAIM = "SELECT count(pg_advisory_xact_lock(key)) FROM unnest($1::bigint[]) AS key"


async def _claim_request_ids(conn: asyncpg.Connection, work: Sequence[Work]) -> None:
    request_ids = {w.record.request_id for w in work if isinstance(w, CreateExecution)}
    request_ids.discard("")
    if request_ids:
        await conn.fetchval(_CLAIM, sorted(map(_lock_key, request_ids)))


def _lock_key(request_id: str) -> int:
    digest = hashlib.blake2b(request_id.encode(), digest_size=8, person=b"request_id").digest()
    return int.from_bytes(digest, "big", signed=True)


async def _append_run(
    run: list[Append], owner: Owner | None, conn: asyncpg.Connection
) -> list[Any]:
    return await append_many(conn, run, owner)


def _single_append(item: Append, owner: Owner | None) -> Op:
    async def op(conn: asyncpg.Connection) -> Any:
        (outcome,) = await append_many(conn, [item], owner)
        if isinstance(outcome, Failed):
            raise outcome.error
        return outcome

    return op


async def _fast(conn: asyncpg.Connection, op: Op) -> Any:
    try:
        return await op(conn)
    except ExecplanError as exc:  # raised before the op wrote anything
        return Failed(exc)
    except asyncpg.PostgresError as exc:
        raise _Retry from exc


async def _in_savepoint(conn: asyncpg.Connection, op: Op) -> Any:
    try:
        async with conn.transaction():  # nested: SAVEPOINT / RELEASE or ROLLBACK TO
            return await op(conn)
    except ExecplanError as exc:
        return Failed(exc)
    except asyncpg.PostgresError as exc:
        return Failed(_translate(exc))


def _translate(exc: asyncpg.PostgresError) -> BaseException:
    error: ExecplanError
    if isinstance(exc, asyncpg.UniqueViolationError):
        # Another process wrote the same key between our check and our write.
        error = ConcurrencyConflict(f"concurrent write: {exc}")
    else:
        error = StoreError(f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error
