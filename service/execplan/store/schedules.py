"""Schedule rows: what the store keeps of a schedule, and how it is changed.

    record, created = await store.create_schedule(ScheduleRecord(name, 1, spec, state, 0, t, t))
    await store.update_schedule(ScheduleUpdate(new_record, expected_version=record.version))
    await store.create_execution(run, events, schedule=ScheduleUpdate(...))  # run + slot at once

`spec` (what and when) and `state` (what the scheduler did: counts, buffered slots,
recent runs) are opaque bytes the scheduler encodes (`execplan.schedules`); the store
only keeps `last_slot_ms` readable, and `version`, the optimistic-concurrency check:
every change names the version it read and fails with `ConcurrencyConflict` when
another writer (a replica, a pause) changed the row since. A schedule's run is
created together with its slot's update (`Store.create_execution(schedule=...)`),
and the run's `request_id` is unique per (schedule, slot): a slot can start at most
one execution, whichever replica or restart fires it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    name: str
    # 1 when created; every update adds one.
    version: int
    spec: bytes
    state: bytes
    # The latest slot handled (ms since the epoch; 0 = none yet).
    last_slot_ms: int
    created_at_ms: int
    updated_at_ms: int


@dataclass(frozen=True, slots=True)
class ScheduleUpdate:
    """Replace the row named `record.name` with `record`, provided it is still at
    `expected_version` (`record.version` is normally `expected_version + 1`)."""

    record: ScheduleRecord
    expected_version: int


SCHEDULE_COLUMNS = "name, version, spec, state, last_slot_ms, created_at_ms, updated_at_ms"

GET_SCHEDULE = f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = ?"
LIST_SCHEDULES = f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name > ? ORDER BY name LIMIT ?"
INSERT_SCHEDULE = (
    f"INSERT INTO schedules ({SCHEDULE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (name) DO NOTHING"
)
UPDATE_SCHEDULE = (
    "UPDATE schedules SET version = ?, spec = ?, state = ?, last_slot_ms = ?,"
    " updated_at_ms = ? WHERE name = ? AND version = ?"
)
SCHEDULE_VERSION = "SELECT version FROM schedules WHERE name = ?"
DELETE_SCHEDULE = "DELETE FROM schedules WHERE name = ?"


def to_schedule(r: Any) -> ScheduleRecord:
    """A record from a row of SCHEDULE_COLUMNS (sqlite3 tuple or asyncpg Record)."""
    return ScheduleRecord(r[0], r[1], bytes(r[2]), bytes(r[3]), r[4], r[5], r[6])


def insert_values(record: ScheduleRecord) -> tuple[object, ...]:
    return (
        record.name,
        record.version,
        record.spec,
        record.state,
        record.last_slot_ms,
        record.created_at_ms,
        record.updated_at_ms,
    )


def update_values(update: ScheduleUpdate) -> tuple[object, ...]:
    r = update.record
    return (
        r.version,
        r.spec,
        r.state,
        r.last_slot_ms,
        r.updated_at_ms,
        r.name,
        update.expected_version,
    )
