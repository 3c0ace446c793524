"""Usage roll-ups (`Store.usage`): the SQL both SQL backends run, and the same rules
in Python for the memory store.

Where usage lives: the `usage` table, one row per (event, counter), written in the
transaction that appends the event (`StoredEvent.usage`), so usage is counted exactly
when its event is committed: a crash loses neither or both, and a re-sent report the
executor already recorded is never a second event (its fold dedups reports), hence
never a second row. The row carries what a roll-up filters on (time, workflow, task)
so it needs no event payload, and it outlives a purge of its execution's history.

Which rows a query takes (UsageQuery):

    execution_id   the execution and every execution it started, at any depth
                   (`executions.parent_execution_id`, walked down)
    workflow_name  rows of executions of that workflow, and of every execution one of
                   them started (walked up from the executions with usage in range)
    since/until    recorded_at_ms in [since, until)
    filter         rows of the executions the filter finds (search attributes, state,
                   workflow...: execplan.search), and of every execution they started

    sql, params = rollup_query(query)     # `?` placeholders (PostgreSQL: numbered)
    totals(rows, query.group_by)          # -> UsageTotals
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .port import StoredEvent, UsageGroup, UsageQuery, UsageTotals
from .search_sql import filter_where

# Groups returned at most (the largest by cost first).
MAX_GROUPS = 1000

USAGE_COLUMNS = "execution_id, sequence, counter, amount, recorded_at_ms, task_id, workflow_name"
INSERT_USAGE = f"INSERT INTO usage ({USAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"

_KEY = {
    "": "''",
    "workflow": "u.workflow_name",
    "execution": "u.execution_id",
    "task": "u.task_id",
}
# An execution and its descendants (the partial index on parent_execution_id is used
# because the join repeats its predicate).
_DOWN = (
    "scope(execution_id) AS (SELECT CAST(? AS TEXT)"
    " UNION SELECT e.execution_id FROM executions e JOIN scope s"
    " ON e.parent_execution_id = s.execution_id WHERE e.parent_execution_id != '')"
)
# Executions with usage in range, each with itself and all its ancestors.
_UP = (
    "spent(execution_id) AS (SELECT DISTINCT u.execution_id FROM usage u WHERE {time}),"
    " up(execution_id, ancestor) AS (SELECT execution_id, execution_id FROM spent"
    " UNION SELECT up.execution_id, e.parent_execution_id FROM up JOIN executions e"
    " ON e.execution_id = up.ancestor WHERE e.parent_execution_id != ''),"
    " scope(execution_id) AS (SELECT up.execution_id FROM up JOIN executions a"
    " ON a.execution_id = up.ancestor WHERE a.workflow_name = ?)"
)


def usage_rows(events: Iterable[StoredEvent], workflow_name: str) -> list[tuple[Any, ...]]:
    """`INSERT_USAGE` rows for the events of one execution that carry usage."""
    return [
        (e.execution_id, e.sequence, name, amount, e.recorded_at_ms, e.usage.task_id, workflow_name)
        for e in events
        if e.usage is not None
        for name, amount in e.usage.counters
    ]


def _time(query: UsageQuery) -> tuple[str, list[Any]]:
    where, params = ["1 = 1"], []
    if query.since_ms is not None:
        where.append("u.recorded_at_ms >= ?")
        params.append(query.since_ms)
    if query.until_ms is not None:
        where.append("u.recorded_at_ms < ?")
        params.append(query.until_ms)
    return " AND ".join(where), params


def rollup_query(query: UsageQuery) -> tuple[str, list[Any]]:
    """One statement (one snapshot) returning (kind, key, counter, value) rows: kind 0
    the sum per key and counter, 1 the executions per key, 2 the executions in all."""
    time, time_params = _time(query)
    ctes: list[str] = []
    params: list[Any] = []
    where, where_params = time, list(time_params)
    if query.execution_id:
        ctes.append(_DOWN)
        params.append(query.execution_id)
        where += " AND u.execution_id IN (SELECT execution_id FROM scope)"
    elif query.workflow_name:
        ctes.append(_UP.format(time=time))
        params += [*time_params, query.workflow_name]
        where += " AND (u.workflow_name = ? OR u.execution_id IN (SELECT execution_id FROM scope))"
        where_params.append(query.workflow_name)
    if query.filter:
        conditions, filter_params = filter_where(query.filter)
        ctes.append(
            "found(execution_id) AS (SELECT execution_id FROM executions WHERE "
            + " AND ".join(conditions)
            + " UNION SELECT e.execution_id FROM executions e JOIN found s"
            " ON e.parent_execution_id = s.execution_id WHERE e.parent_execution_id != '')"
        )
        params += filter_params
        where += " AND u.execution_id IN (SELECT execution_id FROM found)"
    key = _KEY[query.group_by]
    ctes.append(
        f"f AS (SELECT {key} AS k, u.execution_id, u.counter, u.amount FROM usage u WHERE {where})"
    )
    params += where_params
    sql = (
        "WITH RECURSIVE "
        + ", ".join(ctes)
        + " SELECT 0, k, counter, SUM(amount) FROM f GROUP BY k, counter"
        " UNION ALL SELECT 1, k, '', CAST(COUNT(DISTINCT execution_id) AS DOUBLE PRECISION)"
        " FROM f GROUP BY k"
        " UNION ALL SELECT 2, '', '', CAST(COUNT(DISTINCT execution_id) AS DOUBLE PRECISION)"
        " FROM f"
    )
    return sql, params


def totals(rows: Sequence[Any], group_by: str) -> UsageTotals:
    """`UsageTotals` from the rows of `rollup_query`."""
    counters: dict[str, float] = {}
    executions = 0
    groups: dict[str, tuple[dict[str, float], list[int]]] = {}
    for kind, key, counter, value in rows:
        if kind == 2:
            executions = int(value)
            continue
        group = groups.setdefault(str(key), ({}, [0]))
        if kind == 1:
            group[1][0] = int(value)
        else:
            amount = float(value)
            group[0][counter] = amount
            counters[counter] = counters.get(counter, 0.0) + amount
    return UsageTotals(counters, executions, _groups(groups) if group_by else ())


def _groups(groups: Mapping[str, tuple[dict[str, float], list[int]]]) -> tuple[UsageGroup, ...]:
    ordered = sorted(groups.items(), key=lambda kv: (-kv[1][0].get("cost", 0.0), kv[0]))
    return tuple(UsageGroup(k, c, n[0]) for k, (c, n) in ordered[:MAX_GROUPS])


def fold(
    rows: Iterable[tuple[str, str, int, str, Mapping[str, float]]],
    query: UsageQuery,
    parent_of: Mapping[str, str],
    workflow_of: Mapping[str, str],
    found: set[str] | None = None,
) -> UsageTotals:
    """The same roll-up in Python (the memory store): `rows` are (execution_id,
    workflow_name, recorded_at_ms, task_id, counters) of every usage event; `found`:
    the executions `query.filter` finds (None: no filter)."""

    def lineage(execution_id: str) -> Iterable[str]:
        seen: set[str] = set()
        while execution_id and execution_id not in seen:
            seen.add(execution_id)
            yield execution_id
            execution_id = parent_of.get(execution_id, "")

    out: list[tuple[int, str, str, float]] = []
    sums: dict[tuple[str, str], float] = {}
    members: dict[str, set[str]] = {}
    everyone: set[str] = set()
    for execution_id, workflow, at, task_id, counters in rows:
        if query.since_ms is not None and at < query.since_ms:
            continue
        if query.until_ms is not None and at >= query.until_ms:
            continue
        if query.execution_id and query.execution_id not in lineage(execution_id):
            continue
        if found is not None and not any(a in found for a in lineage(execution_id)):
            continue
        if query.workflow_name and not (
            workflow == query.workflow_name
            or any(workflow_of.get(a) == query.workflow_name for a in lineage(execution_id))
        ):
            continue
        key = {"": "", "workflow": workflow, "execution": execution_id, "task": task_id}[
            query.group_by
        ]
        for name, amount in counters.items():
            sums[(key, name)] = sums.get((key, name), 0.0) + amount
        members.setdefault(key, set()).add(execution_id)
        everyone.add(execution_id)
    out += [(0, k, name, v) for (k, name), v in sums.items()]
    out += [(1, k, "", float(len(ids))) for k, ids in members.items()]
    out.append((2, "", "", float(len(everyone))))
    return totals(out, query.group_by)
