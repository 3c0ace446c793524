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

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import aiosqlite
from execplan.errors import ExecplanError, StoreError, Unavailable

from .thread import run_on

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], Any]


@dataclass(slots=True)
class WriterStats:
    """Counters for tests and metrics: `operations / transactions` is the group size."""

    transactions: int = 0
    operations: int = 0
    largest_group: int = 0


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


class GroupCommitWriter:
    def __init__(self, conn: aiosqlite.Connection, max_group: int = 5000) -> None:
        self._conn = conn
        # Bounds one transaction's size so a burst cannot delay the first caller forever.
        self._max_group = max_group
        self._pending: list[tuple[Op, asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self._closed = False
        self.stats = WriterStats()

    async def submit(self, op: Callable[[sqlite3.Connection], T]) -> T:
        """Run `op` in the next group transaction; returns after that commit."""
        (future,) = self.enqueue([op])
        result: T = await future
        return result

    def enqueue(self, ops: Sequence[Op]) -> list[asyncio.Future[Any]]:
        """Queue several ops at once (they land in the same group unless it is full)."""
        if self._closed:
            raise Unavailable("store is closed")
        if not ops:
            return []
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Any]] = []
        for op in ops:
            future = loop.create_future()
            self._pending.append((op, future))
            futures.append(future)
        if self._drainer is None:
            # Started, not run: it first runs after the current callbacks, by which time
            # every coroutine woken in this loop iteration has queued its op too.
            self._drainer = loop.create_task(self._drain())
        return futures

    async def close(self) -> None:
        """Refuse new ops, then wait until everything queued is committed."""
        self._closed = True
        if self._drainer is not None:
            await asyncio.shield(self._drainer)

    async def _drain(self) -> None:
        group: list[tuple[Op, asyncio.Future[Any]]] = []
        try:
            while self._pending:
                group = self._pending[: self._max_group]
                del self._pending[: self._max_group]
                await self._commit(group)
        finally:
            self._drainer = None
            # Reached with unresolved futures only if the drainer was cancelled (loop
            # shutdown) or broke: no caller may be left waiting forever. The group in
            # flight may or may not have committed; the caller cannot be told which.
            leftover = group + self._pending
            self._pending = []
            _fail(leftover, Unavailable, "store writer stopped; outcome unknown")

    async def _commit(self, group: list[tuple[Op, asyncio.Future[Any]]]) -> None:
        ops = [op for op, _ in group]
        try:
            outcomes = await run_on(self._conn, partial(run_group, ops))
        except Exception as exc:
            # Rolled back (or, after a failed fsync, unknowable): never acknowledged.
            _fail(group, StoreError, f"group commit failed: {exc}", exc)
            return
        self.stats.transactions += 1
        self.stats.operations += len(group)
        self.stats.largest_group = max(self.stats.largest_group, len(group))
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if future.done():  # the caller was cancelled; its op still committed
                continue
            if isinstance(outcome, _Failed):
                future.set_exception(outcome.error)
            else:
                future.set_result(outcome)


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
        return _Failed(exc)
    except Exception as exc:
        raise _Retry from exc


def _run_op(op: Op, conn: sqlite3.Connection) -> Any:
    conn.execute("SAVEPOINT op")
    try:
        result = op(conn)
    except Exception as exc:
        conn.execute("ROLLBACK TO op")
        conn.execute("RELEASE op")
        return _Failed(_translate(exc))
    conn.execute("RELEASE op")
    return result


def _fail(
    group: list[tuple[Op, asyncio.Future[Any]]],
    kind: type[ExecplanError],
    message: str,
    cause: BaseException | None = None,
) -> None:
    for _, future in group:
        if not future.done():
            # One exception object per caller: a shared one would collect every
            # caller's traceback.
            error = kind(message)
            error.__cause__ = cause
            future.set_exception(error)


def _translate(exc: Exception) -> BaseException:
    if isinstance(exc, ExecplanError):
        return exc
    error = StoreError(f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error
