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

How `group_by` "attribute" keys a row: by the value of the search attribute
`group_attribute` on the row's execution, or else on its nearest ancestor that has
it (walked up `parent_execution_id`, stopping at the first that has it), so a child's
and a sub-plan's spend is its root customer's. The SQL groups by the stored columns
(kind, str_value / num_value / int_value), never by a number rendered as text by the
database (SQLite's text of a double keeps 15 digits: two values would merge), and the
key is rendered here: `SearchValue.text()` (`"acme"`, `3`, `2.5`, `true`, a time in
RFC 3339), or NO_VALUE for the executions with no such attribute in their lineage
(or whose execution was purged: a usage row keeps no lineage of its own).

    sql, params = rollup_query(query)     # `?` placeholders (PostgreSQL: numbered)
    totals(rows, query.group_by)          # -> UsageTotals
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from execplan.search import SearchValue

from .port import StoredEvent, UsageGroup, UsageQuery, UsageTotals
from .search_sql import filter_where

# Groups returned at most (the largest by cost first).
MAX_GROUPS = 1000
# The key of the executions without the attribute of a "attribute" grouping (no value
# renders so: a string's text is quoted).
NO_VALUE = "(none)"

USAGE_COLUMNS = "execution_id, sequence, counter, amount, recorded_at_ms, task_id, workflow_name"
INSERT_USAGE = f"INSERT INTO usage ({USAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"

# A group's key as (k, kn, ki): text, double, integer. Only "attribute" uses kn and ki
# (a value's stored columns, decoded by `_attribute_value`).
_NO_NUMBERS = "CAST(NULL AS DOUBLE PRECISION), CAST(NULL AS BIGINT)"
_KEY = {
    "": f"'', {_NO_NUMBERS}",
    "workflow": f"u.workflow_name, {_NO_NUMBERS}",
    "execution": f"u.execution_id, {_NO_NUMBERS}",
    "task": f"u.task_id, {_NO_NUMBERS}",
    "attribute": "CASE WHEN o.kind = 'string' THEN 'string:' || o.str_value ELSE o.kind END,"
    " o.num_value, o.int_value",
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

# The executions with usage that `where` takes, each with the nearest of itself and its
# ancestors that has the attribute (the walk up stops there), and that one's value
# (no row: none in its lineage). Both lookups use search_attributes' primary key.
_OWNER = (
    "walk(execution_id, at) AS (SELECT DISTINCT u.execution_id, u.execution_id FROM usage u"
    " WHERE {where}"
    " UNION SELECT w.execution_id, e.parent_execution_id FROM walk w JOIN executions e"
    " ON e.execution_id = w.at WHERE e.parent_execution_id != '' AND NOT EXISTS"
    " (SELECT 1 FROM search_attributes a WHERE a.execution_id = w.at AND a.name = ?)),"
    " owner(execution_id, kind, str_value, num_value, int_value) AS"
    " (SELECT w.execution_id, a.kind, a.str_value, a.num_value, a.int_value FROM walk w"
    " JOIN search_attributes a ON a.execution_id = w.at AND a.name = ?)"
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
    """One statement (one snapshot) returning (kind, k, kn, ki, counter, value) rows
    (k, kn, ki: the group's key): kind 0 the sum per key and counter, 1 the
    executions per key, 2 the executions in all."""
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
    source = "usage u"
    if query.group_by == "attribute":
        ctes.append(_OWNER.format(where=where))
        params += [*where_params, query.group_attribute, query.group_attribute]
        source = "usage u LEFT JOIN owner o ON o.execution_id = u.execution_id"
    ctes.append(
        f"f(k, kn, ki, execution_id, counter, amount) AS (SELECT {_KEY[query.group_by]},"
        f" u.execution_id, u.counter, u.amount FROM {source} WHERE {where})"
    )
    params += where_params
    sql = (
        "WITH RECURSIVE "
        + ", ".join(ctes)
        + " SELECT 0, k, kn, ki, counter, SUM(amount) FROM f GROUP BY k, kn, ki, counter"
        " UNION ALL SELECT 1, k, kn, ki, '',"
        " CAST(COUNT(DISTINCT execution_id) AS DOUBLE PRECISION) FROM f GROUP BY k, kn, ki"
        f" UNION ALL SELECT 2, '', {_NO_NUMBERS}, '',"
        " CAST(COUNT(DISTINCT execution_id) AS DOUBLE PRECISION) FROM f"
    )
    return sql, params


# A group's key in `fold`: (k, kn, ki) as `rollup_query` returns it.
_Key = tuple[str | None, float | None, int | None]


def _attribute_value(k: str | None, kn: float | None, ki: int | None) -> SearchValue | None:
    """The value of an "attribute" group key (the search_attributes columns)."""
    if k is None:
        return None
    kind, _, text = str(k).partition(":")
    if kind == "string":
        return SearchValue("string", text)
    if kind == "double":
        return SearchValue("double", float(kn or 0.0))  # -0.0 (grouped with 0.0) as 0.0
    if kind == "bool":
        return SearchValue("bool", bool(ki))
    if kind == "int":
        return SearchValue("int", int(ki or 0))
    return SearchValue.time(int(ki or 0))


def _attribute_key(value: SearchValue | None) -> tuple[str | None, float | None, int | None]:
    """The (k, kn, ki) of a value, as `rollup_query` groups it (the memory store)."""
    if value is None:
        return None, None, None
    if value.kind == "string":
        return f"string:{value.value}", None, None
    if value.kind == "double":
        return "double", float(value.value), None
    if value.kind == "int":
        return "int", float(value.value), int(value.value)
    return value.kind, None, int(value.value)  # bool (0/1), time (ms)


class _Group:
    __slots__ = ("counters", "executions", "value")

    def __init__(self, value: SearchValue | None) -> None:
        self.counters: dict[str, float] = {}
        self.executions = 0
        self.value = value


def totals(rows: Sequence[Any], group_by: str) -> UsageTotals:
    """`UsageTotals` from the rows of `rollup_query`."""
    counters: dict[str, float] = {}
    executions = 0
    groups: dict[str, _Group] = {}
    for kind, k, kn, ki, counter, value in rows:
        if kind == 2:
            executions = int(value)
            continue
        found = _attribute_value(k, kn, ki) if group_by == "attribute" else None
        key = str(k) if group_by != "attribute" else NO_VALUE if found is None else found.text()
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(found)
        # Added, not set: should two stored forms render as one key, they are one
        # group (an execution has one stored form, so its count is not doubled).
        if kind == 1:
            group.executions += int(value)
        else:
            amount = float(value)
            group.counters[counter] = group.counters.get(counter, 0.0) + amount
            counters[counter] = counters.get(counter, 0.0) + amount
    return UsageTotals(counters, executions, _groups(groups) if group_by else ())


def _groups(groups: Mapping[str, _Group]) -> tuple[UsageGroup, ...]:
    ordered = sorted(groups.items(), key=lambda kv: (-kv[1].counters.get("cost", 0.0), kv[0]))
    return tuple(UsageGroup(k, g.counters, g.executions, g.value) for k, g in ordered[:MAX_GROUPS])


def fold(
    rows: Iterable[tuple[str, str, int, str, Mapping[str, float]]],
    query: UsageQuery,
    parent_of: Mapping[str, str],
    workflow_of: Mapping[str, str],
    *,
    found: set[str] | None = None,
    attributes: Mapping[str, Mapping[str, SearchValue]] | None = None,
) -> UsageTotals:
    """The same roll-up in Python (the memory store): `rows` are (execution_id,
    workflow_name, recorded_at_ms, task_id, counters) of every usage event; `found`:
    the executions `query.filter` finds (None: no filter); `attributes`: the search
    attributes of each execution (for group_by "attribute")."""

    def lineage(execution_id: str) -> Iterable[str]:
        seen: set[str] = set()
        while execution_id and execution_id not in seen:
            seen.add(execution_id)
            yield execution_id
            execution_id = parent_of.get(execution_id, "")

    def owned(execution_id: str) -> SearchValue | None:
        for a in lineage(execution_id):
            value = (attributes or {}).get(a, {}).get(query.group_attribute)
            if value is not None:
                return value
        return None

    out: list[tuple[int, str | None, float | None, int | None, str, float]] = []
    sums: dict[tuple[_Key, str], float] = {}
    members: dict[_Key, set[str]] = {}
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
        key: _Key = (
            _attribute_key(owned(execution_id))
            if query.group_by == "attribute"
            else (
                {"": "", "workflow": workflow, "execution": execution_id, "task": task_id}[
                    query.group_by
                ],
                None,
                None,
            )
        )
        for name, amount in counters.items():
            sums[(key, name)] = sums.get((key, name), 0.0) + amount
        members.setdefault(key, set()).add(execution_id)
        everyone.add(execution_id)
    out += [(0, *k, name, v) for (k, name), v in sums.items()]
    out += [(1, *k, "", float(len(ids))) for k, ids in members.items()]
    out.append((2, "", None, None, "", float(len(everyone))))
    return totals(out, query.group_by)
