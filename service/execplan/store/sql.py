"""What the SQL backends share: the `Store` methods that read the same in SQLite and
PostgreSQL, written once over two primitives each backend provides.

    class SqliteStore(SqlStore): ...      # sqlite/store.py
    class PostgresStore(SqlStore): ...    # postgres/store.py

A backend implements

    _query(sql, params, convert)   run one query on a reader connection and return
                                   `convert(rows)` (SQLite converts on the reader's
                                   thread, so a read stays one thread hop);
    _write(sql, params)            run one statement in the next group commit;
    open, close, stats             its connections and its group-commit writer;
    create_execution, append_each, save_snapshot, delete_execution,
    create_schedule, update_schedule
                                   the writes whose transaction semantics differ
                                   (see each backend's `writes.py`).

Queries are written once with `?` placeholders; PostgreSQL numbers them (`$1`, `$2`,
...) through `numbered()`. Rows are tuples (sqlite3) or records (asyncpg), read by
position in the order of the column lists below.
"""

from __future__ import annotations

import abc
import dataclasses
import re
from collections.abc import Callable, Collection, Sequence
from functools import lru_cache, partial
from typing import Any, TypeVar

from execplan.errors import ExecplanError, StoreError
from execplan.search import EMPTY, Filter, SearchValue

from . import schedules as sch
from .group_commit import WriterStats
from .port import (
    TERMINAL_STATE_NAMES,
    Append,
    ExecutionRecord,
    Snapshot,
    Store,
    StoredEvent,
    UsageQuery,
    UsageTotals,
    decode_cursor,
)
from .search_sql import ATTRIBUTE_COLUMNS, FINISHED, filter_where, grouped
from .usage import rollup_query, totals

T = TypeVar("T")
Rows = Sequence[Any]

EXECUTION_COLUMNS = (
    "execution_id, plan_id, workflow_name, state, created_at_ms, updated_at_ms,"
    " last_sequence, request_id, fairness_key, request_digest, parent_execution_id,"
    " parent_task_id"
)

# Non-terminal executions, as the literal SQL both schemas index on. A partial index
# is used only for a query whose WHERE repeats its predicate term for term, so the
# order of the names (the order of the first migration that indexed them) is fixed.
ACTIVE = "state NOT IN ({})".format(", ".join(f"'{name}'" for name in TERMINAL_STATE_NAMES))

GET_PLAN = "SELECT payload FROM plans WHERE plan_id = ?"
PUT_PLAN = "INSERT INTO plans (plan_id, payload) VALUES (?, ?) ON CONFLICT DO NOTHING"
READ_EVENTS = (
    "SELECT sequence, kind, recorded_at_ms, payload FROM events"
    " WHERE execution_id = ? AND sequence > ? ORDER BY sequence"
)
GET_EXECUTION = f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE execution_id = ?"
# The `!= ''` repeats the predicate of the partial index executions_by_request: SQLite
# uses a partial index only for a query whose WHERE implies the index's, and without it
# this was a scan of every execution, twice per StartExecution with a request_id (here
# and in create_execution on the writer thread): 2 ms of server CPU per start at 10,000
# executions. PostgreSQL's generic plans of a prepared statement need it the same way.
BY_REQUEST_ID = (
    f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE request_id = ? AND request_id != ''"
)
LIST_ACTIVE = (
    f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE {ACTIVE}"
    " ORDER BY created_at_ms, execution_id"
)
LOAD_SNAPSHOT = "SELECT sequence, payload FROM snapshots WHERE execution_id = ?"
SAVE_SNAPSHOT = (
    "INSERT INTO snapshots (execution_id, sequence, payload) VALUES (?, ?, ?)"
    " ON CONFLICT (execution_id) DO UPDATE"
    " SET sequence = excluded.sequence, payload = excluded.payload"
    " WHERE excluded.sequence >= snapshots.sequence"
)
GET_KV = "SELECT payload FROM kv WHERE namespace = ? AND key = ?"
LIST_KV = "SELECT key, payload FROM kv WHERE namespace = ? ORDER BY key"
INSERT_KV = "INSERT INTO kv (namespace, key, payload) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
PUT_KV = (
    "INSERT INTO kv (namespace, key, payload) VALUES (?, ?, ?)"
    " ON CONFLICT (namespace, key) DO UPDATE SET payload = excluded.payload"
)
INSERT_EVENT = (
    "INSERT INTO events (execution_id, sequence, kind, recorded_at_ms, payload)"
    " VALUES (?, ?, ?, ?, ?)"
)


def to_record(row: Any) -> ExecutionRecord:
    """An `ExecutionRecord` from a row of `EXECUTION_COLUMNS`."""
    return ExecutionRecord(*row[:12])


