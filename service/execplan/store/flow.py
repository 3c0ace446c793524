"""The flow-control port: durable state of concurrency limits, token buckets and the
task result cache, shared by every executor replica on one database.

    flow = store.flow
    granted = await flow.acquire_slots([SlotRequest("llm.chat", "gpt-4o", 4, "ex-1/ask")])
    await flow.release_slots(["ex-1/ask"])
    await flow.set_bucket("openai-rpm", rates.settings(60, 60_000, 10), SERVER)
    results = await flow.take_tokens([TakeRequest((Use("openai-rpm", "gpt-4o", 1),))])
    await flow.pause_keys([("openai-rpm", "gpt-4o")], wait_ms=30_000)
    await flow.put_cache(CacheEntry(...)); await flow.get_cache("llm.chat", key)

Semantics every backend gives (`tests/store/flow_contract.py` is the judge):

- Concurrency: a holder (`"<execution>/<task>"`) holds at most one slot of a
  (name, key); `acquire_slots` grants a batch in order, each only while the key's
  holders are below that request's `max`, and a holder that already holds its slot
  is granted again (idempotent, so a retry after a crash cannot take two). Holders
  are durable: a restart or another replica sees them until `release_slots`.
- Token buckets: `take_tokens` handles a batch in order; a request takes from every
  bucket it names or from none (all-or-nothing), so a task never spends one quota
  and then waits on another. A bucket with no settings is `undefined`: nothing is
  taken and the caller waits for someone to define it. Settings come from the server
  (`SERVER`, `execplan limits set`) or a workflow (`WORKFLOW`); a workflow never
  overwrites the server's. Levels use the database's clock where there is one
  (PostgreSQL), so replicas agree on refills; `wait_ms` is relative for that reason.
- Cache: one entry per (task type, key); an expired entry is never returned.

The arithmetic lives here once (`grant`, `take_all`, `execplan.flow.buckets`); each
backend only loads the rows a batch needs (locked, in PostgreSQL), applies it and
writes back what changed, in one transaction.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from execplan.flow import buckets
from execplan.flow.rates import BucketSettings

SERVER = "SERVER"
WORKFLOW = "WORKFLOW"


def now_ms() -> int:
    """The wall clock of a single-process backend (memory, SQLite), in ms."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class SlotRequest:
    name: str
    key: str
    max: int
    holder: str  # "<execution_id>/<task_id>"


@dataclass(frozen=True, slots=True)
class Use:
    name: str
    key: str
    units: int


@dataclass(frozen=True, slots=True)
class TakeRequest:
    uses: tuple[Use, ...]


@dataclass(frozen=True, slots=True)
class TakeResult:
    taken: bool
    # How long until the request could be served (0 when taken or unknown).
    wait_ms: int = 0
    # The bucket that held it back ("" when taken).
    blocked_by: str = ""
    blocked_key: str = ""
    # The blocking bucket has no settings (declared nowhere yet).
    undefined: bool = False


@dataclass(frozen=True, slots=True)
class BucketDef:
    name: str
    settings: BucketSettings
    source: str  # SERVER | WORKFLOW
    updated_ms: int


@dataclass(frozen=True, slots=True)
class BucketLevel:
    name: str
    key: str
    level: buckets.Level


@dataclass(frozen=True, slots=True)
class LimitLevel:
    name: str
    key: str
    in_use: int
    max: int


@dataclass(frozen=True, slots=True)
class CacheEntry:
    task_type: str
    key: str
    payload: bytes  # a serialized google.protobuf.Value (opaque here)
    stored_ms: int
    expires_ms: int  # 0: never
    execution_id: str
    task_id: str


def grant(
    requests: Sequence[SlotRequest], counts: Mapping[tuple[str, str], int], held: set[str]
) -> tuple[list[bool], list[SlotRequest]]:
    """Which requests get a slot, in order, and the new holders to insert.

    `counts` are the holders per (name, key) now; `held` the holders (of these
    keys) that already hold their slot."""
    counts = dict(counts)
    out: list[bool] = []
    new: list[SlotRequest] = []
    for r in requests:
        tag = f"{r.name}\x1f{r.key}\x1f{r.holder}"
        if tag in held:
            out.append(True)
            continue
        k = (r.name, r.key)
        if counts.get(k, 0) < r.max:
            counts[k] = counts.get(k, 0) + 1
            held.add(tag)
            new.append(r)
            out.append(True)
        else:
            out.append(False)
    return out, new


