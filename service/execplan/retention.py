"""Retention: finished executions are deleted some time after they end.

    policy = RetentionPolicy(default_ms=30 * DAY, by_workflow={"nightly": 7 * DAY})
    pruner = Pruner(store, policy, forget=engine.forget_finished)
    await pruner.start()        # a background pass every `interval_ms`
    result = await pruner.purge(parse('workflow = "x"'), limit=1000)   # PurgeExecutions
    await pruner.stop()

What "deleted" means: the execution's events, checkpoint, search attributes and index
row go (`Store.delete_execution`); plans stay (they are shared and content-addressed).
Running executions are never touched. A workflow's own retention wins over the
server-wide one; 0 keeps its executions forever.

Why it does not stall the engine: it deletes at most `batch` executions per pass
and at most `max_events` events per store call, each call one short transaction
in the store's group commit queue between the engine's appends, and it yields to
the event loop between calls. So the writer never holds a long delete, and a
backlog (retention switched on over a year of history) drains over several passes
instead of in one burst. The SQLite file stops growing: freed pages are reused by
new rows (no VACUUM needed, and none is run: it would lock the file).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field

from execplan.aio import cancel_and_wait
from execplan.search import EMPTY, Filter
from execplan.store.port import TERMINAL_STATE_NAMES, ExecutionRecord, Store

log = logging.getLogger("execplan.retention")

DAY_MS = 86_400_000
MAX_PURGE = 10_000


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long finished executions are kept: `default_ms` (0 = forever) unless their
    workflow has its own entry in `by_workflow` (0 = forever for that workflow)."""

    default_ms: int = 0
    by_workflow: Mapping[str, int] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return bool(self.default_ms or any(self.by_workflow.values()))


@dataclass(frozen=True, slots=True)
class PurgeResult:
    execution_ids: tuple[str, ...]
    more: bool


class Pruner:
    def __init__(
        self,
        store: Store,
        policy: RetentionPolicy,
        *,
        forget: Callable[[Collection[str]], None] = lambda ids: None,
        interval_ms: int = 60_000,
        batch: int = 500,
        max_events: int = 2000,
        clock: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        """`forget(ids)`: drop deleted executions from in-memory caches (the engine)."""
        self._store = store
        self._policy = policy
        self._forget = forget
        self._interval_ms = interval_ms
        self._batch = batch
        self._max_events = max_events
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self.deleted_total = 0

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the background pass runs (only with a policy that deletes)."""
        return self._task is not None

    async def start(self) -> None:
        if self._policy.active and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="execplan-retention")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _loop(self) -> None:
        while True:
            try:
                deleted = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retention pass failed; trying again next interval")
                deleted = 0
            # A full batch means a backlog: go on soon, but leave the engine room.
            delay = 1.0 if deleted >= self._batch else self._interval_ms / 1000
            await asyncio.sleep(delay)

    # -- passes ------------------------------------------------------------------------

    async def run_once(self) -> int:
        """One pass: delete up to `batch` expired executions; how many were deleted."""
        now = self._clock()
        policy = self._policy
        expired: list[ExecutionRecord] = []
        for workflow, keep_ms in sorted(policy.by_workflow.items()):
            if keep_ms and len(expired) < self._batch:
                expired += await self._store.list_finished(
                    now - keep_ms, workflows=[workflow], limit=self._batch - len(expired)
                )
        if policy.default_ms and len(expired) < self._batch:
            expired += await self._store.list_finished(
                now - policy.default_ms,
                other_than=list(policy.by_workflow),
                limit=self._batch - len(expired),
            )
        gone = await self._delete([r.execution_id for r in expired])
        if gone:
            log.info("retention deleted %d finished executions", len(gone))
        return len(gone)

    async def purge(
        self, search: Filter = EMPTY, limit: int = 1000, *, dry_run: bool = False
    ) -> PurgeResult:
        """Finished executions matching `search`, newest first, at most `limit` (and
        MAX_PURGE): deleted, or with `dry_run` only listed."""
        limit = max(1, min(limit, MAX_PURGE))
        found = await self._store.list_executions(
            states=TERMINAL_STATE_NAMES, filter=search, limit=limit + 1
        )
        more = len(found) > limit
        ids = [r.execution_id for r in found[:limit]]
        if not dry_run:
            ids = await self._delete(ids)
        return PurgeResult(tuple(ids), more)

    async def _delete(self, execution_ids: list[str]) -> list[str]:
        gone: list[str] = []
        for execution_id in execution_ids:
            done = False
            while not done:
                done = await self._store.delete_execution(execution_id, self._max_events)
                await asyncio.sleep(0)  # other work between two bounded deletes
            gone.append(execution_id)
        if gone:
            self._forget(gone)
            self.deleted_total += len(gone)
        return gone
