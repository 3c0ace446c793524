"""The scheduler against real stores (memory, SQLite) with a starter that creates
executions the way the engine does (one transaction with the schedule row) and a
clock the test moves."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from execplan.errors import AlreadyExists, InvalidArgument, Overloaded
from execplan.schedules.model import Action, Definition, from_record
from execplan.schedules.scheduler import ScheduledRun, Scheduler
from execplan.schedules.spec import MINUTE, Spec
from execplan.search import SearchValue
from execplan.store import Append, ExecutionRecord, MemoryStore, SqliteStore, Store, StoredEvent

T0 = 1_800_000_000_000 - (1_800_000_000_000 % MINUTE)  # a whole minute


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


class Starter:
    """Creates the execution and the schedule row in one store call, as the engine."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.ids = itertools.count(1)
        self.runs: list[ScheduledRun] = []
        self.fail: Exception | None = None

    async def start_run(self, run: ScheduledRun) -> tuple[str, bool]:
        if self.fail is not None:
            raise self.fail
        execution_id = f"x{next(self.ids):04}"
        record = ExecutionRecord(
            execution_id,
            run.plan_id,
            "wf",
            "RUNNING",
            run.slot_ms,
            run.slot_ms,
            0,
            request_id=run.request_id,
            search_attributes=dict(run.search_attributes),
        )
        event = StoredEvent(execution_id, 1, "execution_started", run.slot_ms, b"")
        stored, created = await self.store.create_execution(
            record, [event], schedule=run.update(execution_id)
        )
        if created:
            self.runs.append(run)
        return stored.execution_id, created


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    store: Store = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "db")
    await store.open()
    yield store
    await store.close()


def definition(name: str = "every-minute", **spec: object) -> Definition:
    return Definition(
        name,
        Spec(**{"interval_ms": MINUTE, **spec}),  # type: ignore[arg-type]
        Action("plan-1", "wf", {"n": 1.0}, "tenant", {"team": SearchValue.of("ops")}),
    )


async def finish(store: Store, scheduler: Scheduler, execution_id: str) -> None:
    await store.append([Append(execution_id, (), state="SUCCEEDED", updated_at_ms=1)])
    scheduler.execution_finished(execution_id)


async def slots_of(store: Store) -> list[int]:
    records = await store.list_executions(limit=1000)
    return sorted(int(r.search_attributes["execplan_scheduled_at"].value) for r in records)


async def test_each_slot_fires_once_also_after_a_restart(store: Store) -> None:
    clock = Clock()
    starter = Starter(store)
    scheduler = Scheduler(store, starter, clock=clock)
    await scheduler.create(definition(overlap="allow"))
    assert await scheduler.tick("every-minute", clock.now) == T0 + MINUTE
    clock.now = T0 + MINUTE
    assert await scheduler.tick("every-minute", clock.now) == T0 + MINUTE  # fired: look again
    assert await scheduler.tick("every-minute", clock.now) == T0 + 2 * MINUTE
    # A new scheduler (a restart) on the same store fires nothing twice.
    again = Scheduler(store, starter, clock=clock)
    clock.now = T0 + 2 * MINUTE + 5
    for _ in range(3):
        await again.tick("every-minute", clock.now)
    assert await slots_of(store) == [T0 + MINUTE, T0 + 2 * MINUTE]
    (run, *_) = await store.list_executions()
    assert run.request_id == f"schedule:every-minute:{T0 + 2 * MINUTE}"
    assert run.search_attributes["execplan_schedule"] == SearchValue.of("every-minute")
    assert run.search_attributes["team"] == SearchValue.of("ops")
    record = await store.get_schedule("every-minute")
    assert record is not None
    _, progress = from_record(record)
    assert (progress.runs, record.last_slot_ms) == (2, T0 + 2 * MINUTE)


async def test_replicas_firing_together_start_one_run_per_slot(store: Store) -> None:
    clock = Clock()
    starter = Starter(store)
    replicas = [Scheduler(store, starter, clock=clock) for _ in range(4)]
    await replicas[0].create(definition(overlap="allow"))
    for step in range(1, 4):
        clock.now = T0 + step * MINUTE
        await asyncio.gather(*(r.tick("every-minute", clock.now) for r in replicas))
        await asyncio.gather(*(r.tick("every-minute", clock.now) for r in replicas))
    assert await slots_of(store) == [T0 + MINUTE, T0 + 2 * MINUTE, T0 + 3 * MINUTE]


async def test_skip_drops_a_slot_while_the_last_run_runs(store: Store) -> None:
    clock = Clock()
    scheduler = Scheduler(store, Starter(store), clock=clock)
    await scheduler.create(definition(overlap="skip"))
    clock.now = T0 + MINUTE
    await scheduler.tick("every-minute", clock.now)
    clock.now = T0 + 2 * MINUTE
    await scheduler.tick("every-minute", clock.now)  # the first still runs: skipped
    (first,) = await store.list_executions()
    await finish(store, scheduler, first.execution_id)
    clock.now = T0 + 3 * MINUTE
    await scheduler.tick("every-minute", clock.now)
    assert await slots_of(store) == [T0 + MINUTE, T0 + 3 * MINUTE]
    record = await store.get_schedule("every-minute")
    assert record is not None
    assert from_record(record)[1].skipped == 1


