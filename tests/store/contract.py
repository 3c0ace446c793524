"""The one behavioural test suite every `Store` backend must pass.

Subclass `StoreContract` and provide an async `store` fixture that yields an *opened*
store (see `test_memory.py`, `test_sqlite.py`); pytest collects the inherited tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from execplan.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from execplan.store import (
    Append,
    ExecutionRecord,
    Snapshot,
    Store,
    StoredEvent,
    page_cursor,
)

from .flow_contract import FlowContract
from .usage_contract import UsageContract


def event(execution_id: str, sequence: int, kind: str = "TaskCompleted") -> StoredEvent:
    return StoredEvent(
        execution_id, sequence, kind, 1_000 + sequence, f"{execution_id}#{sequence}".encode()
    )


def events(execution_id: str, first: int, last: int) -> tuple[StoredEvent, ...]:
    return tuple(event(execution_id, s) for s in range(first, last + 1))


def record(
    execution_id: str,
    *,
    created_at_ms: int = 1_000,
    state: str = "RUNNING",
    workflow_name: str = "orders",
    request_id: str = "",
    request_digest: str = "",
    parent_execution_id: str = "",
    parent_task_id: str = "",
) -> ExecutionRecord:
    return ExecutionRecord(
        execution_id=execution_id,
        plan_id="plan-1",
        workflow_name=workflow_name,
        state=state,
        created_at_ms=created_at_ms,
        updated_at_ms=created_at_ms,
        last_sequence=0,
        request_id=request_id,
        fairness_key="tenant-a",
        request_digest=request_digest,
        parent_execution_id=parent_execution_id,
        parent_task_id=parent_task_id,
    )


async def started(store: Store, execution_id: str, n_events: int = 1, **kw: object) -> None:
    _, created = await store.create_execution(
        record(execution_id, **kw),  # type: ignore[arg-type]
        events(execution_id, 1, n_events),
    )
    assert created


def sequences(stored: Sequence[StoredEvent]) -> list[int]:
    return [e.sequence for e in stored]


class StoreContract(FlowContract, UsageContract):
    # -- create --------------------------------------------------------------------

    async def test_create_writes_record_and_first_events(self, store: Store) -> None:
        stored, created = await store.create_execution(record("e1"), events("e1", 1, 2))
        assert created
        assert stored.last_sequence == 2
        assert await store.get_execution("e1") == stored
        assert await store.read_events("e1") == list(events("e1", 1, 2))

    async def test_create_with_no_events(self, store: Store) -> None:
        stored, _ = await store.create_execution(record("e1"), [])
        assert stored.last_sequence == 0
        assert await store.read_events("e1") == []

    async def test_create_is_idempotent_on_request_id(self, store: Store) -> None:
        first, created = await store.create_execution(
            record("e1", request_id="r1"), events("e1", 1, 1)
        )
        assert created
        again, created_again = await store.create_execution(
            record("e2", request_id="r1"), events("e2", 1, 3)
        )
        assert not created_again
        assert again == first
        assert await store.get_execution("e2") is None
        assert await store.read_events("e2") == []

    async def test_the_request_digest_is_kept_and_found_by_request_id(self, store: Store) -> None:
        first, _ = await store.create_execution(
            record("e1", request_id="r1", request_digest="sha256:ab"), events("e1", 1, 1)
        )
        assert first.request_digest == "sha256:ab"
        assert await store.get_execution("e1") == first
        assert await store.find_by_request("r1") == first
        assert await store.find_by_request("r2") is None
        # A second create with another digest returns the first, digest and all: the
        # caller (the engine) compares them.
        again, created = await store.create_execution(
            record("e2", request_id="r1", request_digest="sha256:cd"), events("e2", 1, 1)
        )
        assert (again, created) == (first, False)

    async def test_concurrent_creates_with_one_request_id_create_once(self, store: Store) -> None:
        results = await asyncio.gather(
            *(
                store.create_execution(record(f"e{i}", request_id="same"), events(f"e{i}", 1, 1))
                for i in range(10)
            )
        )
        assert [created for _, created in results].count(True) == 1
        assert len({rec.execution_id for rec, _ in results}) == 1
        assert len(await store.list_executions()) == 1

    async def test_empty_request_ids_never_collide(self, store: Store) -> None:
        await started(store, "e1")
        await started(store, "e2")
        assert len(await store.list_executions()) == 2

    async def test_create_reusing_execution_id_raises(self, store: Store) -> None:
        await started(store, "e1")
        with pytest.raises(AlreadyExists):
            await store.create_execution(record("e1"), events("e1", 1, 1))

    async def test_create_rejects_events_not_starting_at_one(self, store: Store) -> None:
        with pytest.raises(ConcurrencyConflict):
            await store.create_execution(record("e1"), events("e1", 2, 3))
        assert await store.get_execution("e1") is None

    async def test_events_of_another_execution_are_rejected(self, store: Store) -> None:
        await started(store, "e1")
        with pytest.raises(InvalidArgument):
            await store.append([Append("e1", (event("other", 2),))])
        assert await store.read_events("e1") == list(events("e1", 1, 1))

    # -- append --------------------------------------------------------------------

    async def test_append_keeps_order_and_updates_index(self, store: Store) -> None:
        await started(store, "e1")
        await store.append([Append("e1", events("e1", 2, 3))])
        rec = await store.get_execution("e1")
        assert rec is not None
        assert (rec.last_sequence, rec.state, rec.updated_at_ms) == (3, "RUNNING", 1_000)
        await store.append([Append("e1", events("e1", 4, 4), state="SUCCEEDED", updated_at_ms=9)])
        assert sequences(await store.read_events("e1")) == [1, 2, 3, 4]
        rec = await store.get_execution("e1")
        assert rec is not None
        assert (rec.last_sequence, rec.state, rec.updated_at_ms) == (4, "SUCCEEDED", 9)

    async def test_append_in_the_same_state_still_moves_updated_at(self, store: Store) -> None:
        # SQLite names `state` in its UPDATE only when it changes (writes.append).
        await started(store, "e1")
        await store.append([Append("e1", events("e1", 2, 2), state="RUNNING", updated_at_ms=7)])
        rec = await store.get_execution("e1")
        assert rec is not None
        assert (rec.last_sequence, rec.state, rec.updated_at_ms) == (2, "RUNNING", 7)
        await store.append([Append("e1", (), state="RUNNING", updated_at_ms=8)])
        rec = await store.get_execution("e1")
        assert rec is not None
        assert (rec.last_sequence, rec.state, rec.updated_at_ms) == (2, "RUNNING", 8)
        assert [r.execution_id for r in await store.list_executions(states=["RUNNING"])] == ["e1"]

    async def test_append_without_events_updates_state_only(self, store: Store) -> None:
        await started(store, "e1")
        await store.append([Append("e1", (), state="PAUSED", updated_at_ms=5)])
        rec = await store.get_execution("e1")
        assert rec is not None
        assert (rec.state, rec.last_sequence) == ("PAUSED", 1)

    async def test_empty_batch_is_a_no_op(self, store: Store) -> None:
        await store.append([])

    async def test_duplicate_sequence_conflicts_and_writes_nothing(self, store: Store) -> None:
        await started(store, "e1", 2)
        with pytest.raises(ConcurrencyConflict):
            # 3 would be fine on its own; the Append is all-or-nothing.
            await store.append([Append("e1", (event("e1", 3), event("e1", 2)), state="FAILED")])
        assert sequences(await store.read_events("e1")) == [1, 2]
        rec = await store.get_execution("e1")
        assert rec is not None
        assert (rec.state, rec.last_sequence) == ("RUNNING", 2)

    async def test_gap_conflicts_and_writes_nothing(self, store: Store) -> None:
        await started(store, "e1")
        with pytest.raises(ConcurrencyConflict):
            await store.append([Append("e1", (event("e1", 3),))])
        with pytest.raises(ConcurrencyConflict):
            await store.append([Append("e1", (event("e1", 2), event("e1", 4)))])
        assert sequences(await store.read_events("e1")) == [1]

    async def test_unknown_execution_is_not_found(self, store: Store) -> None:
        with pytest.raises(NotFound):
            await store.append([Append("nope", (event("nope", 1),))])

    async def test_failing_append_does_not_affect_others_in_batch(self, store: Store) -> None:
        await started(store, "a")
        await started(store, "b")
        with pytest.raises(ConcurrencyConflict):
            await store.append(
                [
                    Append("a", events("a", 2, 2)),
                    Append("b", events("b", 5, 5)),  # gap
                    Append("missing", events("missing", 1, 1)),
                    Append("a", events("a", 3, 3)),  # sees the first Append of the batch
                ]
            )
        assert sequences(await store.read_events("a")) == [1, 2, 3]
        assert sequences(await store.read_events("b")) == [1]

    async def test_failing_append_does_not_affect_concurrent_callers(self, store: Store) -> None:
        for name in ("a", "b", "c"):
            await started(store, name)
        results = await asyncio.gather(
            store.append([Append("a", events("a", 2, 3))]),
            store.append([Append("b", events("b", 1, 1))]),  # duplicate
            store.append([Append("c", events("c", 2, 2))]),
            store.append([Append("zzz", events("zzz", 1, 1))]),
            return_exceptions=True,
        )
        assert results[0] is None
        assert isinstance(results[1], ConcurrencyConflict)
        assert results[2] is None
        assert isinstance(results[3], NotFound)
        assert sequences(await store.read_events("a")) == [1, 2, 3]
        assert sequences(await store.read_events("b")) == [1]
        assert sequences(await store.read_events("c")) == [1, 2]

    async def test_racing_writers_of_one_execution_exactly_one_wins(self, store: Store) -> None:
        await started(store, "e1")
        results = await asyncio.gather(
            *(store.append([Append("e1", events("e1", 2, 2))]) for _ in range(5)),
            return_exceptions=True,
        )
        assert results.count(None) == 1
        assert all(isinstance(r, ConcurrencyConflict) for r in results if r is not None)

    async def test_concurrent_appends_from_200_coroutines(self, store: Store) -> None:
        ids = [f"x{i:03}" for i in range(200)]
        for execution_id in ids:
            await started(store, execution_id)

        async def writer(execution_id: str) -> None:
            for seq in range(2, 7):
                await store.append([Append(execution_id, (event(execution_id, seq),))])

        await asyncio.gather(*(writer(i) for i in ids))
        for execution_id in ids:
            assert await store.read_events(execution_id) == list(events(execution_id, 1, 6))
            rec = await store.get_execution(execution_id)
            assert rec is not None
            assert rec.last_sequence == 6

    # -- read ----------------------------------------------------------------------

    async def test_read_events_after_and_limit(self, store: Store) -> None:
        await started(store, "e1", 10)
        assert sequences(await store.read_events("e1", after_sequence=7)) == [8, 9, 10]
        assert sequences(await store.read_events("e1", limit=3)) == [1, 2, 3]
        assert sequences(await store.read_events("e1", 4, 2)) == [5, 6]
        assert await store.read_events("e1", after_sequence=10) == []
        assert await store.read_events("e1", limit=0) == []
        assert await store.read_events("unknown") == []

    async def test_payloads_round_trip_byte_exact(self, store: Store) -> None:
        blob = bytes(range(256)) * 4
        await store.create_execution(record("e1"), [StoredEvent("e1", 1, "Started", 7, blob)])
        (stored,) = await store.read_events("e1")
        assert stored == StoredEvent("e1", 1, "Started", 7, blob)

    async def test_get_unknown_execution_is_none(self, store: Store) -> None:
        assert await store.get_execution("nope") is None

    # -- list ----------------------------------------------------------------------

    async def test_list_newest_first_with_filters(self, store: Store) -> None:
        await started(store, "a", created_at_ms=1, workflow_name="orders")
        await started(store, "b", created_at_ms=2, workflow_name="billing", state="FAILED")
        await started(store, "c", created_at_ms=3, workflow_name="orders", state="SUCCEEDED")
        await started(store, "d", created_at_ms=3, workflow_name="orders")

        def ids(rows: Sequence[ExecutionRecord]) -> list[str]:
            return [r.execution_id for r in rows]

        assert ids(await store.list_executions()) == ["d", "c", "b", "a"]
        assert ids(await store.list_executions(workflow_name="orders")) == ["d", "c", "a"]
        assert ids(await store.list_executions(states={"FAILED", "SUCCEEDED"})) == ["c", "b"]
        assert ids(await store.list_executions(states=["RUNNING"], workflow_name="orders")) == [
            "d",
            "a",
        ]
        assert ids(await store.list_executions(workflow_name="none")) == []
        assert ids(await store.list_executions(limit=2)) == ["d", "c"]

    async def test_list_paginates_with_cursor(self, store: Store) -> None:
        # Timestamps collide on purpose: the cursor must break ties by execution id.
        for i in range(23):
            await started(store, f"e{i:02}", created_at_ms=i // 4)
        pages: list[list[str]] = []
        after = ""
        while True:
            page = await store.list_executions(limit=5, after=after)
            if not page:
                break
            pages.append([r.execution_id for r in page])
            after = page_cursor(page[-1])
        flat = [i for page in pages for i in page]
        assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
        assert flat == sorted(flat, key=lambda i: (int(i[1:]) // 4, i), reverse=True)
        assert len(set(flat)) == 23

    async def test_list_cursor_with_filter(self, store: Store) -> None:
        for i in range(6):
            await started(store, f"e{i}", created_at_ms=i, state="RUNNING" if i % 2 else "FAILED")
        first = await store.list_executions(states=["RUNNING"], limit=2)
        rest = await store.list_executions(states=["RUNNING"], after=page_cursor(first[-1]))
        assert [r.execution_id for r in first + rest] == ["e5", "e3", "e1"]

    async def test_bad_cursor_is_invalid_argument(self, store: Store) -> None:
        with pytest.raises(InvalidArgument):
            await store.list_executions(after="%%%not-a-cursor")

    async def test_list_children_of_a_parent(self, store: Store) -> None:
        await started(store, "parent", created_at_ms=1)
        for i in range(3):
            await started(
                store,
                f"child-{i}",
                created_at_ms=10 + i,
                parent_execution_id="parent",
                parent_task_id=f"review[{i}]",
            )
        await started(store, "other-child", created_at_ms=20, parent_execution_id="other")
        stored = await store.get_execution("child-0")
        assert stored is not None and stored.parent_execution_id == "parent"
        assert stored.parent_task_id == "review[0]"
        children = await store.list_executions(parent_execution_id="parent")
        assert [r.execution_id for r in children] == ["child-2", "child-1", "child-0"]
        assert [r.parent_task_id for r in children] == ["review[2]", "review[1]", "review[0]"]
        page = await store.list_executions(parent_execution_id="parent", limit=2)
        rest = await store.list_executions(
            parent_execution_id="parent", after=page_cursor(page[-1])
        )
        assert [r.execution_id for r in page + rest] == ["child-2", "child-1", "child-0"]
        assert len(await store.list_executions()) == 5

    async def test_list_active_excludes_terminal_states(self, store: Store) -> None:
        states = ["RUNNING", "PAUSED", "SUCCEEDED", "FAILED", "COMPENSATED"]
        states += ["COMPENSATION_FAILED", "CANCELLED", "TERMINATED", "PENDING", "COMPENSATING"]
        for i, state in enumerate(states):
            await started(store, f"e{i}", created_at_ms=100 - i, state=state)
        await store.append([Append("e0", (), state="CANCELLED", updated_at_ms=1)])
        active = await store.list_active()
        assert sorted(r.state for r in active) == ["COMPENSATING", "PAUSED", "PENDING"]

    # -- snapshots, kv, plans ----------------------------------------------

    async def test_snapshot_keeps_latest(self, store: Store) -> None:
        await started(store, "e1")
        assert await store.load_snapshot("e1") is None
        await store.save_snapshot(Snapshot("e1", 5, b"five"))
        await store.save_snapshot(Snapshot("e1", 9, b"nine"))
        await store.save_snapshot(Snapshot("e1", 7, b"stale"))  # older: ignored
        assert await store.load_snapshot("e1") == Snapshot("e1", 9, b"nine")

    async def test_snapshot_of_unknown_execution_is_not_found(self, store: Store) -> None:
        with pytest.raises(NotFound):
            await store.save_snapshot(Snapshot("nope", 1, b""))

    async def test_kv(self, store: Store) -> None:
        assert await store.get_kv("breaker", "payments.charge") is None
        await store.put_kv("breaker", "payments.charge", b"open")
        await store.put_kv("breaker", "email.send", b"closed")
        await store.put_kv("breaker", "payments.charge", b"half-open")
        await store.put_kv("idempotency", "payments.charge", b"other namespace")
        assert await store.get_kv("breaker", "payments.charge") == b"half-open"
        assert await store.list_kv("breaker") == [
            ("email.send", b"closed"),
            ("payments.charge", b"half-open"),
        ]
        assert await store.list_kv("empty") == []

    async def test_insert_kv_first_writer_wins(self, store: Store) -> None:
        assert await store.insert_kv("names", "review@1", b"plan-a") == b"plan-a"
        assert await store.insert_kv("names", "review@1", b"plan-b") == b"plan-a"
        # Concurrent inserts of one key: every caller sees the same winner.
        answers = await asyncio.gather(
            *(store.insert_kv("names", "race", f"p{i}".encode()) for i in range(8))
        )
        assert len(set(answers)) == 1
        assert await store.get_kv("names", "race") == answers[0]
        assert await store.list_kv("names") == [("race", answers[0]), ("review@1", b"plan-a")]

    async def test_plans_are_idempotent(self, store: Store) -> None:
        assert await store.get_plan("p1") is None
        await store.put_plan("p1", b"first")
        await store.put_plan("p1", b"second")
        assert await store.get_plan("p1") == b"first"

    # -- lifecycle -----------------------------------------------------------------

    async def test_close_is_idempotent_and_refuses_later_calls(self, store: Store) -> None:
        await store.close()
        await store.close()
        with pytest.raises(Unavailable):
            await store.append([Append("e1", ())])
        with pytest.raises(Unavailable):
            await store.get_execution("e1")
