"""The flow-control part of the store contract (`Store.flow`): concurrency-limit
holders, token buckets, the result cache. `StoreContract` inherits it, so every
backend (memory, SQLite, PostgreSQL) runs it."""

from __future__ import annotations

import asyncio
import time

from execplan.flow import rates
from execplan.store import Store
from execplan.store.flow import SERVER, WORKFLOW, CacheEntry, SlotRequest, TakeRequest, Use


def slot(holder: str, key: str = "gpt-4o", max_: int = 2, name: str = "llm") -> SlotRequest:
    return SlotRequest(name, key, max_, holder)


def take(*uses: tuple[str, str, int]) -> TakeRequest:
    return TakeRequest(tuple(Use(n, k, u) for n, k, u in uses))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class FlowContract:
    # -- concurrency limits ---------------------------------------------------------

    async def test_slots_are_granted_up_to_max_per_key(self, store: Store) -> None:
        flow = store.flow
        got = await flow.acquire_slots(
            [slot("e1/a"), slot("e2/a"), slot("e3/a"), slot("e4/a", "x")]
        )
        assert got == [True, True, False, True]
        # A holder that holds its slot is granted again, and takes no second one.
        assert await flow.acquire_slots([slot("e1/a"), slot("e5/a")]) == [True, False]
        levels = {(lv.name, lv.key): (lv.in_use, lv.max) for lv in await flow.limit_levels()}
        assert levels == {("llm", "gpt-4o"): (2, 2), ("llm", "x"): (1, 2)}
        await flow.release_slots(["e1/a", "unknown/z"])
        assert await flow.acquire_slots([slot("e3/a"), slot("e5/a")]) == [True, False]
        assert [h.holder for h in await flow.holders("e3/")] == ["e3/a"]
        assert {h.holder for h in await flow.holders()} == {"e2/a", "e3/a", "e4/a"}

    async def test_each_request_uses_its_own_max(self, store: Store) -> None:
        flow = store.flow
        assert await flow.acquire_slots([slot("e1/a", max_=1), slot("e2/a", max_=3)]) == [
            True,
            True,
        ]
        assert await flow.acquire_slots([slot("e3/a", max_=2)]) == [False]
        assert await flow.acquire_slots([slot("e3/a", max_=3)]) == [True]

    async def test_concurrent_acquisitions_never_exceed_max(self, store: Store) -> None:
        flow = store.flow
        results = await asyncio.gather(
            *[flow.acquire_slots([slot(f"e{i}/a", max_=3)]) for i in range(20)]
        )
        assert sum(r[0] for r in results) == 3

    # -- token buckets --------------------------------------------------------------

    async def test_bucket_settings_server_wins_over_workflow(self, store: Store) -> None:
        flow = store.flow
        d = await flow.set_bucket("rpm", rates.settings(60, 60_000, 10), WORKFLOW)
        assert (d.settings.units, d.settings.burst, d.source) == (60, 10, WORKFLOW)
        d = await flow.set_bucket("rpm", rates.settings(30, 60_000), SERVER)
        assert (d.settings.units, d.settings.burst, d.source) == (30, 30, SERVER)
        d = await flow.set_bucket("rpm", rates.settings(99, 1000), WORKFLOW)
        assert (d.settings.units, d.source) == (30, SERVER)
        assert (await flow.buckets())["rpm"].settings.units == 30
        assert await flow.delete_bucket("rpm")
        assert not await flow.delete_bucket("rpm")
        assert await flow.buckets() == {}

    async def test_a_new_key_starts_full_and_empties(self, store: Store) -> None:
        flow = store.flow
        await flow.set_bucket("rpm", rates.settings(2, 60_000, 3), SERVER)
        results = await flow.take_tokens([take(("rpm", "a", 1))] * 4 + [take(("rpm", "b", 3))])
        assert [r.taken for r in results] == [True, True, True, False, True]
        blocked = results[3]
        assert blocked.blocked_by == "rpm" and blocked.blocked_key == "a"
        assert 25_000 <= blocked.wait_ms <= 30_001  # one unit refills every 30 s
        _, levels = await flow.bucket_levels("rpm")
        assert {lv.key: round(lv.level.tokens) for lv in levels} == {"a": 0, "b": 0}

    async def test_requests_take_from_every_bucket_or_none(self, store: Store) -> None:
        flow = store.flow
        await flow.set_bucket("rpm", rates.settings(10, 60_000), SERVER)
        await flow.set_bucket("tpm", rates.settings(100, 60_000), SERVER)
        results = await flow.take_tokens(
            [take(("rpm", "m", 1), ("tpm", "m", 90)), take(("rpm", "m", 1), ("tpm", "m", 20))]
        )
        assert [r.taken for r in results] == [True, False]
        assert results[1].blocked_by == "tpm"
        _, levels = await flow.bucket_levels()
        tokens = {lv.name: lv.level.tokens for lv in levels}
        assert round(tokens["rpm"]) == 9  # the refused request took nothing from rpm
        assert round(tokens["tpm"]) == 10

    async def test_an_undefined_bucket_takes_nothing(self, store: Store) -> None:
        flow = store.flow
        await flow.set_bucket("rpm", rates.settings(10, 1000), SERVER)
        (r,) = await flow.take_tokens([take(("rpm", "", 1), ("nope", "", 1))])
        assert not r.taken and r.undefined and r.blocked_by == "nope"
        _, levels = await flow.bucket_levels()
        assert all(lv.level.tokens == 10 for lv in levels)

    async def test_units_above_burst_never_fit(self, store: Store) -> None:
        flow = store.flow
        await flow.set_bucket("rpm", rates.settings(10, 1000), SERVER)
        (r,) = await flow.take_tokens([take(("rpm", "", 11))])
        assert not r.taken and not r.undefined and r.blocked_by == "rpm"

    async def test_a_paused_key_waits_then_restarts_empty(self, store: Store) -> None:
        flow = store.flow
        await flow.set_bucket("rpm", rates.settings(1000, 1000), SERVER)
        await flow.pause_keys([("rpm", "m"), ("nope", "m")], 300)
        (r,) = await flow.take_tokens([take(("rpm", "m", 1))])
        assert not r.taken and 250 <= r.wait_ms <= 302
        (other,) = await flow.take_tokens([take(("rpm", "other", 1))])
        assert other.taken  # only the paused key waits
        await asyncio.sleep(0.35)
        (r,) = await flow.take_tokens([take(("rpm", "m", 1))])
        assert r.taken

    async def test_a_changed_rate_applies_at_once(self, store: Store) -> None:
        flow = store.flow
        await flow.set_bucket("rpm", rates.settings(1, 60_000, 1), SERVER)
        assert [r.taken for r in await flow.take_tokens([take(("rpm", "", 1))] * 2)] == [
            True,
            False,
        ]
        await flow.set_bucket("rpm", rates.settings(1000, 1000, 1000), SERVER)
        await asyncio.sleep(0.05)
        assert (await flow.take_tokens([take(("rpm", "", 20))]))[0].taken

    # -- result cache ---------------------------------------------------------------

    async def test_cache_entries_expire_and_purge(self, store: Store) -> None:
        flow = store.flow
        now = now_ms()

        def entry(task_type: str, key: str, expires: int) -> CacheEntry:
            return CacheEntry(task_type, key, b"\x01out", now, expires, "e1", "a")

        await flow.put_cache(entry("t", "k1", 0))
        await flow.put_cache(entry("t", "k2", now + 60_000))
        await flow.put_cache(entry("t", "old", now - 1))
        await flow.put_cache(entry("u", "k1", 0))
        hit = await flow.get_cache("t", "k1", now)
        assert hit is not None and hit.payload == b"\x01out" and hit.execution_id == "e1"
        assert await flow.get_cache("t", "old", now) is None
        assert await flow.get_cache("t", "k2", now + 60_000) is None
        await flow.put_cache(CacheEntry("t", "k1", b"new", now, 0, "e2", "b"))
        hit = await flow.get_cache("t", "k1", now)
        assert hit is not None and (hit.payload, hit.execution_id) == (b"new", "e2")
        assert await flow.purge_cache(expired_before_ms=now) == 1
        assert await flow.purge_cache("t", "k2") == 1
        assert await flow.purge_cache("t") == 1
        assert await flow.get_cache("u", "k1", now) is not None
        assert await flow.purge_cache() == 1
