"""Search attributes in SQL: their rows, and a `Filter` as a WHERE clause.

Table (the same columns in both schemas)::

    search_attributes (execution_id, name, kind, str_value, num_value, int_value)
        string  -> str_value
        int     -> int_value (exact) and num_value (as a double, for comparisons)
        double  -> num_value
        bool    -> int_value 0/1
        time    -> int_value (ms since the epoch)

A clause on an attribute becomes `execution_id IN (SELECT execution_id FROM
search_attributes WHERE name = ? AND <value test>)`, which each database can run
either way round: from the attribute's index (name, value) for a selective clause,
or as a lookup by primary key (execution_id, name) while walking the executions
newest first. The value test uses the column of the literal's kind, so a string
literal never matches a number and a number matches int and double alike (the
semantics of `execplan.search.filter`, which the memory store evaluates in Python).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from execplan.search import Clause, Filter, SearchValue

from .port import TERMINAL_STATE_NAMES

ATTRIBUTE_COLUMNS = "execution_id, name, kind, str_value, num_value, int_value"
UPSERT_ATTRIBUTE = (
    f"INSERT INTO search_attributes ({ATTRIBUTE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (execution_id, name) DO UPDATE SET kind = excluded.kind,"
    " str_value = excluded.str_value, num_value = excluded.num_value,"
    " int_value = excluded.int_value"
)
DELETE_ATTRIBUTE = "DELETE FROM search_attributes WHERE execution_id = ? AND name = ?"

# Finished executions, as the literal SQL the retention index is built on (a partial
# index serves only a query that repeats its predicate; keep the order).
FINISHED = "state IN ({})".format(", ".join(f"'{name}'" for name in TERMINAL_STATE_NAMES))


def attribute_row(execution_id: str, name: str, value: SearchValue) -> tuple[Any, ...]:
    """The row of one attribute, in ATTRIBUTE_COLUMNS order."""
    kind, v = value.kind, value.value
    if kind == "string":
        return (execution_id, name, kind, str(v), None, None)
    if kind == "int":
        return (execution_id, name, kind, None, float(v), int(v))
    if kind == "double":
        return (execution_id, name, kind, None, float(v), None)
    return (execution_id, name, kind, None, None, int(v))  # bool (0/1), time (ms)


def attribute_rows(
    execution_id: str, attributes: Mapping[str, SearchValue | None]
) -> tuple[list[tuple[Any, ...]], list[tuple[str, str]]]:
    """(rows to upsert, (execution_id, name) pairs to delete) for a set of updates."""
    upserts = [attribute_row(execution_id, n, v) for n, v in attributes.items() if v is not None]
    deletes = [(execution_id, n) for n, v in attributes.items() if v is None]
    return upserts, deletes


def to_value(row: Any) -> tuple[str, str, SearchValue]:
    """(execution_id, name, value) of a row of ATTRIBUTE_COLUMNS."""
    execution_id, name, kind = row[0], row[1], row[2]
    if kind == "string":
        return execution_id, name, SearchValue("string", row[3])
    if kind == "double":
        return execution_id, name, SearchValue("double", float(row[4]))
    if kind == "bool":
        return execution_id, name, SearchValue("bool", bool(row[5]))
    return execution_id, name, SearchValue(kind, int(row[5]))


def grouped(rows: Any) -> dict[str, dict[str, SearchValue]]:
    found: dict[str, dict[str, SearchValue]] = {}
    for row in rows:
        execution_id, name, value = to_value(row)
        found.setdefault(execution_id, {})[name] = value
    return found


def filter_where(f: Filter) -> tuple[list[str], list[Any]]:
    """The conditions of `f` (to AND with others) and their parameters, in order."""
    where: list[str] = []
    params: list[Any] = []
    for clause in f.clauses:
        sql, values = _attribute(clause) if clause.attribute else _column(clause)
        where.append(sql)
        params.extend(values)
    return where, params


def _compare(column: str, clause: Clause) -> tuple[str, list[Any]]:
    values: list[Any] = list(clause.values)
    if clause.kind == "number":
        values = [float(v) for v in values]
    elif clause.kind == "bool":
        values = [int(bool(v)) for v in values]
    if clause.op in ("in", "not in"):
        marks = ", ".join("?" * len(values))
        return f"{column} {clause.op.upper()} ({marks})", values
    return f"{column} {clause.op} ?", values


def _column(clause: Clause) -> tuple[str, list[Any]]:
    sql, values = _compare(clause.field, clause)
    if clause.finished:
        sql = f"{FINISHED} AND {sql}"
    return sql, values


_VALUE_COLUMN = {"string": "str_value", "number": "num_value", "bool": "int_value"}


def _attribute(clause: Clause) -> tuple[str, list[Any]]:
    column = _VALUE_COLUMN.get(clause.kind, "int_value")
    test, values = _compare(column, clause)
    if clause.kind in ("bool", "time"):
        test = f"kind = '{clause.kind}' AND {test}"
    sql = f"execution_id IN (SELECT execution_id FROM search_attributes WHERE name = ? AND {test})"
    return sql, [clause.field, *values]
