"""MemoryFlowStore: the flow-control port in dicts (the memory store's `flow`).

Every method runs without awaiting between its reads and writes, so on one event
loop each call is atomic, as a transaction is in the SQL backends.
"""

from __future__ import annotations

from collections.abc import Sequence

from execplan.flow import buckets
from execplan.flow.rates import BucketSettings

from .flow import (
    SERVER,
    BucketDef,
    BucketLevel,
    CacheEntry,
    FlowStore,
    LimitLevel,
    SlotRequest,
    TakeRequest,
    TakeResult,
    grant,
    held_tag,
    now_ms,
    pause_all,
    take_all,
)


class MemoryFlowStore(FlowStore):
    def __init__(self) -> None:
        self._holders: dict[str, SlotRequest] = {}  # held_tag -> request
        self._defs: dict[str, BucketDef] = {}
        self._levels: dict[tuple[str, str], buckets.Level | None] = {}
        self._cache: dict[tuple[str, str], CacheEntry] = {}

    async def acquire_slots(self, requests: Sequence[SlotRequest]) -> list[bool]:
        counts: dict[tuple[str, str], int] = {}
        for h in self._holders.values():
            counts[(h.name, h.key)] = counts.get((h.name, h.key), 0) + 1
        granted, new = grant(requests, counts, set(self._holders))
        for r in new:
            self._holders[held_tag(r.name, r.key, r.holder)] = r
        return granted

    async def release_slots(self, holders: Sequence[str]) -> None:
        gone = set(holders)
        for tag, r in list(self._holders.items()):
            if r.holder in gone:
                del self._holders[tag]

    async def holders(self, prefix: str = "") -> list[SlotRequest]:
        return sorted(
            (r for r in self._holders.values() if r.holder.startswith(prefix)),
            key=lambda r: (r.name, r.key, r.holder),
        )

    async def limit_levels(self) -> list[LimitLevel]:
        out: dict[tuple[str, str], LimitLevel] = {}
        for r in self._holders.values():
            k = (r.name, r.key)
            old = out.get(k)
            out[k] = LimitLevel(
                r.name, r.key, (old.in_use if old else 0) + 1, max(r.max, old.max if old else 0)
            )
        return [out[k] for k in sorted(out)]

    async def set_bucket(self, name: str, settings: BucketSettings, source: str) -> BucketDef:
        old = self._defs.get(name)
        if old is not None and old.source == SERVER and source != SERVER:
            return old
        if old is not None and old.settings == settings and old.source == source:
            return old
        d = self._defs[name] = BucketDef(name, settings, source, now_ms())
        return d

    async def delete_bucket(self, name: str) -> bool:
        for k in [k for k in self._levels if k[0] == name]:
            del self._levels[k]
        return self._defs.pop(name, None) is not None

    async def buckets(self) -> dict[str, BucketDef]:
        return dict(self._defs)

    async def take_tokens(self, requests: Sequence[TakeRequest]) -> list[TakeResult]:
        results, _ = take_all(requests, self._defs, self._levels, now_ms())
        return results

    async def pause_keys(self, keys: Sequence[tuple[str, str]], wait_ms: int) -> None:
        pause_all(keys, self._defs, self._levels, wait_ms, now_ms())

    async def bucket_levels(self, name: str = "") -> tuple[int, list[BucketLevel]]:
        now = now_ms()
        out = []
        for (bucket, key), level in sorted(self._levels.items()):
            d = self._defs.get(bucket)
            if level is None or d is None or (name and bucket != name):
                continue
            out.append(BucketLevel(bucket, key, buckets.refill(level, d.settings, now)))
        return now, out

    async def get_cache(self, task_type: str, key: str, now_ms: int) -> CacheEntry | None:
        e = self._cache.get((task_type, key))
        if e is None or (e.expires_ms and e.expires_ms <= now_ms):
            return None
        return e

    async def put_cache(self, entry: CacheEntry) -> None:
        self._cache[(entry.task_type, entry.key)] = entry

    async def purge_cache(
        self, task_type: str = "", key: str = "", expired_before_ms: int = 0
    ) -> int:
        doomed = [
            k
            for k, e in self._cache.items()
            if (not task_type or k[0] == task_type)
            and (not key or k[1] == key)
            and (not expired_before_ms or (e.expires_ms and e.expires_ms < expired_before_ms))
        ]
        for k in doomed:
            del self._cache[k]
        return len(doomed)
