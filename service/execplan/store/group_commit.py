"""The part of group commit every backend shares: queue, drain, settle.

Callers `enqueue` work and get one future each. A single drain task takes everything
pending (up to `max_group`), hands it to the backend's `_run_group` as ONE
transaction, and only after it returns (committed) resolves each future: with the
op's result, or with the `ExecplanError` of an op that was rejected (`Failed`, which
wrote nothing). If the transaction fails as a whole, every op of the group gets a
`StoreError`: none of it is acknowledged. Work queued while a commit is in flight
waits for the next one, so groups grow with the load and nothing waits on a timer.

Caller cancellation does not withdraw an op: it may still commit (at-least-once).
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from execplan.errors import ExecplanError, StoreError, Unavailable

W = TypeVar("W")


@dataclass(slots=True)
class WriterStats:
    """Counters for tests and metrics: `operations / transactions` is the group size."""

    transactions: int = 0
    operations: int = 0
    largest_group: int = 0


@dataclass(frozen=True, slots=True)
class Failed:
    """The outcome of an op that was rejected and wrote nothing."""

    error: BaseException


class GroupCommitQueue(abc.ABC, Generic[W]):
    def __init__(self, max_group: int = 5000) -> None:
        # Bounds one transaction's size so a burst cannot delay the first caller forever.
        self._max_group = max_group
        self._pending: list[tuple[W, asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self._closed = False
        self.stats = WriterStats()

    @abc.abstractmethod
    async def _run_group(self, work: list[W]) -> list[Any]:
        """Run `work` as one transaction and commit it; one outcome per item
        (`Failed` for a rejected op). Raises if the transaction as a whole failed."""

    def enqueue(self, work: Sequence[W]) -> list[asyncio.Future[Any]]:
        """Queue several ops at once (they land in the same group unless it is full)."""
        if self._closed:
            raise Unavailable("store is closed")
        if not work:
            return []
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Any]] = []
        for item in work:
            future = loop.create_future()
            self._pending.append((item, future))
            futures.append(future)
        if self._drainer is None:
            # Started, not run: it first runs after the current callbacks, by which time
            # every coroutine woken in this loop iteration has queued its op too.
            self._drainer = loop.create_task(self._drain())
        return futures

    async def _close_queue(self) -> None:
        """Refuse new ops, then wait until everything queued is committed."""
        self._closed = True
        if self._drainer is not None:
            await asyncio.shield(self._drainer)

    async def _drain(self) -> None:
        group: list[tuple[W, asyncio.Future[Any]]] = []
        try:
            while self._pending:
                group = self._pending[: self._max_group]
                del self._pending[: self._max_group]
                await self._commit(group)
                group = []
        finally:
            self._drainer = None
            # Reached with unresolved futures only if the drainer was cancelled (loop
            # shutdown) or broke: no caller may be left waiting forever. The group in
            # flight may or may not have committed; the caller cannot be told which.
            leftover = group + self._pending
            self._pending = []
            fail_all(leftover, Unavailable, "store writer stopped; outcome unknown")

    async def _commit(self, group: list[tuple[W, asyncio.Future[Any]]]) -> None:
        try:
            outcomes = await self._run_group([item for item, _ in group])
        except Exception as exc:
            # Rolled back (or the commit itself failed: unknowable): never acknowledged.
            fail_all(group, StoreError, f"group commit failed: {exc}", exc)
            return
        self.stats.transactions += 1
        self.stats.operations += len(group)
        self.stats.largest_group = max(self.stats.largest_group, len(group))
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if future.done():  # the caller was cancelled; its op still committed
                continue
            if isinstance(outcome, Failed):
                future.set_exception(outcome.error)
            else:
                future.set_result(outcome)


def fail_all(
    group: Sequence[tuple[Any, asyncio.Future[Any]]],
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
