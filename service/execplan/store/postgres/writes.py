"""Write operations: coroutines of the writer's `asyncpg.Connection`, run inside the
group transaction (see `writer.py`).

The rule that keeps group commit cheap (as in `sqlite/writes.py`): raise
`ExecplanError`s only *before* the first write, and never let an expected condition
become an SQL error (PostgreSQL aborts the whole transaction on any error): duplicates
are `ON CONFLICT`, missing rows are looked up first. Appends are not per-op functions
here: `append_many` validates a whole run of them in Python against one locked read
of `last_sequence` and writes every accepted event with one multi-row INSERT (unnest
of column arrays) and every index row with one UPDATE: three round trips per group,
whatever its size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
from execplan.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    ExecplanError,
    FailedPrecondition,
    NotFound,
    OwnershipLost,
)
from execplan.search import SearchValue

from .. import schedules as sch
from ..checks import check_sequences
from ..group_commit import Failed
from ..port import TERMINAL_STATES, Append, ExecutionRecord, Owner, Snapshot, StoredEvent
from ..search_sql import DELETE_ATTRIBUTE, UPSERT_ATTRIBUTE, attribute_rows
from ..sql import (
    BY_REQUEST_ID,
    EXECUTION_COLUMNS,
    SAVE_SNAPSHOT,
    numbered,
    record_values,
    to_record,
)
from ..usage import USAGE_COLUMNS, usage_rows
from .ownership import CHANNEL, OWNED

_INSERT_EVENTS = (
    "INSERT INTO events (execution_id, sequence, kind, recorded_at_ms, payload)"
    " SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::bytea[])"
)

_UPDATE_INDEX = (
    "UPDATE executions AS e SET last_sequence = u.last_sequence,"
    " state = COALESCE(u.state, e.state),"
    " updated_at_ms = COALESCE(u.updated_at_ms, e.updated_at_ms)"
    " FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[])"
    " AS u (execution_id, last_sequence, state, updated_at_ms)"
    " WHERE e.execution_id = u.execution_id"
)

# Replicas: the same UPDATE, and one NOTIFY per execution (delivered at commit) for
# watchers on other replicas (ownership.EventListener); no extra round trip.
_UPDATE_INDEX_NOTIFY = (
    f"WITH u AS ({_UPDATE_INDEX} RETURNING e.execution_id)"
    f" SELECT count(pg_notify('{CHANNEL}', u.execution_id)) FROM u"
)

_INSERT_EXECUTION = (
    f"INSERT INTO executions ({EXECUTION_COLUMNS}, owner_id, owner_epoch)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    " ON CONFLICT DO NOTHING"
    " RETURNING execution_id"
)

_LOCK = (
    "SELECT e.execution_id, e.last_sequence, {owned}, e.workflow_name FROM executions e"
    " WHERE e.execution_id = ANY($1::text[]) ORDER BY e.execution_id FOR UPDATE OF e"
)


_INSERT_USAGE = (
    f"INSERT INTO usage ({USAGE_COLUMNS}) SELECT * FROM unnest($1::text[], $2::bigint[],"
    " $3::text[], $4::double precision[], $5::bigint[], $6::text[], $7::text[])"
)


class _EventColumns:
    def __init__(self) -> None:
        self.ids: list[str] = []
        self.sequences: list[int] = []
        self.kinds: list[str] = []
        self.recorded: list[int] = []
        self.payloads: list[bytes] = []
        self.usage: list[tuple[Any, ...]] = []

    def add(self, events: Sequence[StoredEvent], workflow_name: str) -> None:
        for e in events:
            self.ids.append(e.execution_id)
            self.sequences.append(e.sequence)
            self.kinds.append(e.kind)
            self.recorded.append(e.recorded_at_ms)
            self.payloads.append(e.payload)
        self.usage += usage_rows(events, workflow_name)

    async def insert(self, conn: asyncpg.Connection) -> None:
        if self.ids:
            await conn.execute(
                _INSERT_EVENTS, self.ids, self.sequences, self.kinds, self.recorded, self.payloads
            )
        if self.usage:  # in the same transaction: counted exactly when the event is
            await conn.execute(
                _INSERT_USAGE, *(list(column) for column in zip(*self.usage, strict=True))
            )


async def append_many(
    conn: asyncpg.Connection, items: Sequence[Append], owner: Owner | None = None
) -> list[Any]:
    """Apply `items` in order; returns one outcome per item (`None` or `Failed`).

    `FOR UPDATE` (in id order, so two processes cannot deadlock) holds the index rows
    until commit: a concurrent writer elsewhere waits and then sees our sequences.
    Later items see earlier ones of the same run through the in-memory `last` map.
    With an `owner` (replicas), an execution not owned by it under a live lease is
    rejected with `OwnershipLost`, checked on the locked row (see ownership.py).
    """
    ids = sorted({item.execution_id for item in items})
    if owner is None:
        rows = await conn.fetch(_LOCK.format(owned="true"), ids)
    else:
        rows = await conn.fetch(_LOCK.format(owned=OWNED), ids, owner.replica_id, owner.epoch)
    last: dict[str, int] = {r[0]: r[1] for r in rows}
    foreign = {r[0] for r in rows if not r[2]}
    workflow = {r[0]: r[3] for r in rows}
    # execution_id -> [last_sequence, state, updated_at_ms] to write.
    changed: dict[str, list[Any]] = {}
    columns = _EventColumns()
    outcomes: list[Any] = []
    for item in items:
        current = last.get(item.execution_id)
        if current is None:
            outcomes.append(Failed(NotFound(f"execution {item.execution_id!r} not found")))
            continue
        if item.execution_id in foreign:
            lost = OwnershipLost(
                f"execution {item.execution_id!r} is owned by another replica",
                [item.execution_id],
            )
            outcomes.append(Failed(lost))
            continue
        try:
            check_sequences(item.execution_id, current, item.events)
        except ConcurrencyConflict as exc:
            outcomes.append(Failed(exc))
            continue
        outcomes.append(None)
        if not item.events and item.state is None:
            continue
        columns.add(item.events, workflow[item.execution_id])
        new_last = item.events[-1].sequence if item.events else current
        last[item.execution_id] = new_last
        row = changed.setdefault(item.execution_id, [new_last, None, None])
        row[0] = new_last
        if item.state is not None:
            row[1], row[2] = item.state, item.updated_at_ms
    await columns.insert(conn)
    accepted = [i for i, o in zip(items, outcomes, strict=True) if o is None]
    await _write_attributes(conn, [(i.execution_id, i.search_attributes) for i in accepted])
    if changed:
        keys = list(changed)
        await conn.execute(
            _UPDATE_INDEX if owner is None else _UPDATE_INDEX_NOTIFY,
            keys,
            [changed[k][0] for k in keys],
            [changed[k][1] for k in keys],
            [changed[k][2] for k in keys],
        )
    return outcomes


async def _write_attributes(
    conn: asyncpg.Connection,
    updates: Sequence[tuple[str, Mapping[str, SearchValue | None]]],
) -> None:
    """Upserts and removals of search attributes: at most two statements a group."""
    upserts: list[tuple[Any, ...]] = []
    deletes: list[tuple[str, str]] = []
    for execution_id, attributes in updates:
        if attributes:
            rows, gone = attribute_rows(execution_id, attributes)
            upserts += rows
            deletes += gone
    if upserts:
        await conn.executemany(numbered(UPSERT_ATTRIBUTE), upserts)
    if deletes:
        await conn.executemany(numbered(DELETE_ATTRIBUTE), deletes)


async def _check_schedule(conn: asyncpg.Connection, update: sch.ScheduleUpdate) -> None:
    """Before any write: the schedule row is still at the version the caller read
    (locked until commit, so a concurrent change waits and then sees ours)."""
    version = await conn.fetchval(
        numbered(sch.SCHEDULE_VERSION) + " FOR UPDATE", update.record.name
    )
    if version is None:
        raise NotFound(f"schedule {update.record.name!r} not found")
    if version != update.expected_version:
        raise ConcurrencyConflict(
            f"schedule {update.record.name!r} changed (version {version}, "
            f"expected {update.expected_version})"
        )


async def execute(sql: str, params: Sequence[Any], conn: asyncpg.Connection) -> None:
    """One statement of `store/sql.py` (plans, key/value), already `numbered`."""
    await conn.execute(sql, *params)


async def _by_request_id(conn: asyncpg.Connection, request_id: str) -> ExecutionRecord | None:
    row = await conn.fetchrow(numbered(BY_REQUEST_ID), request_id)
    return None if row is None else to_record(row)


@dataclasses.dataclass(frozen=True, slots=True)
class CreateExecution:
    """`create_execution` as a writer op that shows the request_id it may insert, so
    the writer can claim a group's request_ids in one order first (writer.py)."""

    record: ExecutionRecord
    events: tuple[StoredEvent, ...]
    owner: Owner | None
    schedule: sch.ScheduleUpdate | None

    async def __call__(self, conn: asyncpg.Connection) -> tuple[ExecutionRecord, bool]:
        return await create_execution(self.record, self.events, self.owner, self.schedule, conn)


