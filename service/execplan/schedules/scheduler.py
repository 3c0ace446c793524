"""The scheduler: fires each schedule's slots, once each, durably.

    scheduler = Scheduler(store, starter)        # starter: the engine (see `Starter`)
    await scheduler.start()                     # a background loop
    await scheduler.create(definition)          # and pause / resume / delete / backfill
    await scheduler.stop()

How a slot fires exactly once, across restarts and replicas: every schedule row
carries `last_slot_ms` (the latest slot handled) and a `version`. A due slot starts
its run with request_id `schedule:<name>:<slot>` and, in the same store transaction,
moves the row to the next version with `last_slot_ms = slot`
(`Store.create_execution(schedule=...)`). A second replica (or this one after a
crash) that fires the same slot finds the request_id taken and writes nothing; one
whose view of the row is stale gets `ConcurrencyConflict`, reloads, and sees the slot
handled. Skipping or buffering a slot is the same compare-and-set without a run.

Wake-ups: the loop sleeps until the earliest due slot of any schedule, or until
`wake()` (a schedule changed here) or `execution_finished()` (a run it waits for
ended), or `refresh_ms` (changes made by other replicas). Nothing polls in between.

Missed slots (no executor ran, or a restart took longer): a slot whose start time is
more than the spec's catch-up window in the past is skipped and counted; the newer
ones fire. A paused schedule fires nothing; resuming does not run the slots that came
due while paused. A start that fails (overloaded, plan missing) is retried every few
seconds until the slot leaves the catch-up window; the reason is kept in `last_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from execplan.aio import cancel_and_wait
from execplan.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    ExecplanError,
    FieldViolation,
    InvalidArgument,
    LimitExceeded,
    NotFound,
)
from execplan.search import SearchValue
from execplan.search.attributes import SCHEDULE, SCHEDULED_AT
from execplan.store.port import TERMINAL_STATES, Store
from execplan.store.schedules import ScheduleRecord, ScheduleUpdate

from .model import Definition, Progress, Run, from_record, next_version, request_id, to_record
from .spec import Overlap

log = logging.getLogger("execplan.schedules")

MAX_SCHEDULES = 10_000
MAX_BACKFILL_SLOTS = 1000
# Slots handled per schedule per pass: a long backlog cannot hold the loop.
_SLOTS_PER_PASS = 100
_RETRY_MS = 5_000
_MAX_SKIP_COUNT = 1_000_000


@dataclass(frozen=True, slots=True)
class ScheduledRun:
    """One run to start: `update(execution_id)` is the schedule row to write in the
    same transaction as the execution (see the module docstring)."""

    schedule: str
    slot_ms: int
    request_id: str
    plan_id: str
    inputs: Mapping[str, object]
    fairness_key: str
    search_attributes: Mapping[str, SearchValue]
    update: Callable[[str], ScheduleUpdate]


class Starter(Protocol):
    async def start_run(self, run: ScheduledRun) -> tuple[str, bool]:
        """Start the run; (execution_id, created). Not created: the request_id had
        started an execution before and nothing was written."""
        ...


@dataclass(frozen=True, slots=True)
class BackfillResult:
    slots: int = 0
    started: int = 0
    already_run: int = 0
    skipped: int = 0
    buffered: int = 0
    execution_ids: tuple[str, ...] = ()


def wall_ms() -> int:
    return int(time.time() * 1000)


class Scheduler:
    def __init__(
        self,
        store: Store,
        starter: Starter,
        *,
        clock: Callable[[], int] = wall_ms,
        refresh_ms: int = 30_000,
    ) -> None:
        self._store = store
        self._starter = starter
        self._clock = clock
        self._refresh_ms = refresh_ms
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        # execution id -> schedule name, of runs a schedule waits for (skip/buffer).
        self._waiting_on: dict[str, str] = {}

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="execplan-scheduler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def wake(self) -> None:
        self._wake.set()

    def execution_finished(self, execution_id: str) -> None:
        """A run ended: wake the loop if a schedule waits for it."""
        if execution_id in self._waiting_on:
            self._wake.set()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            now = self._clock()
            wake_at = now + self._refresh_ms
            try:
                for record in await self._all():
                    due = await self.tick(record.name, now)
                    if due is not None:
                        wake_at = min(wake_at, due)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler pass failed; retrying")
                wake_at = now + _RETRY_MS
            delay = max(0.0, (wake_at - self._clock()) / 1000)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _all(self) -> list[ScheduleRecord]:
        records: list[ScheduleRecord] = []
        after = ""
        while True:
            page = await self._store.list_schedules(1000, after)
            records += page
            if len(page) < 1000:
                return records
            after = page[-1].name

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    # -- one schedule --------------------------------------------------------------------

    async def tick(self, name: str, now: int) -> int | None:
        """Handle what is due of one schedule at `now`; when to look at it again."""
        async with self._lock(name):
            for _ in range(10):
                record = await self._store.get_schedule(name)
                if record is None:
                    return None
                try:
                    return await self._advance(record, now)
                except ConcurrencyConflict:
                    continue  # another replica or call changed it: look again
            return now + _RETRY_MS

    async def _advance(self, record: ScheduleRecord, now: int) -> int | None:
        definition, progress = from_record(record)
        if definition.paused:
            return None
        spec = definition.spec
        name = definition.name
        if progress.buffered:
            progress = await self._refresh_running(name, progress)
            if not progress.running:
                return (
                    await self._fire(record, definition, progress, progress.buffered[0], now) or now
                )
        last = record.last_slot_ms
        refreshed = False
        for _ in range(_SLOTS_PER_PASS):
            slot = spec.next_slot(last)
            if slot is None:
                return None
            due = slot + spec.jitter_for(name, slot)
            if due > now:
                return due
            horizon = now - spec.catchup_ms - spec.jitter_ms
            if slot <= horizon:  # missed, with every later slot up to the horizon
                progress = progress.skip(spec.count_between(last, horizon, _MAX_SKIP_COUNT))
                record = await self._write(record, definition, progress, horizon, now)
                last = horizon
                continue
            if now - due > spec.catchup_ms:  # missed by its own jitter
                progress = progress.skip()
                record = await self._write(record, definition, progress, slot, now)
                last = slot
                continue
            if spec.overlap != Overlap.ALLOW and not refreshed:
                progress = await self._refresh_running(name, progress)
                refreshed = True
            if spec.overlap == Overlap.ALLOW or not progress.running:
                return await self._fire(record, definition, progress, slot, now) or now
            progress = progress.skip() if spec.overlap == Overlap.SKIP else progress.buffer(slot)
            record = await self._write(record, definition, progress, slot, now)
            last = slot
        return now

    async def _refresh_running(self, name: str, progress: Progress) -> Progress:
        """Drop the runs that ended from `progress.running`; wait for the others."""
        still: list[str] = []
        for execution_id in progress.running:
            stored = await self._store.get_execution(execution_id)
            if stored is not None and stored.state not in TERMINAL_STATES:
                still.append(execution_id)
                self._waiting_on[execution_id] = name
            else:
                self._waiting_on.pop(execution_id, None)
        return dataclasses.replace(progress, running=tuple(still))

    async def _write(
        self,
        record: ScheduleRecord,
        definition: Definition,
        progress: Progress,
        last_slot_ms: int,
        now: int,
    ) -> ScheduleRecord:
        new = next_version(record, definition, progress, last_slot_ms, now)
        await self._store.update_schedule(ScheduleUpdate(new, record.version))
        return new

    async def _fire(
        self,
        record: ScheduleRecord,
        definition: Definition,
        progress: Progress,
        slot: int,
        now: int,
        *,
        backfill: bool = False,
        track: bool | None = None,
    ) -> int | None:
        """Start the run of `slot`; None when started (or found started), else when to
        try again. Moves `last_slot_ms` to the slot unless it is a backfill or a
        buffered slot (both behind it). `track`: remember the run as running (for the
        skip and buffer policies; default: the schedule's policy is not allow)."""
        name = definition.name
        last_slot = slot if not backfill and slot > record.last_slot_ms else record.last_slot_ms
        if track is None:
            track = definition.spec.overlap != Overlap.ALLOW

        def update(execution_id: str) -> ScheduleUpdate:
            run = Run(slot, execution_id, now, backfill)
            started = progress.started(run, track=track)
            new = next_version(record, definition, started, last_slot, now)
            return ScheduleUpdate(new, record.version)

        action = definition.action
        attributes = dict(action.search_attributes)
        attributes[SCHEDULE] = SearchValue("string", name)
        attributes[SCHEDULED_AT] = SearchValue.time(slot)
        run = ScheduledRun(
            schedule=name,
            slot_ms=slot,
            request_id=request_id(name, slot),
            plan_id=action.plan_id,
            inputs=action.inputs,
            fairness_key=action.fairness_key,
            search_attributes=attributes,
            update=update,
        )
        try:
            execution_id, created = await self._starter.start_run(run)
        except ConcurrencyConflict:
            raise
        except ExecplanError as exc:
            log.warning("schedule %s: cannot start the run of slot %d: %s", name, slot, exc)
            failed = dataclasses.replace(progress, last_error=f"{type(exc).__name__}: {exc}")
            if failed != progress:
                await self._write(record, definition, failed, record.last_slot_ms, now)
            return now + _RETRY_MS
        if created:
            if track:
                self._waiting_on[execution_id] = name
            log.info("schedule %s started %s for slot %d", name, execution_id, slot)
            return None
        # Started before (a crash after the commit, another replica, a backfill): the
        # row already says so unless a backfill started it; then only mark it handled.
        current = await self._store.get_schedule(name)
        if current is not None and current.last_slot_ms < slot and not backfill:
            current_definition, current_progress = from_record(current)
            running = tuple(p for p in current_progress.running if p != execution_id)
            moved = dataclasses.replace(
                current_progress,
                running=running,
                buffered=tuple(s for s in current_progress.buffered if s != slot),
            )
            await self._write(current, current_definition, moved, slot, now)
        return None

    # -- operations (the wire's) ------------------------------------------------------

    async def create(
        self, definition: Definition, now: int | None = None
    ) -> tuple[ScheduleRecord, bool]:
        """Store a new schedule; its first slot is the first after now (or start_at).
        The same name again: (existing, False) when the definition is the same,
        AlreadyExists when it differs."""
        now = self._clock() if now is None else now
        existing = await self._store.get_schedule(definition.name)
        if existing is None:
            count = len(await self._store.list_schedules(MAX_SCHEDULES))
            if count >= MAX_SCHEDULES:
                raise LimitExceeded(
                    f"this server holds at most {MAX_SCHEDULES} schedules",
                    [FieldViolation("name", "delete a schedule first")],
                )
            created = dataclasses.replace(definition, created_ms=now)
            record = to_record(created, Progress(), now, 1, now)
            existing, made = await self._store.create_schedule(record)
            if made:
                self.wake()
                return existing, True
        stored, _ = from_record(existing)
        if dataclasses.replace(stored, created_ms=0, paused=False, note="") != dataclasses.replace(
            definition, created_ms=0, paused=False, note=""
        ):
            raise AlreadyExists(
                f"schedule {definition.name!r} already exists with another definition; "
                "delete it first to replace it",
                reason="SCHEDULE_EXISTS",
                metadata={"schedule": definition.name},
            )
        return existing, False

    async def list(self, limit: int, after: str = "") -> list[ScheduleRecord]:
        return await self._store.list_schedules(limit, after)

    async def get(self, name: str) -> ScheduleRecord:
        record = await self._store.get_schedule(name)
        if record is None:
            raise NotFound(f"schedule {name!r} not found")
        return record

    async def pause(self, name: str, reason: str) -> ScheduleRecord:
        return await self._change(
            name,
            lambda d, p, last, now: (dataclasses.replace(d, paused=True, note=reason), p, last),
        )

    async def resume(self, name: str) -> ScheduleRecord:
        # Slots that came due while paused are not run: the next one is after now.
        return await self._change(
            name,
            lambda d, p, last, now: (
                dataclasses.replace(d, paused=False, note=""),
                p,
                max(last, now) if d.paused else last,
            ),
        )

    async def delete(self, name: str) -> bool:
        async with self._lock(name):
            deleted = await self._store.delete_schedule(name)
        self._locks.pop(name, None)
        return deleted

    async def _change(
        self,
        name: str,
        edit: Callable[[Definition, Progress, int, int], tuple[Definition, Progress, int]],
    ) -> ScheduleRecord:
        async with self._lock(name):
            for _ in range(10):
                record = await self.get(name)
                definition, progress = from_record(record)
                now = self._clock()
                new_definition, new_progress, last = edit(
                    definition, progress, record.last_slot_ms, now
                )
                new = next_version(record, new_definition, new_progress, last, now)
                try:
                    await self._store.update_schedule(ScheduleUpdate(new, record.version))
                except ConcurrencyConflict:
                    continue
                self.wake()
                return new
        raise ConcurrencyConflict(f"schedule {name!r} keeps changing; try again")

    async def backfill(
        self, name: str, start_ms: int, end_ms: int, overlap: str = ""
    ) -> BackfillResult:
        """Start the run of every slot in [start_ms, end_ms] that has none yet."""
        now = self._clock()
        if end_ms > now:
            raise InvalidArgument(
                "a backfill covers past slots only",
                [FieldViolation("end", "must not be in the future")],
            )
        if end_ms < start_ms:
            raise InvalidArgument("end before start", [FieldViolation("end", "before start")])
        if start_ms < 0:
            raise InvalidArgument("start before 1970", [FieldViolation("start", "after 1970")])
        async with self._lock(name):
            record = await self.get(name)
            definition, _ = from_record(record)
            slots = definition.spec.slots_between(start_ms, end_ms, MAX_BACKFILL_SLOTS)
            result = BackfillResult(slots=len(slots))
            for slot in slots:
                result = await self._backfill_slot(name, slot, overlap, result)
        self.wake()
        return result

    async def _backfill_slot(
        self, name: str, slot: int, overlap: str, result: BackfillResult
    ) -> BackfillResult:
        for _ in range(10):
            if await self._store.find_by_request(request_id(name, slot)) is not None:
                return dataclasses.replace(result, already_run=result.already_run + 1)
            record = await self.get(name)
            definition, progress = from_record(record)
            policy = overlap or definition.spec.overlap
            progress = await self._refresh_running(name, progress)
            now = self._clock()
            try:
                if policy == Overlap.ALLOW or not progress.running:
                    retry = await self._fire(
                        record,
                        definition,
                        progress,
                        slot,
                        now,
                        backfill=True,
                        track=policy != Overlap.ALLOW,
                    )
                    if retry is not None:
                        return result  # could not start (last_error says why)
                    found = await self._store.find_by_request(request_id(name, slot))
                    ids = (
                        (*result.execution_ids, found.execution_id)
                        if found
                        else result.execution_ids
                    )
                    return dataclasses.replace(
                        result, started=result.started + 1, execution_ids=ids
                    )
                if policy == Overlap.SKIP:
                    await self._write(record, definition, progress.skip(), record.last_slot_ms, now)
                    return dataclasses.replace(result, skipped=result.skipped + 1)
                buffered = progress.buffer(slot)
                await self._write(record, definition, buffered, record.last_slot_ms, now)
                return dataclasses.replace(result, buffered=result.buffered + 1)
            except ConcurrencyConflict:
                continue
        raise ConcurrencyConflict(f"schedule {name!r} keeps changing; try again")
