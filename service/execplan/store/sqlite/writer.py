"""Group commit: every write of the process goes through one `GroupCommitWriter`.

A write is a plain function `op(sqlite3.Connection) -> result` (see `writes.py`) that
raises its `ExecplanError`s only before its first write.
`submit(op)` queues it and awaits its outcome. A single drain task takes *everything*
pending, runs it on the writer connection's thread in one hop as one transaction::

    BEGIN IMMEDIATE
      op_1(conn)        -- a rejected op (conflict, not found) has written nothing
      op_2(conn)
      ...
    COMMIT              -- one fsync (synchronous=FULL) for the whole group

and only then resolves each caller's future. Writes submitted while a commit is in
flight wait for the next one, so the group grows with the load (no timer, no added
latency when idle). A rejected op never fails the rest of the group; an op that breaks
part-way (an unexpected SQLite error) makes `run_group` roll back and re-run the
group with a SAVEPOINT around each op, so it is undone alone.
If the transaction itself fails (disk full, I/O error), every op of the group gets a
`StoreError`: none of it is acknowledged.

Caller cancellation does not withdraw an op: it may still commit (at-least-once),
exactly as if the process had died after the commit and before the reply.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import aiosqlite
from execplan.errors import ExecplanError, StoreError

from ..group_commit import Failed, GroupCommitQueue, WriterStats
from .thread import run_on

__all__ = ["GroupCommitWriter", "Op", "WriterStats", "run_group"]

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]


class GroupCommitWriter(GroupCommitQueue[Op]):
    """The SQLite writer: each group runs on the writer connection's thread in one hop."""

    def __init__(self, conn: aiosqlite.Connection, max_group: int = 5000) -> None:
        super().__init__(max_group)
        self._conn = conn

    async def submit(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run `op` in the next group transaction; returns after that commit."""
        (future,) = self.enqueue([op])
        result: T = await future
        return result

    async def close(self) -> None:
        """Refuse new ops, then wait until everything queued is committed."""
        await self._close_queue()

    async def _run_group(self, work: list[Op]) -> list[Any]:
        return await run_on(self._conn, partial(run_group, work))


class _Retry(Exception):
    """An op failed after writing: the fast attempt cannot undo just that op."""


def run_group(ops: Sequence[Op], conn: sqlite3.Connection) -> list[Any]:
    """Run `ops` in one transaction and commit. Runs on the writer thread.

    Fast attempt first: no savepoints, which is correct because every op raises its
    `ExecplanError`s (conflict, not found, ...) before its first write, and a single
    failing SQL statement undoes itself. Only an unexpected error part-way through an
    op (a `sqlite3.Error` after an earlier statement of that op succeeded) needs a
    savepoint; then the whole transaction is rolled back and the group re-run with a
    savepoint around each op. The profile of the executor showed the SAVEPOINT/RELEASE
    pair as ~10% of the writer thread.
    """
    try:
        return _attempt(ops, conn, savepoints=False)
    except _Retry:
        return _attempt(ops, conn, savepoints=True)


def _attempt(ops: Sequence[Op], conn: sqlite3.Connection, *, savepoints: bool) -> list[Any]:
    outcomes: list[Any] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for op in ops:
            outcomes.append(_run_op(op, conn) if savepoints else _run_op_fast(op, conn))
            if not conn.in_transaction:
                # SQLite rolled back on its own (I/O error, ...) or an op ended the
                # transaction: later ops would run in autocommit, unacknowledged.
                raise StoreError("the group transaction ended early; nothing committed")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


def _run_op_fast(op: Op, conn: sqlite3.Connection) -> Any:
    try:
        return op(conn)
    except ExecplanError as exc:  # raised before the op wrote anything
        return Failed(exc)
    except Exception as exc:
        raise _Retry from exc


def _run_op(op: Op, conn: sqlite3.Connection) -> Any:
    conn.execute("SAVEPOINT op")
    try:
        result = op(conn)
    except Exception as exc:
        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        return Failed(_translate(exc))
    conn.execute("RELEASE op")
    return result


def _translate(exc: Exception) -> BaseException:
    if isinstance(exc, ExecplanError):
        return exc
    error = StoreError(f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error
