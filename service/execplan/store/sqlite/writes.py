"""Write operations: plain functions of a `sqlite3.Connection`, run by the writer.

Each runs inside the group transaction (see `writer.py`). The rule that keeps group
commit cheap: raise `ExecplanError`s (conflict, not found, already exists) only
*before* the first write, or from a single failing statement (which SQLite undoes by
itself); anything else that breaks part-way makes the writer re-run the group with a
savepoint per op. They validate against rows read
inside that same transaction, so two appends to one execution in one group see each
other in order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from execplan.errors import AlreadyExists, NotFound

from ..checks import check_sequences
from ..port import Append, ExecutionRecord, Snapshot, StoredEvent, TimerRecord
from .reads import EXECUTION_COLUMNS, to_record

_INSERT_EVENT = (
    "INSERT INTO events (execution_id, sequence, kind, recorded_at_ms, payload)"
    " VALUES (?, ?, ?, ?, ?)"
)


def _insert_events(conn: sqlite3.Connection, events: Sequence[StoredEvent]) -> None:
    conn.executemany(
        _INSERT_EVENT,
        [(e.execution_id, e.sequence, e.kind, e.recorded_at_ms, e.payload) for e in events],
    )


def put_plan(plan_id: str, payload: bytes, conn: sqlite3.Connection) -> None:
    conn.execute("INSERT OR IGNORE INTO plans (plan_id, payload) VALUES (?, ?)", (plan_id, payload))


def create_execution(
    record: ExecutionRecord, events: Sequence[StoredEvent], conn: sqlite3.Connection
) -> tuple[ExecutionRecord, bool]:
    if record.request_id:
        row = conn.execute(
            f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE request_id = ?",
            (record.request_id,),
        ).fetchone()
        if row is not None:
            return to_record(row), False
    if conn.execute(
        "SELECT 1 FROM executions WHERE execution_id = ?", (record.execution_id,)
    ).fetchone():
        raise AlreadyExists(f"execution {record.execution_id!r} already exists")
    check_sequences(record.execution_id, 0, events)
    conn.execute(
        f"INSERT INTO executions ({EXECUTION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            record.execution_id,
            record.plan_id,
            record.workflow_name,
            record.state,
            record.created_at_ms,
            record.updated_at_ms,
            len(events),
            record.request_id,
            record.fairness_key,
        ),
    )
    _insert_events(conn, events)
    stored = ExecutionRecord(
        record.execution_id,
        record.plan_id,
        record.workflow_name,
        record.state,
        record.created_at_ms,
        record.updated_at_ms,
        len(events),
        record.request_id,
        record.fairness_key,
    )
    return stored, True


def append(item: Append, conn: sqlite3.Connection) -> None:
    row = conn.execute(
        "SELECT last_sequence FROM executions WHERE execution_id = ?", (item.execution_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"execution {item.execution_id!r} not found")
    check_sequences(item.execution_id, row[0], item.events)
    _insert_events(conn, item.events)
    last = item.events[-1].sequence if item.events else row[0]
    if item.state is not None:
        conn.execute(
            "UPDATE executions SET last_sequence = ?, state = ?, updated_at_ms = ?"
            " WHERE execution_id = ?",
            (last, item.state, item.updated_at_ms, item.execution_id),
        )
    elif item.events:
        conn.execute(
            "UPDATE executions SET last_sequence = ? WHERE execution_id = ?",
            (last, item.execution_id),
        )


def save_snapshot(snapshot: Snapshot, conn: sqlite3.Connection) -> None:
    try:
        conn.execute(
            "INSERT INTO snapshots (execution_id, sequence, payload) VALUES (?, ?, ?)"
            " ON CONFLICT (execution_id) DO UPDATE"
            " SET sequence = excluded.sequence, payload = excluded.payload"
            " WHERE excluded.sequence >= snapshots.sequence",
            (snapshot.execution_id, snapshot.sequence, snapshot.payload),
        )
    except sqlite3.IntegrityError as exc:  # foreign key: no such execution
        raise NotFound(f"execution {snapshot.execution_id!r} not found") from exc


def put_timer(timer: TimerRecord, conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO timers (timer_id, execution_id, fire_at_ms, payload)"
        " VALUES (?, ?, ?, ?)",
        (timer.timer_id, timer.execution_id, timer.fire_at_ms, timer.payload),
    )


def delete_timer(timer_id: str, conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM timers WHERE timer_id = ?", (timer_id,))


def put_kv(namespace: str, key: str, payload: bytes, conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO kv (namespace, key, payload) VALUES (?, ?, ?)",
        (namespace, key, payload),
    )
