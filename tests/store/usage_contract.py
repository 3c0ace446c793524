"""The usage part of the store contract (`Store.usage`), inherited by StoreContract:
usage is written in the transaction of its event (a refused append writes none),
and added up per execution (children included), per workflow (children included),
per time range, per group and per search filter."""

from __future__ import annotations

import dataclasses

import pytest
from execplan.errors import ConcurrencyConflict
from execplan.search import SearchValue, parse
from execplan.store import Append, ExecutionRecord, Store, StoredEvent
from execplan.store.port import UsageQuery, UsageRecord


def _record(execution_id: str, workflow: str, parent: str = "") -> ExecutionRecord:
    return ExecutionRecord(
        execution_id=execution_id,
        plan_id="plan-1",
        workflow_name=workflow,
        state="RUNNING",
        created_at_ms=1_000,
        updated_at_ms=1_000,
        last_sequence=0,
        parent_execution_id=parent,
    )


def _spent(
    execution_id: str, sequence: int, at_ms: int, task_id: str = "t", **counters: float
) -> StoredEvent:
    return StoredEvent(
        execution_id,
        sequence,
        "task_usage",
        at_ms,
        b"usage",
        UsageRecord(task_id, tuple(sorted(counters.items()))),
    )


def _plain(execution_id: str, sequence: int) -> StoredEvent:
    return StoredEvent(execution_id, sequence, "task_started", 1_000 + sequence, b"x")


async def _tree(store: Store) -> None:
    """agents a1 (cost 1 + 2) -> child research r1 (cost 4) -> grandchild g1 (cost 8);
    agents a2 (cost 16, later); research r2 on its own (cost 32)."""
    for execution_id, workflow, parent in (
        ("a1", "agents", ""),
        ("r1", "research", "a1"),
        ("g1", "fetch", "r1"),
        ("a2", "agents", ""),
        ("r2", "research", ""),
    ):
        created, _ = await store.create_execution(
            _record(execution_id, workflow, parent), [_plain(execution_id, 1)]
        )
        assert created.execution_id == execution_id
    await store.append(
        [
            Append("a1", (_spent("a1", 2, 2_000, "plan", cost=1, tokens_in=10), _plain("a1", 3))),
            Append("r1", (_spent("r1", 2, 2_000, "search", cost=4),)),
            Append("g1", (_spent("g1", 2, 3_000, "get", cost=8, requests=1),)),
            Append("a2", (_spent("a2", 2, 9_000, "plan", cost=16),)),
            Append("r2", (_spent("r2", 2, 2_500, "search", cost=32),)),
        ]
    )
    await store.append([Append("a1", (_spent("a1", 4, 2_100, "write", cost=2, tokens_out=5),))])