def record_values(record: ExecutionRecord) -> tuple[Any, ...]:
    """`record` as values for `EXECUTION_COLUMNS`, in order."""
    return (
        record.execution_id,
        record.plan_id,
        record.workflow_name,
        record.state,
        record.created_at_ms,
        record.updated_at_ms,
        record.last_sequence,
        record.request_id,
        record.fairness_key,
        record.request_digest,
        record.parent_execution_id,
        record.parent_task_id,
    )


def list_query(
    states: Collection[str],
    workflow_name: str,
    limit: int,
    after: tuple[int, str] | None,
    *,
    parent_execution_id: str = "",
    search: Filter = EMPTY,
) -> tuple[str, list[Any]]:
    """`list_executions` as SQL and parameters: newest first, filters ANDed."""
    where, params = filter_where(search)
    if states:
        where.append(f"state IN ({', '.join('?' * len(states))})")
        params.extend(states)
    if workflow_name:
        where.append("workflow_name = ?")
        params.append(workflow_name)
    if parent_execution_id:
        # `!= ''`: the partial index executions_by_parent's predicate (see BY_REQUEST_ID).
        where.append("parent_execution_id = ? AND parent_execution_id != ''")
        params.append(parent_execution_id)
    if after is not None:
        where.append("(created_at_ms, execution_id) < (?, ?)")
        params.extend(after)
    sql = f"SELECT {EXECUTION_COLUMNS} FROM executions"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY created_at_ms DESC, execution_id DESC LIMIT ?"
    params.append(max(limit, 0))
    return sql, params


_PLACEHOLDER = re.compile(r"\?")


