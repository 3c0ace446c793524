"""SqliteFlowStore: flow-control state in the SQLite file (the store's `flow`).

Every write is one op on the single writer connection (`GroupCommitWriter.submit`),
so it runs inside a BEGIN IMMEDIATE transaction that no other writer can interleave
with: reading the holders or levels and writing them back needs no further lock.
One process owns a SQLite file, so its clock is the clock of every level.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

from execplan.flow import buckets
from execplan.flow.rates import BucketSettings

from ..flow import (
    SERVER,
    BucketDef,
    BucketLevel,
    SlotRequest,
    TakeRequest,
    TakeResult,
    grant,
    held_tag,
    now_ms,
    pause_all,
    take_all,
)
from ..flow_sql import BUCKETS, LEVELS, SqlFlowReads, levels_at, purge_sql, to_def, to_level

if TYPE_CHECKING:
    from .store import SqliteStore

Levels = dict[tuple[str, str], buckets.Level | None]


def _acquire(requests: Sequence[SlotRequest], now: int, conn: sqlite3.Connection) -> list[bool]:
    counts: dict[tuple[str, str], int] = {}
    held: set[str] = set()
    for name, key in sorted({(r.name, r.key) for r in requests}):
        rows = conn.execute(
            "SELECT holder FROM limit_holders WHERE name = ? AND key = ?", (name, key)
        ).fetchall()
        counts[(name, key)] = len(rows)
        held.update(held_tag(name, key, h) for (h,) in rows)
    granted, new = grant(requests, counts, held)
    conn.executemany(
        "INSERT INTO limit_holders (name, key, holder, max, acquired_ms) VALUES (?, ?, ?, ?, ?)",
        [(r.name, r.key, r.holder, r.max, now) for r in new],
    )
    return granted


def _release(holders: Sequence[str], conn: sqlite3.Connection) -> None:
    conn.executemany("DELETE FROM limit_holders WHERE holder = ?", [(h,) for h in holders])


def _set_bucket(
    name: str, s: BucketSettings, source: str, now: int, conn: sqlite3.Connection
) -> BucketDef:
    row = conn.execute(BUCKETS.replace("ORDER BY name", "WHERE name = ?"), (name,)).fetchone()
    if row is not None:
        old = to_def(row)
        if (old.source == SERVER and source != SERVER) or (
            old.settings == s and old.source == source
        ):
            return old
    conn.execute(
        "INSERT INTO buckets (name, units, period_ms, burst, source, updated_ms)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET units = excluded.units,"
        " period_ms = excluded.period_ms, burst = excluded.burst, source = excluded.source,"
        " updated_ms = excluded.updated_ms",
        (name, s.units, s.period_ms, s.burst, source, now),
    )
    return BucketDef(name, s, source, now)


def _delete_bucket(name: str, conn: sqlite3.Connection) -> bool:
    conn.execute("DELETE FROM bucket_levels WHERE name = ?", (name,))
    return conn.execute("DELETE FROM buckets WHERE name = ?", (name,)).rowcount > 0


def _load(
    conn: sqlite3.Connection, keys: set[tuple[str, str]]
) -> tuple[dict[str, BucketDef], Levels]:
    names = sorted({k[0] for k in keys})
    marks = ", ".join("?" * len(names))
    defs = {
        r[0]: to_def(r)
        for r in conn.execute(
            BUCKETS.replace("ORDER BY", f"WHERE name IN ({marks}) ORDER BY"), names
        )
    }
    levels: Levels = {}
    for name, key in sorted(keys):
        row = conn.execute(LEVELS + " WHERE name = ? AND key = ?", (name, key)).fetchone()
        levels[(name, key)] = None if row is None else to_level(row)
    return defs, levels


def _save(conn: sqlite3.Connection, levels: Levels, changed: set[tuple[str, str]]) -> None:
    rows = []
    for k in sorted(changed):
        level = levels[k]
        assert level is not None
        rows.append((k[0], k[1], level.tokens, level.updated_ms, level.paused_until_ms))
    conn.executemany(
        "INSERT INTO bucket_levels (name, key, tokens, updated_ms, paused_until_ms)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (name, key) DO UPDATE SET tokens = excluded.tokens,"
        " updated_ms = excluded.updated_ms, paused_until_ms = excluded.paused_until_ms",
        rows,
    )


def _take(requests: Sequence[TakeRequest], now: int, conn: sqlite3.Connection) -> list[TakeResult]:
    defs, levels = _load(conn, {(u.name, u.key) for r in requests for u in r.uses})
    results, changed = take_all(requests, defs, levels, now)
    _save(conn, levels, changed)
    return results


def _pause(
    keys: Sequence[tuple[str, str]], wait_ms: int, now: int, conn: sqlite3.Connection
) -> None:
    defs, levels = _load(conn, set(keys))
    _save(conn, levels, pause_all(keys, defs, levels, wait_ms, now))


def _purge(task_type: str, key: str, before: int, conn: sqlite3.Connection) -> int:
    sql, params = purge_sql(task_type, key, before)
    return conn.execute(sql, params).rowcount


class SqliteFlowStore(SqlFlowReads):
    def __init__(self, store: SqliteStore) -> None:
        super().__init__(store)
        self._sqlite = store

    async def acquire_slots(self, requests: Sequence[SlotRequest]) -> list[bool]:
        if not requests:
            return []
        return await self._sqlite._require_writer().submit(
            partial(_acquire, tuple(requests), now_ms())
        )

    async def release_slots(self, holders: Sequence[str]) -> None:
        if holders:
            await self._sqlite._require_writer().submit(partial(_release, tuple(holders)))

    async def set_bucket(self, name: str, settings: BucketSettings, source: str) -> BucketDef:
        return await self._sqlite._require_writer().submit(
            partial(_set_bucket, name, settings, source, now_ms())
        )

    async def delete_bucket(self, name: str) -> bool:
        return await self._sqlite._require_writer().submit(partial(_delete_bucket, name))

    async def take_tokens(self, requests: Sequence[TakeRequest]) -> list[TakeResult]:
        if not requests:
            return []
        return await self._sqlite._require_writer().submit(
            partial(_take, tuple(requests), now_ms())
        )

    async def pause_keys(self, keys: Sequence[tuple[str, str]], wait_ms: int) -> None:
        if keys:
            await self._sqlite._require_writer().submit(
                partial(_pause, tuple(keys), wait_ms, now_ms())
            )

    async def bucket_levels(self, name: str = "") -> tuple[int, list[BucketLevel]]:
        defs = await self.buckets()
        sql, params = (LEVELS + " WHERE name = ?", (name,)) if name else (LEVELS, ())
        rows = await self._store._query(sql + " ORDER BY name, key", params, list)
        now = now_ms()
        return now, levels_at(defs, rows, now)

    async def purge_cache(
        self, task_type: str = "", key: str = "", expired_before_ms: int = 0
    ) -> int:
        return await self._sqlite._require_writer().submit(
            partial(_purge, task_type, key, expired_before_ms)
        )
