"""The flow-control RPCs of ExecutorService: ListLimits, SetRateLimit,
DeleteRateLimit and PurgeCache, over the store's flow-control state.

Levels come from the store (shared by every replica); the tasks waiting for them are
the ones this replica holds back (`waiting`, from the executor).
"""

from __future__ import annotations

from collections.abc import Sequence

from execplan.errors import FieldViolation, InvalidArgument
from execplan.flow import rates
from execplan.store.flow import SERVER, WORKFLOW, BucketDef, FlowStore
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import executor_service_pb2 as pb
from google.protobuf import duration_pb2

MAX_WAITING = 1000
_SOURCE = {SERVER: pb.RATE_LIMIT_SOURCE_SERVER, WORKFLOW: pb.RATE_LIMIT_SOURCE_WORKFLOW}


def _duration(ms: int) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromMilliseconds(ms)
    return d


def _bucket(d: BucketDef) -> pb.RateLimitStatus:
    s = d.settings
    return pb.RateLimitStatus(
        name=d.name,
        source=_SOURCE.get(d.source, pb.RATE_LIMIT_SOURCE_UNSPECIFIED),
        units=s.units,
        period=_duration(s.period_ms),
        burst=s.burst,
        defined=True,
    )


async def list_limits(
    flow: FlowStore, request: pb.ListLimitsRequest, waiting: Sequence[pb.WaitingTask] = ()
) -> pb.ListLimitsResponse:
    name = request.name
    waiting = [w for w in waiting if not name or w.waiting.name == name]
    waits: dict[tuple[int, str, str], int] = {}
    for w in waiting:
        k = (w.waiting.kind, w.waiting.name, w.waiting.key)
        waits[k] = waits.get(k, 0) + 1
    out = pb.ListLimitsResponse()
    limits = {
        (lv.name, lv.key): out.concurrency_limits.add(
            name=lv.name,
            key=lv.key,
            in_use=lv.in_use,
            max=lv.max,
            waiting=waits.get((ex.WAIT_KIND_CONCURRENCY_LIMIT, lv.name, lv.key), 0),
        )
        for lv in await flow.limit_levels()
        if not name or lv.name == name
    }
    for (kind, lname, lkey), n in sorted(waits.items()):
        if kind == ex.WAIT_KIND_CONCURRENCY_LIMIT and (lname, lkey) not in limits:
            out.concurrency_limits.add(name=lname, key=lkey, waiting=n)  # none held yet
    defs = await flow.buckets()
    now, levels = await flow.bucket_levels(name)
    statuses = {n: _bucket(d) for n, d in sorted(defs.items()) if not name or n == name}
    for (kind, bname, _), _n in sorted(waits.items()):
        if kind == ex.WAIT_KIND_RATE_LIMIT and bname not in statuses:
            statuses[bname] = pb.RateLimitStatus(name=bname, defined=False)
    keys_seen: set[tuple[str, str]] = set()
    for lv in levels:
        status = statuses.get(lv.name)
        if status is None:
            continue
        entry = status.keys.add(
            key=lv.key,
            tokens=lv.level.tokens,
            waiting=waits.get((ex.WAIT_KIND_RATE_LIMIT, lv.name, lv.key), 0),
        )
        if lv.level.paused_until_ms > now:
            entry.paused_until.FromMilliseconds(lv.level.paused_until_ms)
        keys_seen.add((lv.name, lv.key))
    for (kind, bname, bkey), n in sorted(waits.items()):
        if kind == ex.WAIT_KIND_RATE_LIMIT and (bname, bkey) not in keys_seen:
            statuses[bname].keys.add(key=bkey, waiting=n)
    out.rate_limits.extend(statuses[n] for n in sorted(statuses))
    out.waiting.extend(waiting[:MAX_WAITING])
    return out


def _settings(request: pb.SetRateLimitRequest) -> rates.BucketSettings:
    violations = []
    problem = rates.check_name(request.name)
    if problem is not None:
        violations.append(FieldViolation("name", problem))
    if not 1 <= request.units <= rates.MAX_UNITS:
        violations.append(FieldViolation("units", f"must be within 1..{rates.MAX_UNITS:,}"))
    period_ms = request.period.ToMilliseconds()
    if not rates.MIN_PERIOD_MS <= period_ms <= rates.MAX_PERIOD_MS or request.period.nanos < 0:
        violations.append(FieldViolation("period", "must be within 1ms..1d"))
    if not 0 <= request.burst <= rates.MAX_UNITS:
        violations.append(FieldViolation("burst", f"must be within 0..{rates.MAX_UNITS:,}"))
    if violations:
        raise InvalidArgument("invalid rate limit", violations)
    return rates.settings(request.units, period_ms, request.burst)


async def set_rate_limit(
    flow: FlowStore, request: pb.SetRateLimitRequest
) -> pb.SetRateLimitResponse:
    stored = await flow.set_bucket(request.name, _settings(request), SERVER)
    return pb.SetRateLimitResponse(rate_limit=_bucket(stored))


async def delete_rate_limit(
    flow: FlowStore, request: pb.DeleteRateLimitRequest
) -> pb.DeleteRateLimitResponse:
    problem = rates.check_name(request.name)
    if problem is not None:
        raise InvalidArgument("invalid rate limit name", [FieldViolation("name", problem)])
    return pb.DeleteRateLimitResponse(deleted=await flow.delete_bucket(request.name))


async def purge_cache(flow: FlowStore, request: pb.PurgeCacheRequest) -> pb.PurgeCacheResponse:
    if request.key and not request.task_type:
        raise InvalidArgument(
            "a cache key belongs to a task type",
            [FieldViolation("task_type", "required with key")],
        )
    return pb.PurgeCacheResponse(purged=await flow.purge_cache(request.task_type, request.key))