async def create_execution(
    record: ExecutionRecord,
    events: Sequence[StoredEvent],
    owner: Owner | None,
    schedule: sch.ScheduleUpdate | None,
    conn: asyncpg.Connection,
) -> tuple[ExecutionRecord, bool]:
    if record.request_id:
        existing = await _by_request_id(conn, record.request_id)
        if existing is not None:
            return existing, False
    try:
        check_sequences(record.execution_id, 0, events)
    except ExecplanError:
        if await conn.fetchval(
            "SELECT 1 FROM executions WHERE execution_id = $1", record.execution_id
        ):
            raise AlreadyExists(f"execution {record.execution_id!r} already exists") from None
        raise
    if schedule is not None:
        await _check_schedule(conn, schedule)
    stored = dataclasses.replace(record, last_sequence=len(events))
    # DO NOTHING covers both unique keys (id, request_id); it waits for a concurrent
    # inserter of the same key in another process and then reports the conflict.
    inserted = await conn.fetchval(
        _INSERT_EXECUTION,
        *record_values(stored),
        "" if owner is None else owner.replica_id,
        0 if owner is None else owner.epoch,
    )
    if inserted is None:
        if record.request_id:
            existing = await _by_request_id(conn, record.request_id)
            if existing is not None:
                return existing, False
        raise AlreadyExists(f"execution {record.execution_id!r} already exists")
    columns = _EventColumns()
    columns.add(events, record.workflow_name)
    await columns.insert(conn)
    await _write_attributes(conn, [(stored.execution_id, stored.search_attributes)])
    if schedule is not None:
        await conn.execute(numbered(sch.UPDATE_SCHEDULE), *sch.update_values(schedule))
    return stored, True


