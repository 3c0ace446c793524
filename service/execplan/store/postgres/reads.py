"""Read queries: coroutines of an asyncpg pool (or connection), one round trip each."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, TypeAlias

import asyncpg

from ..port import TERMINAL_STATES, ExecutionRecord, Snapshot, StoredEvent, TimerRecord

EXECUTION_COLUMNS = (
    "execution_id, plan_id, workflow_name, state, created_at_ms, updated_at_ms,"
    " last_sequence, request_id, fairness_key"
)

Db: TypeAlias = "asyncpg.Pool | asyncpg.Connection"


def to_record(row: Any) -> ExecutionRecord:
    return ExecutionRecord(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8])


async def get_plan(db: Db, plan_id: str) -> bytes | None:
    payload = await db.fetchval("SELECT payload FROM plans WHERE plan_id = $1", plan_id)
    return None if payload is None else bytes(payload)


async def read_events(
    db: Db, execution_id: str, after_sequence: int, limit: int | None
) -> list[StoredEvent]:
    rows = await db.fetch(
        "SELECT sequence, kind, recorded_at_ms, payload FROM events"
        " WHERE execution_id = $1 AND sequence > $2 ORDER BY sequence LIMIT $3",
        execution_id,
        after_sequence,
        None if limit is None else max(limit, 0),
    )
    return [StoredEvent(execution_id, r[0], r[1], r[2], bytes(r[3])) for r in rows]


async def get_execution(db: Db, execution_id: str) -> ExecutionRecord | None:
    row = await db.fetchrow(
        f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE execution_id = $1", execution_id
    )
    return None if row is None else to_record(row)


async def list_executions(
    db: Db,
    states: Collection[str],
    workflow_name: str,
    limit: int,
    after: tuple[int, str] | None,
) -> list[ExecutionRecord]:
    where: list[str] = []
    params: list[Any] = []
    if states:
        params.append(list(states))
        where.append(f"state = ANY(${len(params)}::text[])")
    if workflow_name:
        params.append(workflow_name)
        where.append(f"workflow_name = ${len(params)}")
    if after is not None:
        params.extend(after)
        where.append(f"(created_at_ms, execution_id) < (${len(params) - 1}, ${len(params)})")
    sql = f"SELECT {EXECUTION_COLUMNS} FROM executions"
    if where:
        sql += " WHERE " + " AND ".join(where)
    params.append(max(limit, 0))
    sql += f" ORDER BY created_at_ms DESC, execution_id DESC LIMIT ${len(params)}"
    return [to_record(r) for r in await db.fetch(sql, *params)]


async def list_active(db: Db) -> list[ExecutionRecord]:
    rows = await db.fetch(
        f"SELECT {EXECUTION_COLUMNS} FROM executions WHERE state <> ALL($1::text[])"
        " ORDER BY created_at_ms, execution_id",
        sorted(TERMINAL_STATES),
    )
    return [to_record(r) for r in rows]


async def load_snapshot(db: Db, execution_id: str) -> Snapshot | None:
    row = await db.fetchrow(
        "SELECT sequence, payload FROM snapshots WHERE execution_id = $1", execution_id
    )
    return None if row is None else Snapshot(execution_id, row[0], bytes(row[1]))


async def list_timers(db: Db) -> list[TimerRecord]:
    rows = await db.fetch(
        "SELECT timer_id, execution_id, fire_at_ms, payload FROM timers"
        " ORDER BY fire_at_ms, timer_id"
    )
    return [TimerRecord(r[0], r[1], r[2], bytes(r[3])) for r in rows]


async def get_kv(db: Db, namespace: str, key: str) -> bytes | None:
    payload = await db.fetchval(
        "SELECT payload FROM kv WHERE namespace = $1 AND key = $2", namespace, key
    )
    return None if payload is None else bytes(payload)


async def list_kv(db: Db, namespace: str) -> list[tuple[str, bytes]]:
    rows = await db.fetch(
        "SELECT key, payload FROM kv WHERE namespace = $1 ORDER BY key", namespace
    )
    return [(r[0], bytes(r[1])) for r in rows]