def held_tag(name: str, key: str, holder: str) -> str:
    return f"{name}\x1f{key}\x1f{holder}"


def take_all(
    requests: Sequence[TakeRequest],
    defs: Mapping[str, BucketDef],
    levels: dict[tuple[str, str], buckets.Level | None],
    now_ms: int,
) -> tuple[list[TakeResult], set[tuple[str, str]]]:
    """Serve `requests` in order against `levels` (updated in place); returns the
    results and the (name, key) levels that changed."""
    changed: set[tuple[str, str]] = set()
    results: list[TakeResult] = []
    for req in requests:
        blocked: TakeResult | None = None
        staged: dict[tuple[str, str], buckets.Level] = {}
        for use in req.uses:
            d = defs.get(use.name)
            if d is None:
                blocked = TakeResult(False, 0, use.name, use.key, undefined=True)
                break
            k = (use.name, use.key)
            current = staged.get(k, levels.get(k))
            if use.units > d.settings.burst:
                blocked = TakeResult(False, 0, use.name, use.key)  # never fits: wait for a change
                break
            t = buckets.take(current, d.settings, use.units, now_ms)
            if not t.taken:
                staged[k] = t.level
                blocked = TakeResult(False, max(t.ready_at_ms - now_ms, 1), use.name, use.key)
                break
            staged[k] = t.level
        if blocked is None:
            for k, level in staged.items():
                levels[k] = level
                changed.add(k)
            results.append(TakeResult(True))
        else:
            results.append(blocked)
    return results, changed


def pause_all(
    keys: Iterable[tuple[str, str]],
    defs: Mapping[str, BucketDef],
    levels: dict[tuple[str, str], buckets.Level | None],
    wait_ms: int,
    now_ms: int,
) -> set[tuple[str, str]]:
    changed: set[tuple[str, str]] = set()
    for k in keys:
        d = defs.get(k[0])
        if d is None:
            continue
        levels[k] = buckets.pause(levels.get(k), d.settings, now_ms + wait_ms, now_ms)
        changed.add(k)
    return changed


class FlowStore(abc.ABC):
    """Durable flow-control state (see the module docstring). Coroutine-safe."""

    # -- concurrency limits -----------------------------------------------------------

    @abc.abstractmethod
    async def acquire_slots(self, requests: Sequence[SlotRequest]) -> list[bool]: ...

    @abc.abstractmethod
    async def release_slots(self, holders: Sequence[str]) -> None:
        """Release every slot these holders hold (unknown holders are ignored)."""

    @abc.abstractmethod
    async def holders(self, prefix: str = "") -> list[SlotRequest]:
        """Every held slot whose holder starts with `prefix` (`"<execution_id>/"`)."""

    @abc.abstractmethod
    async def limit_levels(self) -> list[LimitLevel]:
        """(name, key, holders, highest max) of every key with a holder."""

    # -- token buckets ----------------------------------------------------------------

    @abc.abstractmethod
    async def set_bucket(self, name: str, settings: BucketSettings, source: str) -> BucketDef:
        """Define or change a bucket. A WORKFLOW definition never replaces a SERVER
        one (the stored definition is returned either way)."""

    @abc.abstractmethod
    async def delete_bucket(self, name: str) -> bool:
        """Remove a bucket's definition and levels; False when it had none."""

    @abc.abstractmethod
    async def buckets(self) -> dict[str, BucketDef]: ...

    @abc.abstractmethod
    async def take_tokens(self, requests: Sequence[TakeRequest]) -> list[TakeResult]: ...

    @abc.abstractmethod
    async def pause_keys(self, keys: Sequence[tuple[str, str]], wait_ms: int) -> None:
        """Hold these (bucket, key)s for `wait_ms` and restart them empty then."""

    @abc.abstractmethod
    async def bucket_levels(self, name: str = "") -> tuple[int, list[BucketLevel]]:
        """(now in the store's clock, the levels of every used key), refilled to now."""

    # -- result cache -----------------------------------------------------------------

    @abc.abstractmethod
    async def get_cache(self, task_type: str, key: str, now_ms: int) -> CacheEntry | None: ...

    @abc.abstractmethod
    async def put_cache(self, entry: CacheEntry) -> None:
        """Insert or replace the entry of (task_type, key)."""

    @abc.abstractmethod
    async def purge_cache(
        self, task_type: str = "", key: str = "", expired_before_ms: int = 0
    ) -> int:
        """Remove entries (all; of a type; one key; or only those expired before the
        given time when `expired_before_ms` > 0); returns how many."""
