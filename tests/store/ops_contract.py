"""The store contract for search attributes, filtered listing, deletion of finished
executions and schedules: every backend subclasses `OpsContract` next to
`StoreContract` (memory, SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from execplan.errors import ConcurrencyConflict, FailedPrecondition, NotFound
from execplan.search import SearchValue, parse
from execplan.store import Append, Snapshot, Store, page_cursor
from execplan.store.schedules import ScheduleRecord, ScheduleUpdate

from .contract import event, events, record

V = SearchValue.of


async def with_attributes(
    store: Store,
    execution_id: str,
    attributes: dict[str, SearchValue],
    *,
    created_at_ms: int = 1_000,
    state: str = "RUNNING",
    workflow_name: str = "orders",
) -> None:
    rec = dataclasses.replace(
        record(execution_id, created_at_ms=created_at_ms, state=state, workflow_name=workflow_name),
        search_attributes=attributes,
    )
    _, created = await store.create_execution(rec, events(execution_id, 1, 1))
    assert created


async def ids(store: Store, text: str, **kw: object) -> list[str]:
    found = await store.list_executions(filter=parse(text), **kw)  # type: ignore[arg-type]
    return [r.execution_id for r in found]


def schedule(name: str, version: int = 1, last_slot_ms: int = 0) -> ScheduleRecord:
    return ScheduleRecord(
        name, version, b"spec", b"state-%d" % version, last_slot_ms, 5, 5 + version
    )


class OpsContract:
    # -- search attributes ----------------------------------------------------------

    async def test_attributes_are_kept_by_type_and_listed(self, store: Store) -> None:
        attrs = {
            "customer": V("acme"),
            "priority": V(3),
            "score": V(0.5),
            "vip": V(True),
            "due": SearchValue.time(1_700_000_000_123),
        }
        await with_attributes(store, "e1", attrs)
        (listed,) = await store.list_executions()
        assert dict(listed.search_attributes) == attrs
        assert await store.search_attributes(["e1", "nope"]) == {"e1": attrs}

    async def test_filters_match_by_type(self, store: Store) -> None:
        await with_attributes(store, "a", {"customer": V("acme"), "priority": V(3)})
        await with_attributes(store, "b", {"customer": V("globex"), "priority": V(7.5)})
        await with_attributes(store, "c", {"customer": V("3"), "vip": V(True)}, created_at_ms=2_000)
        await with_attributes(store, "d", {}, created_at_ms=3_000, state="SUCCEEDED")

        assert await ids(store, 'customer = "acme"') == ["a"]
        assert await ids(store, "customer = acme") == ["a"]
        assert await ids(store, "customer = 3") == []  # a number never matches a string
        assert await ids(store, 'customer = "3"') == ["c"]
        assert sorted(await ids(store, "priority > 2")) == ["a", "b"]  # int and double
        assert await ids(store, "priority >= 7.5") == ["b"]
        assert await ids(store, "priority IN (3, 4)") == ["a"]
        # Present with another value only: executions without the attribute never match.
        assert await ids(store, 'customer != "acme"') == ["c", "b"]
        assert await ids(store, "customer NOT IN (acme, globex)") == ["c"]
        assert await ids(store, "vip = true") == ["c"]
        assert await ids(store, "vip != true") == []
        assert await ids(store, "state = succeeded") == ["d"]
        assert await ids(store, "state != succeeded AND customer IN (acme, globex)") == ["b", "a"]
        assert await ids(store, "created_at >= 1970-01-01T00:00:02Z") == ["d", "c"]
        assert await ids(store, "finished_at < 1970-01-02") == ["d"]
        assert await ids(store, "workflow = orders AND priority < 5 AND customer = acme") == ["a"]
        assert await ids(store, "attr.state = x") == []

    async def test_time_attributes_compare_as_times(self, store: Store) -> None:
        await with_attributes(store, "old", {"due": SearchValue.time(1_000)})
        await with_attributes(store, "new", {"due": SearchValue.time(86_400_000 * 400)})
        assert await ids(store, "due > 1970-06-01") == ["new"]
        assert await ids(store, "due <= 1970-01-01T00:00:01Z") == ["old"]
        assert await ids(store, "due = 1") == []  # a number is not a time

    async def test_appends_set_and_remove_attributes(self, store: Store) -> None:
        await with_attributes(store, "e1", {"customer": V("acme"), "step": V(1)})
        await store.append(
            [Append("e1", (event("e1", 2),), search_attributes={"step": V(2), "customer": None})]
        )
        assert await store.search_attributes(["e1"]) == {"e1": {"step": V(2)}}
        assert await ids(store, "step = 2") == ["e1"]
        assert await ids(store, "customer = acme") == []
        # Without events too (a task's update can come on its own).
        await store.append([Append("e1", (), search_attributes={"tier": V("gold")})])
        assert await ids(store, "tier = gold AND step = 2") == ["e1"]

    async def test_a_refused_append_sets_no_attributes(self, store: Store) -> None:
        await with_attributes(store, "e1", {})
        with pytest.raises(ConcurrencyConflict):
            await store.append([Append("e1", (event("e1", 5),), search_attributes={"x": V(1)})])
        assert await store.search_attributes(["e1"]) == {}

    async def test_filtered_paging_is_stable_while_executions_are_added(self, store: Store) -> None:
        for i in range(25):
            tier = V("gold") if i % 2 else V("silver")
            await with_attributes(store, f"e{i:02}", {"tier": tier}, created_at_ms=1_000 + i)
        seen: list[str] = []
        after = ""
        added = 0
        while True:
            page = await store.list_executions(filter=parse("tier = gold"), limit=4, after=after)
            seen += [r.execution_id for r in page]
            # Newer executions arriving between pages must neither shift nor repeat rows.
            await with_attributes(store, f"new{added}", {"tier": V("gold")}, created_at_ms=9_000)
            added += 1
            if len(page) < 4:
                break
            after = page_cursor(page[-1])
        assert seen == [f"e{i:02}" for i in range(24, -1, -1) if i % 2]

    # -- deleting finished executions ------------------------------------------------

    async def test_list_finished_is_oldest_end_first(self, store: Store) -> None:
        for name, ended, workflow in (("x", 30, "a"), ("y", 10, "b"), ("z", 20, "a")):
            await with_attributes(store, name, {}, workflow_name=workflow)
            await store.append([Append(name, (), state="SUCCEEDED", updated_at_ms=ended)])
        await with_attributes(store, "running", {})
        assert [r.execution_id for r in await store.list_finished(25)] == ["y", "z"]
        assert [r.execution_id for r in await store.list_finished(99, workflows=["a"])] == [
            "z",
            "x",
        ]
        found = await store.list_finished(99, other_than=["a"], limit=5)
        assert [r.execution_id for r in found] == ["y"]
        assert [r.execution_id for r in await store.list_finished(99, limit=1)] == ["y"]

    async def test_delete_execution_goes_in_bounded_steps(self, store: Store) -> None:
        await with_attributes(store, "e1", {"customer": V("acme")}, state="RUNNING")
        await store.append([Append("e1", events("e1", 2, 7), state="FAILED", updated_at_ms=5)])
        await store.save_snapshot(Snapshot("e1", 4, b"snap"))
        await with_attributes(store, "keep", {"customer": V("acme")})
        steps = 0
        while not await store.delete_execution("e1", 3):
            steps += 1
            assert steps < 10
        assert steps == 2  # 7 events, 3 per step: 3, 3, then the last one and the rest
        assert await store.get_execution("e1") is None
        assert await store.read_events("e1") == []
        assert await store.load_snapshot("e1") is None
        assert await store.search_attributes(["e1"]) == {}
        assert await ids(store, "customer = acme") == ["keep"]
        assert await store.delete_execution("e1", 3)  # gone: done

    async def test_a_partly_deleted_execution_still_reads_what_is_left(self, store: Store) -> None:
        await with_attributes(store, "e1", {})
        await store.append([Append("e1", events("e1", 2, 6), state="SUCCEEDED", updated_at_ms=5)])
        assert not await store.delete_execution("e1", 2)
        assert [e.sequence for e in await store.read_events("e1")] == [3, 4, 5, 6]
        assert [e.sequence for e in await store.read_events("e1", 4)] == [5, 6]

    async def test_running_executions_are_never_deleted(self, store: Store) -> None:
        await with_attributes(store, "e1", {})
        with pytest.raises(FailedPrecondition):
            await store.delete_execution("e1", 100)
        assert await store.get_execution("e1") is not None

    async def test_a_request_id_is_free_again_once_deleted(self, store: Store) -> None:
        rec = record("e1", request_id="r1", state="SUCCEEDED")
        await store.create_execution(rec, events("e1", 1, 1))
        assert await store.delete_execution("e1", 10)
        assert await store.find_by_request("r1") is None

    # -- schedules ---------------------------------------------------------------------

    async def test_schedule_create_get_list_delete(self, store: Store) -> None:
        first, created = await store.create_schedule(schedule("b"))
        assert created
        again, created_again = await store.create_schedule(
            dataclasses.replace(schedule("b"), spec=b"other")
        )
        assert (again, created_again) == (first, False)
        await store.create_schedule(schedule("a"))
        await store.create_schedule(schedule("c"))
        assert await store.get_schedule("b") == first
        assert [s.name for s in await store.list_schedules()] == ["a", "b", "c"]
        assert [s.name for s in await store.list_schedules(limit=1, after="a")] == ["b"]
        assert await store.delete_schedule("b")
        assert not await store.delete_schedule("b")
        assert await store.get_schedule("b") is None

    async def test_schedule_updates_are_compare_and_set(self, store: Store) -> None:
        await store.create_schedule(schedule("s"))
        await store.update_schedule(ScheduleUpdate(schedule("s", 2, 60_000), expected_version=1))
        assert await store.get_schedule("s") == schedule("s", 2, 60_000)
        with pytest.raises(ConcurrencyConflict):
            await store.update_schedule(ScheduleUpdate(schedule("s", 2), expected_version=1))
        with pytest.raises(NotFound):
            await store.update_schedule(ScheduleUpdate(schedule("nope", 2), expected_version=1))

    async def test_a_run_and_its_slot_commit_together(self, store: Store) -> None:
        await store.create_schedule(schedule("s"))
        run = record("run1", request_id="schedule:s:60000")
        fired = ScheduleUpdate(schedule("s", 2, 60_000), expected_version=1)
        _, created = await store.create_execution(run, events("run1", 1, 1), schedule=fired)
        assert created
        assert (await store.get_schedule("s")) == schedule("s", 2, 60_000)
        # The same slot again (another replica, a restart): the run exists, nothing is
        # written, the schedule is left as it is.
        again = record("run2", request_id="schedule:s:60000")
        stale = ScheduleUpdate(schedule("s", 2, 60_000), expected_version=1)
        existing, created = await store.create_execution(again, events("run2", 1, 1), stale)
        assert (existing.execution_id, created) == ("run1", False)
        # A schedule changed meanwhile (paused, another slot): no run, no change.
        other = record("run3", request_id="schedule:s:120000")
        with pytest.raises(ConcurrencyConflict):
            await store.create_execution(
                other,
                events("run3", 1, 1),
                ScheduleUpdate(schedule("s", 2, 120_000), expected_version=1),
            )
        assert await store.get_execution("run3") is None
        assert (await store.get_schedule("s")) == schedule("s", 2, 60_000)

    async def test_concurrent_fires_of_one_slot_start_one_run(self, store: Store) -> None:
        await store.create_schedule(schedule("s"))

        async def fire(i: int) -> bool:
            run = record(f"r{i}", request_id="schedule:s:60000")
            update = ScheduleUpdate(schedule("s", 2, 60_000), expected_version=1)
            try:
                _, created = await store.create_execution(run, events(f"r{i}", 1, 1), update)
            except ConcurrencyConflict:
                return False
            return created

        results = await asyncio.gather(*(fire(i) for i in range(8)))
        assert results.count(True) == 1
        assert len(await store.list_executions()) == 1
