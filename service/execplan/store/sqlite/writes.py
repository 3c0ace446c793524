"""Write operations: plain functions of a `sqlite3.Connection`, run by the writer.

Each runs inside the group transaction (see `writer.py`). The rule that keeps group
commit cheap: raise `ExecplanError`s (conflict, not found, already exists) only
*before* the first write, or from a single failing statement (which SQLite undoes by
itself); anything else that breaks part-way makes the writer re-run the group with a
savepoint per op. They validate against rows read inside that same transaction, so
two appends to one execution in one group see each other in order. The SQL itself is
shared with PostgreSQL (`store/sql.py`); what is SQLite's own is how a rejected op is
detected inside the transaction.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Sequence
from typing import Any

from execplan.errors import AlreadyExists, ConcurrencyConflict, FailedPrecondition, NotFound

from .. import schedules as sch
from ..checks import check_sequences
from ..port import TERMINAL_STATES, Append, ExecutionRecord, Snapshot, StoredEvent
from ..search_sql import DELETE_ATTRIBUTE, UPSERT_ATTRIBUTE, attribute_rows
from ..sql import (
    BY_REQUEST_ID,
    EXECUTION_COLUMNS,
    INSERT_EVENT,
    SAVE_SNAPSHOT,
    record_values,
    to_record,
)
from ..usage import INSERT_USAGE, usage_rows

_INSERT_EXECUTION = f"INSERT INTO executions ({EXECUTION_COLUMNS}) VALUES ({', '.join('?' * 12)})"


def execute(sql: str, params: Sequence[Any], conn: sqlite3.Connection) -> None:
    """One statement of `store/sql.py` (plans, key/value)."""
    conn.execute(sql, params)


def _insert_events(
    conn: sqlite3.Connection, events: Sequence[StoredEvent], workflow_name: str
) -> None:
    conn.executemany(
        INSERT_EVENT,
        [(e.execution_id, e.sequence, e.kind, e.recorded_at_ms, e.payload) for e in events],
    )
    rows = usage_rows(events, workflow_name)
    if rows:  # in the same transaction: counted exactly when the event is
        conn.executemany(INSERT_USAGE, rows)


def _write_attributes(conn: sqlite3.Connection, item: Append | ExecutionRecord) -> None:
    attributes = (
        item.search_attributes
        if isinstance(item, Append)
        else dict(item.search_attributes)  # a new execution: upserts only
    )
    if not attributes:
        return
    upserts, deletes = attribute_rows(item.execution_id, attributes)
    if upserts:
        conn.executemany(UPSERT_ATTRIBUTE, upserts)
    if deletes:
        conn.executemany(DELETE_ATTRIBUTE, deletes)


def check_schedule(conn: sqlite3.Connection, update: sch.ScheduleUpdate) -> None:
    """Before any write: the schedule row is still at the version the caller read."""
    row = conn.execute(sch.SCHEDULE_VERSION, (update.record.name,)).fetchone()
    if row is None:
        raise NotFound(f"schedule {update.record.name!r} not found")
    if row[0] != update.expected_version:
        raise ConcurrencyConflict(
            f"schedule {update.record.name!r} changed (version {row[0]}, "
            f"expected {update.expected_version})"
        )


def create_execution(
    record: ExecutionRecord,
    events: Sequence[StoredEvent],
    schedule: sch.ScheduleUpdate | None,
    conn: sqlite3.Connection,
) -> tuple[ExecutionRecord, bool]:
    if record.request_id:
        row = conn.execute(BY_REQUEST_ID, (record.request_id,)).fetchone()
        if row is not None:
            return to_record(row), False
    if conn.execute(
        "SELECT 1 FROM executions WHERE execution_id = ?", (record.execution_id,)
    ).fetchone():
        raise AlreadyExists(f"execution {record.execution_id!r} already exists")
    check_sequences(record.execution_id, 0, events)
    if schedule is not None:
        check_schedule(conn, schedule)
    stored = dataclasses.replace(record, last_sequence=len(events))
    conn.execute(_INSERT_EXECUTION, record_values(stored))
    _insert_events(conn, events, record.workflow_name)
    _write_attributes(conn, stored)
    if schedule is not None:
        conn.execute(sch.UPDATE_SCHEDULE, sch.update_values(schedule))
    return stored, True


def append(item: Append, conn: sqlite3.Connection) -> None:
    row = conn.execute(
        "SELECT last_sequence, workflow_name, state FROM executions WHERE execution_id = ?",
        (item.execution_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"execution {item.execution_id!r} not found")
    check_sequences(item.execution_id, row[0], item.events)
    _insert_events(conn, item.events, row[1])
    _write_attributes(conn, item)
    last = item.events[-1].sequence if item.events else row[0]
    if item.state is not None and item.state != row[2]:
        conn.execute(
            "UPDATE executions SET last_sequence = ?, state = ?, updated_at_ms = ?"
            " WHERE execution_id = ?",
            (last, item.state, item.updated_at_ms, item.execution_id),
        )
    elif item.state is not None:
        # The state is named only when it changes: SQLite rewrites every index whose
        # columns or partial-index predicate the SET names, whether the value changed
        # or not, and `state` is in three (executions_by_state, and the predicates of
        # executions_active and executions_finished, each an IN list it builds per
        # row). Naming it in every append made this UPDATE 60% of the writer
        # thread's CPU in W3; now it is ~30% of what it was.
        conn.execute(
            "UPDATE executions SET last_sequence = ?, updated_at_ms = ? WHERE execution_id = ?",
            (last, item.updated_at_ms, item.execution_id),
        )
    elif item.events:
        conn.execute(
            "UPDATE executions SET last_sequence = ? WHERE execution_id = ?",
            (last, item.execution_id),
        )


def delete_execution(execution_id: str, max_events: int, conn: sqlite3.Connection) -> bool:
    """One bounded step of deleting a finished execution (see `Store.delete_execution`)."""
    row = conn.execute(
        "SELECT state FROM executions WHERE execution_id = ?", (execution_id,)
    ).fetchone()
    if row is None:
        return True
    if row[0] not in TERMINAL_STATES:
        raise FailedPrecondition(f"execution {execution_id} is {row[0]}, not finished")
    first = conn.execute(
        "SELECT min(sequence) FROM events WHERE execution_id = ?", (execution_id,)
    ).fetchone()[0]
    if first is not None:
        # Sequences are gap-free: this range is at most max_events rows of the PK.
        conn.execute(
            "DELETE FROM events WHERE execution_id = ? AND sequence < ?",
            (execution_id, first + max(max_events, 1)),
        )
        more = conn.execute(
            "SELECT 1 FROM events WHERE execution_id = ? LIMIT 1", (execution_id,)
        ).fetchone()
        if more is not None:
            return False
    conn.execute("DELETE FROM snapshots WHERE execution_id = ?", (execution_id,))
    conn.execute("DELETE FROM search_attributes WHERE execution_id = ?", (execution_id,))
    conn.execute("DELETE FROM executions WHERE execution_id = ?", (execution_id,))
    return True


def create_schedule(
    record: sch.ScheduleRecord, conn: sqlite3.Connection
) -> tuple[sch.ScheduleRecord, bool]:
    row = conn.execute(sch.GET_SCHEDULE, (record.name,)).fetchone()
    if row is not None:
        return sch.to_schedule(row), False
    conn.execute(sch.INSERT_SCHEDULE, sch.insert_values(record))
    return record, True


def update_schedule(update: sch.ScheduleUpdate, conn: sqlite3.Connection) -> None:
    check_schedule(conn, update)
    conn.execute(sch.UPDATE_SCHEDULE, sch.update_values(update))


def save_snapshot(snapshot: Snapshot, conn: sqlite3.Connection) -> None:
    try:
        conn.execute(SAVE_SNAPSHOT, (snapshot.execution_id, snapshot.sequence, snapshot.payload))
    except sqlite3.IntegrityError as exc:  # foreign key: no such execution
        raise NotFound(f"execution {snapshot.execution_id!r} not found") from exc
