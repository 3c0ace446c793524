"""Retention and purge over real stores: what goes, what stays, in bounded steps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from execplan.retention import Pruner, RetentionPolicy
from execplan.search import SearchValue, parse
from execplan.store import Append, ExecutionRecord, MemoryStore, SqliteStore, Store, StoredEvent

DAY = 86_400_000
NOW = 1_800_000_000_000


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    store: Store = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "db")
    await store.open()
    yield store
    await store.close()


async def finished(
    store: Store,
    execution_id: str,
    ended_ms: int,
    workflow: str = "wf",
    events: int = 5,
    **attrs: object,
) -> None:
    record = ExecutionRecord(
        execution_id,
        "p",
        workflow,
        "RUNNING",
        ended_ms - 10,
        ended_ms - 10,
        0,
        search_attributes={k: SearchValue.of(v) for k, v in attrs.items()},  # type: ignore[arg-type]
    )
    log = [StoredEvent(execution_id, i, "k", ended_ms, b"x" * 100) for i in range(1, events + 1)]
    await store.create_execution(record, log)
    await store.append([Append(execution_id, (), state="SUCCEEDED", updated_at_ms=ended_ms)])


async def ids(store: Store) -> list[str]:
    return sorted(r.execution_id for r in await store.list_executions(limit=1000))


async def test_a_pass_deletes_what_expired_per_workflow(store: Store) -> None:
    await finished(store, "old", NOW - 40 * DAY)
    await finished(store, "recent", NOW - 10 * DAY)
    await finished(store, "nightly-old", NOW - 8 * DAY, workflow="nightly")
    await finished(store, "nightly-new", NOW - 6 * DAY, workflow="nightly")
    await finished(store, "audit-ancient", NOW - 900 * DAY, workflow="audit")
    await store.create_execution(ExecutionRecord("running", "p", "wf", "RUNNING", 0, 0, 0), [])
    forgotten: list[str] = []
    policy = RetentionPolicy(30 * DAY, {"nightly": 7 * DAY, "audit": 0})
    pruner = Pruner(store, policy, forget=forgotten.extend, clock=lambda: NOW, max_events=2)
    assert await pruner.run_once() == 2
    assert sorted(forgotten) == ["nightly-old", "old"]
    assert await ids(store) == ["audit-ancient", "nightly-new", "recent", "running"]
    assert await store.read_events("old") == []
    assert await pruner.run_once() == 0


async def test_a_backlog_drains_over_bounded_passes(store: Store) -> None:
    for i in range(12):
        await finished(store, f"e{i:02}", NOW - 100 * DAY + i)
    pruner = Pruner(store, RetentionPolicy(DAY), clock=lambda: NOW, batch=5)
    assert [await pruner.run_once() for _ in range(4)] == [5, 5, 2, 0]
    assert await ids(store) == []


async def test_purge_by_filter_only_finished_and_in_pages(store: Store) -> None:
    for i in range(5):
        await finished(store, f"acme{i}", NOW - i, customer="acme")
    await finished(store, "other", NOW, customer="globex")
    await store.create_execution(
        ExecutionRecord(
            "acme-running",
            "p",
            "wf",
            "RUNNING",
            0,
            0,
            0,
            search_attributes={"customer": SearchValue.of("acme")},
        ),
        [],
    )
    pruner = Pruner(store, RetentionPolicy())
    dry = await pruner.purge(parse('customer = "acme"'), 3, dry_run=True)
    assert (len(dry.execution_ids), dry.more) == (3, True)
    assert len(await ids(store)) == 7
    first = await pruner.purge(parse('customer = "acme"'), 3)
    second = await pruner.purge(parse('customer = "acme"'), 3)
    assert (len(first.execution_ids), first.more, len(second.execution_ids), second.more) == (
        3,
        True,
        2,
        False,
    )
    assert await ids(store) == ["acme-running", "other"]


async def test_no_policy_no_loop(store: Store) -> None:
    pruner = Pruner(store, RetentionPolicy())
    await pruner.start()
    assert not pruner.running
    await pruner.stop()
