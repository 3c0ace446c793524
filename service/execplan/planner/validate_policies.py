"""Policy values: retry, circuit breaker, resources (quantities).

Checked on every place they can be written (defaults, each task, each fallback and
compensation) so the path points at the field the author typed. The resolved retry
policy is checked again for max_interval < initial_interval, because the two may come
from different places (defaults vs task).
"""

from __future__ import annotations

from execplan.flow import capacity, rates
from execplan.planner import model, resolve
from execplan.planner.diagnostics import Diagnostics, child, echo
from execplan.planner.quantities import parse_cpu_millis, parse_memory_bytes


def _retry(spec: model.RetrySpec | None, path: str, diags: Diagnostics) -> None:
    if spec is None:
        return
    if spec.max_attempts is not None and spec.max_attempts < 1:
        diags.error("invalid-retry", f"{path}.max_attempts", "max_attempts must be >= 1")
    if spec.backoff_coefficient is not None and spec.backoff_coefficient < 1:
        diags.error(
            "invalid-retry", f"{path}.backoff_coefficient", "backoff_coefficient must be >= 1"
        )
    if spec.jitter is not None and not 0 <= spec.jitter <= 1:
        diags.error("invalid-retry", f"{path}.jitter", "jitter must be within 0..1")
    if (
        spec.max_interval is not None
        and spec.initial_interval is not None
        and spec.max_interval < spec.initial_interval
    ):
        diags.error(
            "invalid-retry", f"{path}.max_interval", "max_interval is below initial_interval"
        )


def _breaker(spec: model.BreakerSpec | None, path: str, diags: Diagnostics) -> None:
    if spec is None:
        return
    if spec.failure_threshold is not None and spec.failure_threshold < 1:
        diags.error(
            "invalid-circuit-breaker", f"{path}.failure_threshold", "failure_threshold must be >= 1"
        )
    if spec.half_open_max_calls is not None and spec.half_open_max_calls < 1:
        diags.error(
            "invalid-circuit-breaker",
            f"{path}.half_open_max_calls",
            "half_open_max_calls must be >= 1",
        )
    rate = spec.failure_rate_threshold
    if rate is not None and not 0 <= rate <= 1:
        diags.error(
            "invalid-circuit-breaker",
            f"{path}.failure_rate_threshold",
            "failure_rate_threshold must be within 0..1",
        )


def _resources(spec: model.ResourcesSpec | None, path: str, diags: Diagnostics) -> None:
    if spec is None:
        return
    if spec.cpu:
        try:
            parse_cpu_millis(spec.cpu)
        except ValueError as exc:
            diags.error("invalid-quantity", f"{path}.cpu", str(exc))
    if spec.memory:
        try:
            parse_memory_bytes(spec.memory)
        except ValueError as exc:
            diags.error("invalid-quantity", f"{path}.memory", str(exc))
    if spec.gpu is not None and spec.gpu < 0:
        diags.error("invalid-quantity", f"{path}.gpu", "gpu must be >= 0")
    if len(spec.custom) > capacity.MAX_CUSTOM:
        diags.error(
            "invalid-quantity",
            f"{path}.custom",
            f"{len(spec.custom)} custom counters; at most {capacity.MAX_CUSTOM} are allowed",
        )
        return
    for name, n in spec.custom.items():
        if (
            name in capacity.RESERVED
            or len(name) > capacity.NAME_CHARS
            or not rates.NAME.fullmatch(name)
        ):
            diags.error(
                "invalid-quantity",
                child(f"{path}.custom", name),
                f"counter name {echo(name)} must match [a-z0-9][a-z0-9._-]* (at most "
                f"{capacity.NAME_CHARS} characters) and not be cpu, memory or gpu",
            )
        elif n < 0:
            diags.error("invalid-quantity", child(f"{path}.custom", name), "a counter must be >= 0")


def check(wf: model.Workflow, diags: Diagnostics) -> None:
    d = wf.defaults
    if d is not None:
        _retry(d.retry, "defaults.retry", diags)
        _breaker(d.circuit_breaker, "defaults.circuit_breaker", diags)
        _resources(d.resources, "defaults.resources", diags)
    base_retry = resolve.retry(d.retry if d else None)
    for t in wf.beyond_plain():
        if (
            t.retry is None
            and t.circuit_breaker is None
            and t.resources is None
            and t.fallback is None
            and t.compensation is None
        ):
            continue
        p = t.path
        if t.retry is not None:
            _retry(t.retry, f"{p}.retry", diags)
            merged = resolve.retry(t.retry, base_retry if d and d.retry else None)
            if merged.max_interval < merged.initial_interval and (
                t.retry.max_interval is None or t.retry.initial_interval is None
            ):
                diags.error(
                    "invalid-retry",
                    f"{p}.retry",
                    f"resolved max_interval {merged.max_interval} ms is below "
                    f"initial_interval {merged.initial_interval} ms (defaults apply)",
                )
        if t.circuit_breaker is not None:
            _breaker(t.circuit_breaker, f"{p}.circuit_breaker", diags)
        if t.resources is not None:
            _resources(t.resources, f"{p}.resources", diags)
        for name, side in (("fallback", t.fallback), ("compensation", t.compensation)):
            if side is not None:
                _retry(side.retry, f"{p}.{name}.retry", diags)
