"""PostgresFlowStore: flow-control state shared by every replica on one database.

Each write is one transaction on a pooled connection (not the event log's group
commit: these take row locks and must not hold up appends):

- a concurrency limit's key has a row in `limit_keys` that every acquisition locks
  (`SELECT ... FOR UPDATE`, keys in sorted order so two replicas never deadlock);
  holders are counted and inserted under that lock, so two replicas granting the
  same key at once are serialized and `max` holds across them;
- a bucket key's level row is locked the same way, refilled to the database's clock
  (`clock_timestamp()`, one clock for every replica), taken from, and written back.

A batch of requests (one scheduling round) is one transaction: one round trip per
round, not per task.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
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
    pause_all,
    take_all,
)
from ..flow_sql import BUCKETS, LEVELS, SqlFlowReads, levels_at, purge_sql, to_def, to_level
from ..sql import numbered

if TYPE_CHECKING:
    from .store import PostgresStore

T = TypeVar("T")
Levels = dict[tuple[str, str], buckets.Level | None]
NOW_MS = "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
KEYS = "(name, key) IN (SELECT * FROM unnest($1::text[], $2::text[]))"


def _columns(keys: Sequence[tuple[str, str]]) -> tuple[list[str], list[str]]:
    return [k[0] for k in keys], [k[1] for k in keys]


async def _now(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(NOW_MS))


async def _acquire(requests: Sequence[SlotRequest], conn: asyncpg.Connection) -> list[bool]:
    keys = sorted({(r.name, r.key) for r in requests})
    names, values = _columns(keys)
    await conn.execute(
        "INSERT INTO limit_keys (name, key) SELECT * FROM unnest($1::text[], $2::text[])"
        " ORDER BY 1, 2 ON CONFLICT DO NOTHING",
        names,
        values,
    )
    await conn.execute(
        f"SELECT 1 FROM limit_keys WHERE {KEYS} ORDER BY name, key FOR UPDATE", names, values
    )
    rows = await conn.fetch(
        f"SELECT name, key, holder FROM limit_holders WHERE {KEYS}", names, values
    )
    counts: dict[tuple[str, str], int] = {}
    held: set[str] = set()
    for r in rows:
        counts[(r[0], r[1])] = counts.get((r[0], r[1]), 0) + 1
        held.add(held_tag(r[0], r[1], r[2]))
    granted, new = grant(requests, counts, held)
    if new:
        now = await _now(conn)
        await conn.executemany(
            "INSERT INTO limit_holders (name, key, holder, max, acquired_ms)"
            " VALUES ($1, $2, $3, $4, $5)",
            [(r.name, r.key, r.holder, r.max, now) for r in new],
        )
    return granted


async def _load(
    conn: asyncpg.Connection, keys: set[tuple[str, str]], now: int
) -> tuple[dict[str, BucketDef], Levels]:
    names = sorted({k[0] for k in keys})
    defs = {
        r[0]: to_def(r)
        for r in await conn.fetch(
            BUCKETS.replace("ORDER BY", "WHERE name = ANY($1::text[]) ORDER BY"), names
        )
    }
    defined = sorted(k for k in keys if k[0] in defs)
    levels: Levels = dict.fromkeys(keys)
    if not defined:
        return defs, levels
    knames, kvalues = _columns(defined)
    # New keys start full; inserting them first gives every key a row to lock.
    await conn.executemany(
        "INSERT INTO bucket_levels (name, key, tokens, updated_ms, paused_until_ms)"
        " VALUES ($1, $2, $3, $4, 0) ON CONFLICT DO NOTHING",
        [(n, k, float(defs[n].settings.burst), now) for n, k in defined],
    )
    for r in await conn.fetch(
        f"{LEVELS} WHERE {KEYS} ORDER BY name, key FOR UPDATE", knames, kvalues
    ):
        levels[(r[0], r[1])] = to_level(r)
    return defs, levels


async def _save(conn: asyncpg.Connection, levels: Levels, changed: set[tuple[str, str]]) -> None:
    rows = []
    for k in sorted(changed):
        level = levels[k]
        assert level is not None
        rows.append((k[0], k[1], level.tokens, level.updated_ms, level.paused_until_ms))
    if rows:
        await conn.executemany(
            "UPDATE bucket_levels SET tokens = $3, updated_ms = $4, paused_until_ms = $5"
            " WHERE name = $1 AND key = $2",
            rows,
        )


async def _take(requests: Sequence[TakeRequest], conn: asyncpg.Connection) -> list[TakeResult]:
    keys = {(u.name, u.key) for r in requests for u in r.uses}
    now = await _now(conn)
    defs, levels = await _load(conn, keys, now)
    now = await _now(conn)  # after the locks: the refill counts the time waited
    results, changed = take_all(requests, defs, levels, now)
    await _save(conn, levels, changed)
    return results


async def _pause(keys: Sequence[tuple[str, str]], wait_ms: int, conn: asyncpg.Connection) -> None:
    now = await _now(conn)
    defs, levels = await _load(conn, set(keys), now)
    await _save(conn, levels, pause_all(keys, defs, levels, wait_ms, await _now(conn)))


async def _set_bucket(
    name: str, s: BucketSettings, source: str, conn: asyncpg.Connection
) -> BucketDef:
    row = await conn.fetchrow(BUCKETS.replace("ORDER BY name", "WHERE name = $1 FOR UPDATE"), name)
    if row is not None:
        old = to_def(row)
        if (old.source == SERVER and source != SERVER) or (
            old.settings == s and old.source == source
        ):
            return old
    now = await _now(conn)
    await conn.execute(
        "INSERT INTO buckets (name, units, period_ms, burst, source, updated_ms)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO UPDATE SET"
        " units = excluded.units, period_ms = excluded.period_ms, burst = excluded.burst,"
        " source = excluded.source, updated_ms = excluded.updated_ms",
        name,
        s.units,
        s.period_ms,
        s.burst,
        source,
        now,
    )
    return BucketDef(name, s, source, now)


async def _delete_bucket(name: str, conn: asyncpg.Connection) -> bool:
    await conn.execute("DELETE FROM bucket_levels WHERE name = $1", name)
    status = await conn.execute("DELETE FROM buckets WHERE name = $1", name)
    return str(status) != "DELETE 0"


class PostgresFlowStore(SqlFlowReads):
    def __init__(self, store: PostgresStore) -> None:
        super().__init__(store)
        self._pg = store

    async def _transaction(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async def run(pool: asyncpg.Pool) -> T:
            async with pool.acquire() as conn, conn.transaction():
                # What this commits is acted on (a dispatch, a 429 pause): durable.
                await conn.execute("SET LOCAL synchronous_commit = on")
                return await fn(conn)

        result: T = await self._pg._read(run)
        return result

    async def acquire_slots(self, requests: Sequence[SlotRequest]) -> list[bool]:
        if not requests:
            return []
        return await self._transaction(lambda c: _acquire(requests, c))

    async def release_slots(self, holders: Sequence[str]) -> None:
        if not holders:
            return

        async def run(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "DELETE FROM limit_holders WHERE holder = ANY($1::text[])", list(holders)
            )

        await self._transaction(run)

    async def set_bucket(self, name: str, settings: BucketSettings, source: str) -> BucketDef:
        return await self._transaction(lambda c: _set_bucket(name, settings, source, c))

    async def delete_bucket(self, name: str) -> bool:
        return await self._transaction(lambda c: _delete_bucket(name, c))

    async def take_tokens(self, requests: Sequence[TakeRequest]) -> list[TakeResult]:
        if not requests:
            return []
        return await self._transaction(lambda c: _take(requests, c))

    async def pause_keys(self, keys: Sequence[tuple[str, str]], wait_ms: int) -> None:
        if keys:
            await self._transaction(lambda c: _pause(keys, wait_ms, c))

    async def bucket_levels(self, name: str = "") -> tuple[int, list[BucketLevel]]:
        defs = await self.buckets()

        async def run(pool: asyncpg.Pool) -> tuple[int, list[Any]]:
            async with pool.acquire() as conn:
                sql = LEVELS + (" WHERE name = $1" if name else "") + " ORDER BY name, key"
                rows = await conn.fetch(sql, *((name,) if name else ()))
                return await _now(conn), list(rows)

        now, rows = await self._pg._read(run)
        return now, levels_at(defs, rows, now)

    async def purge_cache(
        self, task_type: str = "", key: str = "", expired_before_ms: int = 0
    ) -> int:
        sql, params = purge_sql(task_type, key, expired_before_ms)

        async def run(conn: asyncpg.Connection) -> int:
            status = await conn.execute(numbered(sql), *params)
            return int(str(status).rsplit(" ", 1)[-1])

        return await self._transaction(run)