class UsageContract:
    async def test_no_usage_is_zero(self, store: Store) -> None:
        totals = await store.usage(UsageQuery())
        assert (totals.counters, totals.executions, totals.groups) == ({}, 0, ())

    async def test_an_execution_counts_its_children_at_every_depth(self, store: Store) -> None:
        await _tree(store)
        totals = await store.usage(UsageQuery(execution_id="a1"))
        assert totals.counters == {
            "cost": 15.0,
            "tokens_in": 10.0,
            "tokens_out": 5.0,
            "requests": 1.0,
        }
        assert totals.executions == 3
        child = await store.usage(UsageQuery(execution_id="r1"))
        assert child.counters == {"cost": 12.0, "requests": 1.0}

    async def test_a_workflow_counts_what_its_executions_started(self, store: Store) -> None:
        await _tree(store)
        agents = await store.usage(UsageQuery(workflow_name="agents"))
        assert agents.counters["cost"] == 1 + 2 + 4 + 8 + 16
        assert agents.executions == 4
        research = await store.usage(UsageQuery(workflow_name="research"))
        assert research.counters["cost"] == 4 + 8 + 32  # r1 as a child too
        fetch = await store.usage(UsageQuery(workflow_name="fetch"))
        assert fetch.counters == {"cost": 8.0, "requests": 1.0}
        assert (await store.usage(UsageQuery(workflow_name="nobody"))).counters == {}

    async def test_time_ranges_are_half_open(self, store: Store) -> None:
        await _tree(store)
        window = await store.usage(UsageQuery(since_ms=2_000, until_ms=3_000))
        assert window.counters["cost"] == 1 + 2 + 4 + 32
        late = await store.usage(UsageQuery(workflow_name="agents", since_ms=3_000))
        assert late.counters["cost"] == 8 + 16  # g1 under a1, and a2
        assert late.executions == 2

    async def test_groups_split_the_total(self, store: Store) -> None:
        await _tree(store)
        by_workflow = await store.usage(UsageQuery(workflow_name="agents", group_by="workflow"))
        assert [(g.key, g.counters["cost"], g.executions) for g in by_workflow.groups] == [
            ("agents", 19.0, 2),
            ("fetch", 8.0, 1),
            ("research", 4.0, 1),
        ]
        by_task = await store.usage(UsageQuery(execution_id="a1", group_by="task"))
        assert [(g.key, g.counters.get("cost")) for g in by_task.groups] == [
            ("get", 8.0),
            ("search", 4.0),
            ("write", 2.0),
            ("plan", 1.0),
        ]
        by_execution = await store.usage(UsageQuery(group_by="execution"))
        assert [g.key for g in by_execution.groups] == ["r2", "a2", "g1", "r1", "a1"]
        assert sum(g.executions for g in by_execution.groups) == by_execution.executions == 5

    async def test_a_refused_append_writes_no_usage(self, store: Store) -> None:
        await store.create_execution(_record("x", "w"), [_plain("x", 1)])
        await store.append([Append("x", (_spent("x", 2, 2_000, cost=1),))])
        with pytest.raises(ConcurrencyConflict):  # sequence 2 again: nothing of it is written
            await store.append([Append("x", (_spent("x", 2, 2_000, cost=100),))])
        failed = await store.append_each(
            [
                Append("x", (_spent("x", 5, 2_000, cost=1000),)),  # a gap
                Append("x", (_spent("x", 3, 2_000, cost=10),)),
            ]
        )
        assert list(failed) == ["x"]
        assert (await store.usage(UsageQuery(execution_id="x"))).counters == {"cost": 11.0}

    async def test_a_filter_counts_what_it_finds_and_their_children(self, store: Store) -> None:
        for execution_id, workflow, parent, customer in (
            ("f1", "agents", "", "acme"),
            ("f2", "research", "f1", ""),  # a child of an acme execution
            ("f3", "agents", "", "globex"),
            ("f4", "agents", "", "acme"),
        ):
            record = _record(execution_id, workflow, parent)
            if customer:
                record = dataclasses.replace(
                    record, search_attributes={"customer": SearchValue("string", customer)}
                )
            await store.create_execution(record, [_plain(execution_id, 1)])
        await store.append(
            [
                Append("f1", (_spent("f1", 2, 2_000, cost=1),)),
                Append("f2", (_spent("f2", 2, 2_000, cost=2),)),
                Append("f3", (_spent("f3", 2, 2_000, cost=4),)),
                Append("f4", (_spent("f4", 2, 5_000, cost=8),)),
            ]
        )
        acme = await store.usage(UsageQuery(filter=parse('customer = "acme"')))
        assert (acme.counters, acme.executions) == ({"cost": 11.0}, 3)
        early = await store.usage(UsageQuery(filter=parse('customer = "acme"'), until_ms=3_000))
        assert early.counters == {"cost": 3.0}
        both = await store.usage(
            UsageQuery(
                workflow_name="agents", filter=parse('customer != "acme"'), group_by="workflow"
            )
        )
        assert both.counters == {"cost": 4.0}
        assert [g.key for g in both.groups] == ["agents"]
        column = await store.usage(UsageQuery(filter=parse('workflow_name = "research"')))
        assert column.counters == {"cost": 2.0}
        nobody = await store.usage(UsageQuery(filter=parse('customer = "initech"')))
        assert (nobody.counters, nobody.executions) == ({}, 0)

    async def test_groups_by_attribute_take_the_nearest_ancestors_value(self, store: Store) -> None:
        """p1 (acme) -> c1 (none of its own: acme) -> g1 (globex of its own); p2
        (globex); p3 (no customer anywhere in its lineage)."""
        for execution_id, workflow, parent, customer in (
            ("p1", "agents", "", "acme"),
            ("c1", "research", "p1", ""),
            ("g1", "fetch", "c1", "globex"),
            ("p2", "agents", "", "globex"),
            ("p3", "agents", "", ""),
        ):
            record = _record(execution_id, workflow, parent)
            if customer:
                record = dataclasses.replace(
                    record, search_attributes={"customer": SearchValue("string", customer)}
                )
            await store.create_execution(record, [_plain(execution_id, 1)])
        await store.append(
            [
                Append("p1", (_spent("p1", 2, 2_000, cost=1, tokens_in=10),)),
                Append("c1", (_spent("c1", 2, 2_000, cost=2),)),
                Append("g1", (_spent("g1", 2, 3_000, cost=4),)),
                Append("p2", (_spent("p2", 2, 2_000, cost=8),)),
                Append("p3", (_spent("p3", 2, 5_000, cost=16),)),
            ]
        )
        by = await store.usage(UsageQuery(group_by="attribute", group_attribute="customer"))
        assert [(g.key, g.counters, g.executions, g.value) for g in by.groups] == [
            ("(none)", {"cost": 16.0}, 1, None),
            ('"globex"', {"cost": 12.0}, 2, SearchValue("string", "globex")),
            ('"acme"', {"cost": 3.0, "tokens_in": 10.0}, 2, SearchValue("string", "acme")),
        ]
        assert (by.counters["cost"], by.executions) == (31.0, 5)
        # With a scope, a time range and a filter: the key still comes from the lineage,
        # also from an ancestor outside the scope (c1's is p1's).
        scoped = await store.usage(
            UsageQuery(
                execution_id="c1", until_ms=3_000, group_by="attribute", group_attribute="customer"
            )
        )
        assert [(g.key, g.counters["cost"]) for g in scoped.groups] == [('"acme"', 2.0)]
        filtered = await store.usage(
            UsageQuery(
                workflow_name="agents",
                filter=parse('customer != "globex"'),
                group_by="attribute",
                group_attribute="customer",
            )
        )
        # p1 and what it started (g1 keeps its own globex); p2 is left out, and p3 too
        # (`!=` does not match an execution without the attribute).
        assert [(g.key, g.counters["cost"]) for g in filtered.groups] == [
            ('"globex"', 4.0),
            ('"acme"', 3.0),
        ]
        unknown = await store.usage(UsageQuery(group_by="attribute", group_attribute="region"))
        assert [(g.key, g.counters["cost"], g.executions) for g in unknown.groups] == [
            ("(none)", 31.0, 5)
        ]

    async def test_attribute_groups_keep_each_kind_and_exact_doubles(self, store: Store) -> None:
        third = 0.1 + 0.2  # 0.30000000000000004: one text with 15 digits as 0.3
        values = {
            "k1": SearchValue("int", 3),
            "k2": SearchValue("string", "3"),
            "k3": SearchValue("double", 0.3),
            "k4": SearchValue("double", third),
            "k5": SearchValue("bool", True),
            "k6": SearchValue.time(1_796_083_200_500),
            "k7": SearchValue("int", 3),
        }
        for n, (execution_id, value) in enumerate(values.items()):
            record = dataclasses.replace(
                _record(execution_id, "w"), search_attributes={"mark": value}
            )
            await store.create_execution(record, [_plain(execution_id, 1)])
            await store.append([Append(execution_id, (_spent(execution_id, 2, 2_000, cost=2**n),))])
        by = await store.usage(UsageQuery(group_by="attribute", group_attribute="mark"))
        assert [(g.key, g.counters["cost"], g.executions, g.value) for g in by.groups] == [
            ("3", 65.0, 2, SearchValue("int", 3)),
            ("2026-12-01T00:00:00.500Z", 32.0, 1, SearchValue.time(1_796_083_200_500)),
            ("true", 16.0, 1, SearchValue("bool", True)),
            ("0.30000000000000004", 8.0, 1, SearchValue("double", third)),
            ("0.3", 4.0, 1, SearchValue("double", 0.3)),
            ('"3"', 2.0, 1, SearchValue("string", "3")),
        ]
