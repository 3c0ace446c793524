"""Resolve policies: task setting, else `defaults`, else the built-in default.

Merging is field by field (a task's `retry: {max_attempts: 5}` keeps the defaults'
intervals). Built-in defaults, chosen to match what Temporal users expect:

- retry: max_attempts 3, initial_interval 1s, backoff_coefficient 2.0,
  max_interval = 100 x initial_interval capped at 5m (never below initial_interval),
  jitter 0.2, no non-retryable errors;
- timeouts: 0 = no limit;
- circuit breaker (only when the task or `defaults` define one): failure_threshold 5,
  open_for 30s, half_open_max_calls 1, failure_rate_threshold 0 (off), window 0
  (60s when a rate threshold is set), on_open PARK;
- fallback/compensation retry and timeouts start from the owning task's resolved
  policies, overridden field by field by their own;
- placement labels and custom resource counters merge key by key (task wins);
  environment, cpu, memory, gpu: task else defaults; isolate: task or defaults;
  secrets: the task's, sorted and deduplicated.
"""

from __future__ import annotations

from typing import TypeVar

from execplan.planner import model
from execplan.planner.plan import (
    ResolvedCircuitBreaker,
    ResolvedRetryPolicy,
    ResolvedTimeouts,
    ResourceBinding,
)
from execplan.planner.quantities import parse_cpu_millis, parse_memory_bytes

_T = TypeVar("_T")
MAX_INTERVAL_CAP_MS = 5 * 60_000
DEFAULT_RETRY = ResolvedRetryPolicy(3, 1000, 2.0, 100_000, 0.2, ())
NO_TIMEOUTS = ResolvedTimeouts()


def _first(*values: _T | None, default: _T) -> _T:
    """The first value that is set (not None), else `default`."""
    for v in values:
        if v is not None:
            return v
    return default


def retry(
    spec: model.RetrySpec | None, base: ResolvedRetryPolicy | None = None
) -> ResolvedRetryPolicy:
    """`spec` over `base` (an already resolved policy), over the built-in default."""
    if spec is None:
        return base or DEFAULT_RETRY
    if base is None:
        initial = spec.initial_interval if spec.initial_interval is not None else 1000
        max_default = max(initial, min(100 * initial, MAX_INTERVAL_CAP_MS))
        base = ResolvedRetryPolicy(3, initial, 2.0, max_default, 0.2, ())
    initial = _int(spec.initial_interval, base.initial_interval)
    max_interval = _int(spec.max_interval, base.max_interval)
    if spec.max_interval is None and max_interval < initial:
        # Only the initial interval was raised here: derive the cap from it again.
        max_interval = max(initial, min(100 * initial, MAX_INTERVAL_CAP_MS))
    return ResolvedRetryPolicy(
        max_attempts=_int(spec.max_attempts, base.max_attempts),
        initial_interval=initial,
        backoff_coefficient=float(
            _first(spec.backoff_coefficient, default=base.backoff_coefficient)
        ),
        max_interval=max_interval,
        jitter=float(_first(spec.jitter, default=base.jitter)),
        non_retryable_errors=tuple(sorted({e for e in spec.non_retryable_errors if e}))
        or base.non_retryable_errors,
    )


def _int(v: int | None, default: int) -> int:
    return default if v is None else v


def timeouts(
    spec: model.TimeoutsSpec | None, base: ResolvedTimeouts = NO_TIMEOUTS
) -> ResolvedTimeouts:
    if spec is None:
        return base
    return ResolvedTimeouts(
        _int(spec.schedule_to_start, base.schedule_to_start),
        _int(spec.start_to_close, base.start_to_close),
        _int(spec.heartbeat, base.heartbeat),
        _int(spec.schedule_to_close, base.schedule_to_close),
    )


def breaker(
    spec: model.BreakerSpec | None, base: model.BreakerSpec | None
) -> ResolvedCircuitBreaker | None:
    if spec is None and base is None:
        return None
    s = spec or model.BreakerSpec()
    b = base or model.BreakerSpec()
    rate = float(_first(s.failure_rate_threshold, b.failure_rate_threshold, default=0.0))
    window = _first(s.window, b.window, default=60_000 if rate > 0 else 0)
    return ResolvedCircuitBreaker(
        failure_threshold=_first(s.failure_threshold, b.failure_threshold, default=5),
        open_for=_first(s.open_for, b.open_for, default=30_000),
        half_open_max_calls=_first(s.half_open_max_calls, b.half_open_max_calls, default=1),
        failure_rate_threshold=rate,
        window=window,
        on_open=s.on_open or b.on_open or "BREAKER_OPEN_ACTION_PARK",
    )


def resources(
    res: model.ResourcesSpec | None,
    place: model.PlacementSpec | None,
    secrets: tuple[str | None, ...],
    defaults: model.TaskDefaults | None,
) -> ResourceBinding:
    """Raises ValueError for a bad quantity (validation reports it first)."""
    d_res = defaults.resources if defaults else None
    d_place = defaults.placement if defaults else None
    r = res or model.ResourcesSpec()
    dr = d_res or model.ResourcesSpec()
    p = place or model.PlacementSpec()
    dp = d_place or model.PlacementSpec()
    cpu = r.cpu or dr.cpu
    memory = r.memory or dr.memory
    gpu = _first(r.gpu, dr.gpu, default=0)
    return ResourceBinding(
        cpu_millis=parse_cpu_millis(cpu) if cpu else 0,
        memory_bytes=parse_memory_bytes(memory) if memory else 0,
        gpu=gpu,
        require_labels=dict(sorted({**dp.require, **p.require}.items())),
        prefer_labels=dict(sorted({**dp.prefer, **p.prefer}.items())),
        environment=p.environment or dp.environment,
        secrets=tuple(sorted({s for s in secrets if s})),
        custom=dict(sorted({**dr.custom, **r.custom}.items())),
        isolate=r.isolate or dr.isolate,
    )
