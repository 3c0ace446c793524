"""What the SQL backends' flow-control stores share: the schema's tables and the reads,
written once with `?` placeholders over the owning store's `_query` (PostgreSQL
numbers them). The writes differ (SQLite: one op on the single writer thread;
PostgreSQL: a transaction with row locks) and live in each backend's `flow.py`.

Tables (the same columns in both schemas):

    limit_holders  (name, key, holder, max, acquired_ms)   one row per held slot
    buckets        (name, units, period_ms, burst, source, updated_ms)
    bucket_levels  (name, key, tokens, updated_ms, paused_until_ms)
    cache_entries  (task_type, key, payload, stored_ms, expires_ms, execution_id, task_id)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from execplan.flow import buckets
from execplan.flow.rates import BucketSettings

from .flow import BucketDef, BucketLevel, CacheEntry, FlowStore, LimitLevel, SlotRequest

if TYPE_CHECKING:
    from .sql import SqlStore

Row = Any

HOLDERS = (
    "SELECT name, key, max, holder FROM limit_holders WHERE holder >= ? AND holder < ?"
    " ORDER BY name, key, holder"
)
ALL_HOLDERS = "SELECT name, key, max, holder FROM limit_holders ORDER BY name, key, holder"
LIMIT_LEVELS = (
    "SELECT name, key, count(*), max(max) FROM limit_holders GROUP BY name, key ORDER BY name, key"
)
BUCKETS = "SELECT name, units, period_ms, burst, source, updated_ms FROM buckets ORDER BY name"
LEVELS = "SELECT name, key, tokens, updated_ms, paused_until_ms FROM bucket_levels"
GET_CACHE = (
    "SELECT task_type, key, payload, stored_ms, expires_ms, execution_id, task_id"
    " FROM cache_entries WHERE task_type = ? AND key = ? AND (expires_ms = 0 OR expires_ms > ?)"
)
PUT_CACHE = (
    "INSERT INTO cache_entries"
    " (task_type, key, payload, stored_ms, expires_ms, execution_id, task_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (task_type, key) DO UPDATE SET payload = excluded.payload,"
    " stored_ms = excluded.stored_ms, expires_ms = excluded.expires_ms,"
    " execution_id = excluded.execution_id, task_id = excluded.task_id"
)


def purge_sql(task_type: str, key: str, expired_before_ms: int) -> tuple[str, list[object]]:
    where: list[str] = []
    params: list[object] = []
    if task_type:
        where.append("task_type = ?")
        params.append(task_type)
    if key:
        where.append("key = ?")
        params.append(key)
    if expired_before_ms:
        where.append("expires_ms > 0 AND expires_ms < ?")
        params.append(expired_before_ms)
    sql = "DELETE FROM cache_entries" + (" WHERE " + " AND ".join(where) if where else "")
    return sql, params


def to_def(row: Row) -> BucketDef:
    settings = BucketSettings(int(row[1]), int(row[2]), int(row[3]))
    return BucketDef(row[0], settings, row[4], int(row[5]))


def to_level(row: Row) -> buckets.Level:
    return buckets.Level(float(row[2]), int(row[3]), int(row[4]))


def to_cache(row: Row) -> CacheEntry:
    return CacheEntry(row[0], row[1], bytes(row[2]), int(row[3]), int(row[4]), row[5], row[6])


def levels_at(defs: dict[str, BucketDef], rows: Any, now: int) -> list[BucketLevel]:
    """Each level row of a defined bucket, refilled to `now`."""
    out = []
    for r in rows:
        d = defs.get(r[0])
        if d is not None:
            out.append(BucketLevel(r[0], r[1], buckets.refill(to_level(r), d.settings, now)))
    return out


def _next_prefix(prefix: str) -> str:
    """The smallest string above every string starting with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class SqlFlowReads(FlowStore):
    """The reads every SQL backend runs alike (and the cache write, one upsert)."""

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    async def holders(self, prefix: str = "") -> list[SlotRequest]:
        def convert(rows: Any) -> list[SlotRequest]:
            return [SlotRequest(r[0], r[1], int(r[2]), r[3]) for r in rows]

        if not prefix:
            return await self._store._query(ALL_HOLDERS, (), convert)
        return await self._store._query(HOLDERS, (prefix, _next_prefix(prefix)), convert)

    async def limit_levels(self) -> list[LimitLevel]:
        def convert(rows: Any) -> list[LimitLevel]:
            return [LimitLevel(r[0], r[1], int(r[2]), int(r[3])) for r in rows]

        return await self._store._query(LIMIT_LEVELS, (), convert)

    async def buckets(self) -> dict[str, BucketDef]:
        def convert(rows: Any) -> dict[str, BucketDef]:
            return {r[0]: to_def(r) for r in rows}

        return await self._store._query(BUCKETS, (), convert)

    async def get_cache(self, task_type: str, key: str, now_ms: int) -> CacheEntry | None:
        def convert(rows: Any) -> CacheEntry | None:
            return to_cache(rows[0]) if rows else None

        return await self._store._query(GET_CACHE, (task_type, key, now_ms), convert)

    async def put_cache(self, entry: CacheEntry) -> None:
        e = entry
        params = (
            e.task_type,
            e.key,
            e.payload,
            e.stored_ms,
            e.expires_ms,
            e.execution_id,
            e.task_id,
        )
        await self._store._write(PUT_CACHE, params)