async def test_buffer_starts_waiting_slots_in_order_when_the_run_ends(store: Store) -> None:
    clock = Clock()
    scheduler = Scheduler(store, Starter(store), clock=clock)
    await scheduler.create(definition(overlap="buffer"))
    clock.now = T0 + MINUTE
    await scheduler.tick("every-minute", clock.now)
    clock.now = T0 + 3 * MINUTE
    await scheduler.tick("every-minute", clock.now)
    record = await store.get_schedule("every-minute")
    assert record is not None
    assert from_record(record)[1].buffered == (T0 + 2 * MINUTE, T0 + 3 * MINUTE)
    assert await slots_of(store) == [T0 + MINUTE]
    for expected in (
        [T0 + MINUTE, T0 + 2 * MINUTE],
        [T0 + MINUTE, T0 + 2 * MINUTE, T0 + 3 * MINUTE],
    ):
        running = [r for r in await store.list_executions() if r.state == "RUNNING"]
        assert len(running) == 1
        await finish(store, scheduler, running[0].execution_id)
        await scheduler.tick("every-minute", clock.now)
        assert await slots_of(store) == expected


async def test_slots_missed_beyond_the_catchup_window_are_skipped(store: Store) -> None:
    clock = Clock()
    scheduler = Scheduler(store, Starter(store), clock=clock)
    await scheduler.create(definition(overlap="allow", catchup_ms=3 * MINUTE))
    clock.now = T0 + 10 * MINUTE + 1  # down for ten slots
    for _ in range(5):
        await scheduler.tick("every-minute", clock.now)
    # Slots 8, 9 and 10 are within three minutes: they run; 1..7 are skipped.
    assert await slots_of(store) == [T0 + m * MINUTE for m in (8, 9, 10)]
    record = await store.get_schedule("every-minute")
    assert record is not None
    assert from_record(record)[1].skipped == 7


async def test_paused_fires_nothing_and_resume_does_not_catch_up(store: Store) -> None:
    clock = Clock()
    scheduler = Scheduler(store, Starter(store), clock=clock)
    await scheduler.create(definition(overlap="allow"))
    await scheduler.pause("every-minute", "maintenance")
    clock.now = T0 + 3 * MINUTE
    assert await scheduler.tick("every-minute", clock.now) is None
    record = await scheduler.resume("every-minute")
    assert from_record(record)[0].note == ""
    await scheduler.tick("every-minute", clock.now)
    assert await slots_of(store) == []
    clock.now = T0 + 4 * MINUTE
    await scheduler.tick("every-minute", clock.now)
    assert await slots_of(store) == [T0 + 4 * MINUTE]


async def test_backfill_runs_each_slot_once(store: Store) -> None:
    clock = Clock()
    scheduler = Scheduler(store, Starter(store), clock=clock)
    await scheduler.create(definition(overlap="allow"))
    clock.now = T0 + 2 * MINUTE
    await scheduler.tick("every-minute", clock.now)  # slots 1 and 2 by the clock
    await scheduler.tick("every-minute", clock.now)
    result = await scheduler.backfill("every-minute", T0 - 3 * MINUTE, T0 + 2 * MINUTE)
    assert (result.slots, result.started, result.already_run) == (6, 4, 2)
    assert len(result.execution_ids) == 4
    again = await scheduler.backfill("every-minute", T0 - 3 * MINUTE, T0 + 2 * MINUTE)
    assert (again.started, again.already_run) == (0, 6)
    assert await slots_of(store) == [T0 + m * MINUTE for m in range(-3, 3)]
    with pytest.raises(InvalidArgument):
        await scheduler.backfill("every-minute", T0, T0 + 10 * MINUTE)


async def test_backfill_with_skip_starts_one(store: Store) -> None:
    clock = Clock()
    scheduler = Scheduler(store, Starter(store), clock=clock)
    await scheduler.create(definition())
    result = await scheduler.backfill("every-minute", T0 - 3 * MINUTE, T0, "skip")
    assert (result.started, result.skipped) == (1, 3)


async def test_a_failing_start_is_retried_and_says_why(store: Store) -> None:
    clock = Clock()
    starter = Starter(store)
    scheduler = Scheduler(store, starter, clock=clock)
    await scheduler.create(definition())
    starter.fail = Overloaded("busy", 1.0)
    clock.now = T0 + MINUTE
    retry = await scheduler.tick("every-minute", clock.now)
    assert retry == clock.now + 5_000
    record = await store.get_schedule("every-minute")
    assert record is not None
    assert "busy" in from_record(record)[1].last_error
    starter.fail = None
    clock.now = retry
    await scheduler.tick("every-minute", clock.now)
    assert await slots_of(store) == [T0 + MINUTE]
    record = await store.get_schedule("every-minute")
    assert record is not None
    assert from_record(record)[1].last_error == ""


async def test_create_is_idempotent_per_definition(store: Store) -> None:
    scheduler = Scheduler(store, Starter(store), clock=Clock())
    first, created = await scheduler.create(definition())
    again, created_again = await scheduler.create(definition())
    assert (created, created_again) == (True, False)
    assert again == first
    with pytest.raises(AlreadyExists):
        await scheduler.create(definition(interval_ms=2 * MINUTE))


async def test_the_loop_fires_on_its_own(store: Store) -> None:
    starter = Starter(store)
    scheduler = Scheduler(store, starter)  # the wall clock
    await scheduler.create(definition(interval_ms=1000, overlap="allow"))
    await scheduler.start()
    try:
        for _ in range(100):
            if len(starter.runs) >= 2:
                break
            await asyncio.sleep(0.05)
    finally:
        await scheduler.stop()
    assert len(starter.runs) >= 2
    slots = [r.slot_ms for r in starter.runs]
    assert slots == sorted(set(slots))