@lru_cache(maxsize=256)
def numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's `$1`, `$2`, ... (no query here has a `?`
    inside a literal)."""
    counter = iter(range(1, sql.count("?") + 1))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


def finished_query(
    before_ms: int, workflows: Collection[str], other_than: Collection[str], limit: int
) -> tuple[str, list[Any]]:
    """`list_finished` as SQL: oldest end first, over the partial index of finished ones."""
    sql = f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE {FINISHED} AND updated_at_ms < ?"
    params: list[Any] = [before_ms]
    if workflows:
        sql += f" AND workflow_name IN ({', '.join('?' * len(workflows))})"
        params.extend(workflows)
    if other_than:
        sql += f" AND workflow_name NOT IN ({', '.join('?' * len(other_than))})"
        params.extend(other_than)
    sql += " ORDER BY updated_at_ms, execution_id LIMIT ?"
    params.append(max(limit, 0))
    return sql, params


def attributes_query(execution_ids: Collection[str]) -> tuple[str, list[Any]]:
    marks = ", ".join("?" * len(execution_ids))
    sql = f"SELECT {ATTRIBUTE_COLUMNS} FROM search_attributes WHERE execution_id IN ({marks})"
    return sql, list(execution_ids)


def _first_payload(rows: Rows) -> bytes | None:
    return bytes(rows[0][0]) if rows else None


def _records(rows: Rows) -> list[ExecutionRecord]:
    return [to_record(row) for row in rows]


def _first_record(rows: Rows) -> ExecutionRecord | None:
    return to_record(rows[0]) if rows else None


class SqlStore(Store):
    """The reads and simple writes of a SQL backend (see the module docstring)."""

    @abc.abstractmethod
    async def _query(self, sql: str, params: Sequence[Any], convert: Callable[[Rows], T]) -> T:
        """`convert(rows)` of one query on a reader connection."""

    @abc.abstractmethod
    async def _write(self, sql: str, params: Sequence[Any]) -> None:
        """One statement in the next group commit; returns after that commit."""

    @property
    @abc.abstractmethod
    def stats(self) -> WriterStats:
        """Group-commit counters (transactions, operations, largest group)."""

    # -- writes --------------------------------------------------------------------

    async def put_plan(self, plan_id: str, payload: bytes) -> None:
        await self._write(PUT_PLAN, (plan_id, payload))

    async def put_kv(self, namespace: str, key: str, payload: bytes) -> None:
        await self._write(PUT_KV, (namespace, key, payload))

    async def insert_kv(self, namespace: str, key: str, payload: bytes) -> bytes:
        await self._write(INSERT_KV, (namespace, key, payload))
        stored = await self.get_kv(namespace, key)
        if stored is None:  # nothing deletes kv entries
            raise StoreError(f"kv entry {namespace}/{key} vanished after its insert")
        return stored

    async def append(self, batch: Sequence[Append]) -> None:
        failures = await self.append_each(batch)
        if failures:
            raise _first(failures)

    # -- reads ---------------------------------------------------------------------

    async def get_plan(self, plan_id: str) -> bytes | None:
        return await self._query(GET_PLAN, (plan_id,), _first_payload)

    async def read_events(
        self, execution_id: str, after_sequence: int = 0, limit: int | None = None
    ) -> list[StoredEvent]:
        def events(rows: Rows) -> list[StoredEvent]:
            return [StoredEvent(execution_id, r[0], r[1], r[2], bytes(r[3])) for r in rows]

        if limit is None:
            return await self._query(READ_EVENTS, (execution_id, after_sequence), events)
        params = (execution_id, after_sequence, max(limit, 0))
        return await self._query(READ_EVENTS + " LIMIT ?", params, events)

    async def get_execution(self, execution_id: str) -> ExecutionRecord | None:
        return await self._query(GET_EXECUTION, (execution_id,), _first_record)

    async def find_by_request(self, request_id: str) -> ExecutionRecord | None:
        return await self._query(BY_REQUEST_ID, (request_id,), _first_record)

    async def list_executions(
        self,
        *,
        states: Collection[str] = (),
        workflow_name: str = "",
        limit: int = 100,
        after: str = "",
        parent_execution_id: str = "",
        filter: Filter = EMPTY,
    ) -> list[ExecutionRecord]:
        bound = decode_cursor(after) if after else None
        sql, params = list_query(
            tuple(states),
            workflow_name,
            limit,
            bound,
            parent_execution_id=parent_execution_id,
            search=filter,
        )
        return await self._with_attributes(await self._query(sql, params, _records))

    async def _with_attributes(self, records: list[ExecutionRecord]) -> list[ExecutionRecord]:
        if not records:
            return records
        found = await self.search_attributes([r.execution_id for r in records])
        return [
            dataclasses.replace(r, search_attributes=found[r.execution_id])
            if r.execution_id in found
            else r
            for r in records
        ]

    async def search_attributes(
        self, execution_ids: Collection[str]
    ) -> dict[str, dict[str, SearchValue]]:
        ids = list(dict.fromkeys(execution_ids))
        found: dict[str, dict[str, SearchValue]] = {}
        for start in range(0, len(ids), 500):  # bounded parameter lists
            sql, params = attributes_query(ids[start : start + 500])
            found.update(await self._query(sql, params, grouped))
        return found

    async def list_finished(
        self,
        finished_before_ms: int,
        *,
        workflows: Collection[str] = (),
        other_than: Collection[str] = (),
        limit: int = 100,
    ) -> list[ExecutionRecord]:
        sql, params = finished_query(finished_before_ms, tuple(workflows), tuple(other_than), limit)
        return await self._query(sql, params, _records)

    async def list_active(self) -> list[ExecutionRecord]:
        return await self._query(LIST_ACTIVE, (), _records)

    async def load_snapshot(self, execution_id: str) -> Snapshot | None:
        def snapshot(rows: Rows) -> Snapshot | None:
            return Snapshot(execution_id, rows[0][0], bytes(rows[0][1])) if rows else None

        return await self._query(LOAD_SNAPSHOT, (execution_id,), snapshot)

    async def get_kv(self, namespace: str, key: str) -> bytes | None:
        return await self._query(GET_KV, (namespace, key), _first_payload)

    async def list_kv(self, namespace: str) -> list[tuple[str, bytes]]:
        def entries(rows: Rows) -> list[tuple[str, bytes]]:
            return [(r[0], bytes(r[1])) for r in rows]

        return await self._query(LIST_KV, (namespace,), entries)

    async def usage(self, query: UsageQuery) -> UsageTotals:
        sql, params = rollup_query(query)
        return await self._query(sql, params, partial(totals, group_by=query.group_by))

    # -- schedules ---------------------------------------------------------------------

    async def get_schedule(self, name: str) -> sch.ScheduleRecord | None:
        def first(rows: Rows) -> sch.ScheduleRecord | None:
            return sch.to_schedule(rows[0]) if rows else None

        return await self._query(sch.GET_SCHEDULE, (name,), first)

    async def list_schedules(self, limit: int = 100, after: str = "") -> list[sch.ScheduleRecord]:
        def records(rows: Rows) -> list[sch.ScheduleRecord]:
            return [sch.to_schedule(r) for r in rows]

        return await self._query(sch.LIST_SCHEDULES, (after, max(limit, 0)), records)

    async def delete_schedule(self, name: str) -> bool:
        existed = await self.get_schedule(name) is not None
        await self._write(sch.DELETE_SCHEDULE, (name,))
        return existed


def _first(failures: dict[str, ExecplanError]) -> ExecplanError:
    return next(iter(failures.values()))