async def save_snapshot(snapshot: Snapshot, conn: asyncpg.Connection) -> None:
    if not await conn.fetchval(
        "SELECT 1 FROM executions WHERE execution_id = $1", snapshot.execution_id
    ):
        raise NotFound(f"execution {snapshot.execution_id!r} not found")
    await conn.execute(
        numbered(SAVE_SNAPSHOT), snapshot.execution_id, snapshot.sequence, snapshot.payload
    )


async def delete_execution(execution_id: str, max_events: int, conn: asyncpg.Connection) -> bool:
    """One bounded step of deleting a finished execution (see `Store.delete_execution`)."""
    state = await conn.fetchval(
        "SELECT state FROM executions WHERE execution_id = $1 FOR UPDATE", execution_id
    )
    if state is None:
        return True
    if state not in TERMINAL_STATES:
        raise FailedPrecondition(f"execution {execution_id} is {state}, not finished")
    first = await conn.fetchval(
        "SELECT min(sequence) FROM events WHERE execution_id = $1", execution_id
    )
    if first is not None:
        # Sequences are gap-free: this range is at most max_events rows of the PK.
        await conn.execute(
            "DELETE FROM events WHERE execution_id = $1 AND sequence < $2",
            execution_id,
            first + max(max_events, 1),
        )
        if await conn.fetchval(
            "SELECT 1 FROM events WHERE execution_id = $1 LIMIT 1", execution_id
        ):
            return False
    await conn.execute("DELETE FROM snapshots WHERE execution_id = $1", execution_id)
    await conn.execute("DELETE FROM search_attributes WHERE execution_id = $1", execution_id)
    await conn.execute("DELETE FROM executions WHERE execution_id = $1", execution_id)
    return True


async def create_schedule(
    record: sch.ScheduleRecord, conn: asyncpg.Connection
) -> tuple[sch.ScheduleRecord, bool]:
    inserted = await conn.execute(numbered(sch.INSERT_SCHEDULE), *sch.insert_values(record))
    if inserted.endswith(" 1"):  # "INSERT 0 1"
        return record, True
    row = await conn.fetchrow(numbered(sch.GET_SCHEDULE), record.name)
    return sch.to_schedule(row), False


async def update_schedule(update: sch.ScheduleUpdate, conn: asyncpg.Connection) -> None:
    await _check_schedule(conn, update)
    await conn.execute(numbered(sch.UPDATE_SCHEDULE), *sch.update_values(update))
