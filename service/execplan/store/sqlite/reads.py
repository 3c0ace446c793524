"""Read operations: plain functions of a `sqlite3.Connection`, run on a reader thread.

Each does its query *and* builds the dataclasses on the reader's thread, so a read
is one hop and the event loop receives finished objects. Readers are separate
connections (WAL), so they never wait behind a group commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from typing import Any

from ..port import ExecutionRecord, Snapshot, StoredEvent, TimerRecord
from .schema import ACTIVE

EXECUTION_COLUMNS = (
    "execution_id, plan_id, workflow_name, state, created_at_ms, updated_at_ms,"
    " last_sequence, request_id, fairness_key"
)


def to_record(row: Any) -> ExecutionRecord:
    return ExecutionRecord(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8])


def get_plan(plan_id: str, conn: sqlite3.Connection) -> bytes | None:
    row = conn.execute("SELECT payload FROM plans WHERE plan_id = ?", (plan_id,)).fetchone()
    return None if row is None else bytes(row[0])


def read_events(
    execution_id: str, after_sequence: int, limit: int | None, conn: sqlite3.Connection
) -> list[StoredEvent]:
    rows = conn.execute(
        "SELECT sequence, kind, recorded_at_ms, payload FROM events"
        " WHERE execution_id = ? AND sequence > ? ORDER BY sequence LIMIT ?",
        (execution_id, after_sequence, -1 if limit is None else max(limit, 0)),
    ).fetchall()
    return [StoredEvent(execution_id, r[0], r[1], r[2], bytes(r[3])) for r in rows]


def get_execution(execution_id: str, conn: sqlite3.Connection) -> ExecutionRecord | None:
    row = conn.execute(
        f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE execution_id = ?", (execution_id,)
    ).fetchone()
    return None if row is None else to_record(row)


def list_executions(
    states: Collection[str],
    workflow_name: str,
    limit: int,
    after: tuple[int, str] | None,
    conn: sqlite3.Connection,
) -> list[ExecutionRecord]:
    where: list[str] = []
    params: list[Any] = []
    if states:
        where.append(f"state IN ({', '.join('?' * len(states))})")
        params.extend(states)
    if workflow_name:
        where.append("workflow_name = ?")
        params.append(workflow_name)
    if after is not None:
        where.append("(created_at_ms, execution_id) < (?, ?)")
        params.extend(after)
    sql = f"SELECT {EXECUTION_COLUMNS} FROM executions"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY created_at_ms DESC, execution_id DESC LIMIT ?"
    params.append(max(limit, 0))
    return [to_record(r) for r in conn.execute(sql, params).fetchall()]


def list_active(conn: sqlite3.Connection) -> list[ExecutionRecord]:
    # Literal predicate, identical to the partial index's: see schema.ACTIVE.
    rows = conn.execute(
        f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE {ACTIVE}"
        " ORDER BY created_at_ms, execution_id"
    ).fetchall()
    return [to_record(r) for r in rows]


def load_snapshot(execution_id: str, conn: sqlite3.Connection) -> Snapshot | None:
    row = conn.execute(
        "SELECT sequence, payload FROM snapshots WHERE execution_id = ?", (execution_id,)
    ).fetchone()
    return None if row is None else Snapshot(execution_id, row[0], bytes(row[1]))


def list_timers(conn: sqlite3.Connection) -> list[TimerRecord]:
    rows = conn.execute(
        "SELECT timer_id, execution_id, fire_at_ms, payload FROM timers"
        " ORDER BY fire_at_ms, timer_id"
    ).fetchall()
    return [TimerRecord(r[0], r[1], r[2], bytes(r[3])) for r in rows]


def get_kv(namespace: str, key: str, conn: sqlite3.Connection) -> bytes | None:
    row = conn.execute(
        "SELECT payload FROM kv WHERE namespace = ? AND key = ?", (namespace, key)
    ).fetchone()
    return None if row is None else bytes(row[0])


def list_kv(namespace: str, conn: sqlite3.Connection) -> list[tuple[str, bytes]]:
    rows = conn.execute(
        "SELECT key, payload FROM kv WHERE namespace = ? ORDER BY key", (namespace,)
    ).fetchall()
    return [(r[0], bytes(r[1])) for r in rows]
