"""Flow control: concurrency limits, rate limits, result caching and breaker keys.

Checks and compiles, for each task, `limit`, `rate_limits`, `cache` and
`circuit_breaker.key`, and the workflow's own token buckets (`rate_limits`):

    limit: {key: "inputs.model", max: 4}                 # name defaults to the task type
    rate_limits: [{name: openai-rpm, key: "inputs.model", units: 1}]
    cache: {key: "inputs.url", ttl: 1h}
    circuit_breaker: {key: "inputs.model", failure_threshold: 5}
    rate_limits: [{name: openai-rpm, rate: 60/m, burst: 10}]   # on the workflow

Keys and units are bare CEL (a `${{ }}` wrapper is tolerated) over `inputs` (the
task's resolved inputs), `workflow.inputs` and `execution`, with the same bounds as
every expression. Codes: `invalid-limit`, `invalid-rate-limit`, `invalid-cache`, plus
the expression codes. Built-ins that wait (`builtin.sleep`, `builtin.wait_for_event`)
take no flow control: nothing is dispatched for them.
"""

from __future__ import annotations

from dataclasses import dataclass

from execplan.flow import rates
from execplan.planner import expressions as ex
from execplan.planner.diagnostics import Diagnostics, echo
from execplan.planner.model import BreakerSpec, Task, Workflow
from execplan.planner.plan import (
    Expression,
    PlanRateLimit,
    ResolvedCache,
    ResolvedLimit,
    ResolvedRateLimitUse,
)
from execplan.planner.validate_references import check_reads

MAX_TASK_RATE_LIMITS = 8
MAX_WORKFLOW_RATE_LIMITS = 64
MAX_LIMIT = 1_000_000
MAX_TTL_MS = 366 * 86_400_000
WAITING_BUILTINS = frozenset({"builtin.sleep", "builtin.wait_for_event"})


@dataclass(frozen=True, slots=True)
class TaskFlow:
    """A task's compiled flow control (what the plan node carries)."""

    limit: ResolvedLimit | None = None
    rate_limits: tuple[ResolvedRateLimitUse, ...] = ()
    cache: ResolvedCache | None = None
    breaker_key: Expression | None = None


NO_FLOW = TaskFlow()


def compile_key(source: str, path: str, wf: Workflow, diags: Diagnostics) -> Expression | None:
    """A key or units expression; None when empty (a diagnostic when it is bad)."""
    text = source.strip()
    if text.startswith(ex.OPEN):
        try:
            pieces = ex.split_template(text)
        except ex.TemplateError as exc:
            diags.error(exc.code, path, str(exc))
            return None
        if len(pieces) == 1 and isinstance(pieces[0], ex.ExprPart):
            text = pieces[0].source
    if not text:
        return None
    bound = ex.check_expression_bounds(text)
    if bound is not None:
        diags.error(bound[0], path, bound[1])
        return None
    error = ex.compile_cel(text)
    if error is not None:
        diags.error("invalid-expression", path, error)
        return None
    a = ex.analyze_key_expression(text)
    for code, message in a.problems:
        diags.error(code, path, message)
    expr = Expression(text, (), a.reads_inputs, a.reads_execution)
    check_reads([(path, expr)], {}, wf.inputs, diags, reader=None, self_ok=True, edges=None)
    return expr


def declared_buckets(wf: Workflow, diags: Diagnostics) -> dict[str, PlanRateLimit]:
    """The workflow's token buckets by name (checked)."""
    out: dict[str, PlanRateLimit] = {}
    if len(wf.rate_limits) > MAX_WORKFLOW_RATE_LIMITS:
        diags.error(
            "invalid-rate-limit",
            "rate_limits",
            f"{len(wf.rate_limits)} buckets; at most {MAX_WORKFLOW_RATE_LIMITS} are allowed",
        )
        return out
    for i, d in enumerate(wf.rate_limits):
        if d is None:
            continue
        path = f"rate_limits[{i}]"
        problem = rates.check_name(d.name)
        if problem is not None:
            diags.error(
                "invalid-rate-limit", f"{path}.name", f"bucket name {echo(d.name)}: {problem}"
            )
            continue
        if d.name in out:
            diags.error(
                "invalid-rate-limit", f"{path}.name", f"bucket {echo(d.name)} is declared twice"
            )
            continue
        try:
            units, period = rates.parse_rate(d.rate)
            s = rates.settings(units, period, d.burst or 0)
        except ValueError as exc:
            where = (
                f"{path}.rate" if d.burst is None or "burst" not in str(exc) else f"{path}.burst"
            )
            diags.error("invalid-rate-limit", where, str(exc))
            continue
        out[d.name] = PlanRateLimit(d.name, s.units, s.period_ms, s.burst)
    return out


def compile_breaker_key(
    spec: BreakerSpec | None, path: str, wf: Workflow, diags: Diagnostics
) -> Expression | None:
    if spec is None or not spec.key:
        return None
    return compile_key(spec.key, f"{path}.key", wf, diags)


def compile_task(
    t: Task, wf: Workflow, buckets: dict[str, PlanRateLimit], diags: Diagnostics
) -> TaskFlow:
    """Check and compile one task's flow control."""
    if t.limit is None and not t.rate_limits and t.cache is None and t.circuit_breaker is None:
        return NO_FLOW
    p = t.path
    if t.type in WAITING_BUILTINS:
        for name, present in (
            ("limit", t.limit is not None),
            ("rate_limits", bool(t.rate_limits)),
            ("cache", t.cache is not None),
        ):
            if present:
                diags.error(
                    "builtin-invalid",
                    f"{p}.{name}",
                    f"{t.type} waits inside the executor: {name} does not apply",
                )
        return NO_FLOW
    return TaskFlow(
        limit=_limit(t, wf, diags),
        rate_limits=_rate_limits(t, wf, buckets, diags),
        cache=_cache(t, wf, diags),
        breaker_key=compile_breaker_key(t.circuit_breaker, f"{p}.circuit_breaker", wf, diags),
    )


def _limit(t: Task, wf: Workflow, diags: Diagnostics) -> ResolvedLimit | None:
    spec = t.limit
    if spec is None:
        return None
    path = f"{t.path}.limit"
    if spec.max is None or not 1 <= spec.max <= MAX_LIMIT:
        diags.error("invalid-limit", f"{path}.max", f"max must be within 1..{MAX_LIMIT:,}")
    name = spec.name or t.type
    if spec.name:
        problem = rates.check_name(spec.name)
        if problem is not None:
            diags.error("invalid-limit", f"{path}.name", f"limit name {echo(spec.name)}: {problem}")
    key = compile_key(spec.key, f"{path}.key", wf, diags) if spec.key else None
    return ResolvedLimit(name, key, spec.max or 0)


def _rate_limits(
    t: Task, wf: Workflow, buckets: dict[str, PlanRateLimit], diags: Diagnostics
) -> tuple[ResolvedRateLimitUse, ...]:
    if len(t.rate_limits) > MAX_TASK_RATE_LIMITS:
        diags.error(
            "invalid-rate-limit",
            f"{t.path}.rate_limits",
            f"{len(t.rate_limits)} buckets; a task may take from at most {MAX_TASK_RATE_LIMITS}",
        )
        return ()
    out: list[ResolvedRateLimitUse] = []
    seen: set[str] = set()
    for i, use in enumerate(t.rate_limits):
        if use is None:
            continue
        path = f"{t.path}.rate_limits[{i}]"
        problem = rates.check_name(use.name)
        if problem is not None:
            diags.error(
                "invalid-rate-limit", f"{path}.name", f"bucket name {echo(use.name)}: {problem}"
            )
            continue
        if use.name in seen:
            diags.error(
                "invalid-rate-limit", f"{path}.name", f"bucket {echo(use.name)} is listed twice"
            )
            continue
        seen.add(use.name)
        key = compile_key(use.key, f"{path}.key", wf, diags) if use.key else None
        units, units_expr = _units(use.units, f"{path}.units", wf, diags)
        declared = buckets.get(use.name)
        if declared is not None and units > declared.burst:
            diags.error(
                "invalid-rate-limit",
                f"{path}.units",
                f"{units} units never fit bucket {echo(use.name)} (burst {declared.burst})",
            )
        out.append(ResolvedRateLimitUse(use.name, key, units, units_expr))
    return tuple(out)


def _units(text: str, path: str, wf: Workflow, diags: Diagnostics) -> tuple[int, Expression | None]:
    stripped = text.strip()
    if not stripped:
        return 1, None
    if stripped.isdigit():
        n = int(stripped) if len(stripped) <= 10 else 0
        if not 1 <= n <= rates.MAX_UNITS:
            diags.error("invalid-rate-limit", path, f"units must be within 1..{rates.MAX_UNITS:,}")
        return n, None
    return 1, compile_key(stripped, path, wf, diags)


def _cache(t: Task, wf: Workflow, diags: Diagnostics) -> ResolvedCache | None:
    spec = t.cache
    if spec is None:
        return None
    path = f"{t.path}.cache"
    if spec.ttl is not None and spec.ttl > MAX_TTL_MS:
        diags.error("invalid-cache", f"{path}.ttl", "ttl must be at most 366d")
    key = compile_key(spec.key, f"{path}.key", wf, diags) if spec.key else None
    return ResolvedCache(key, spec.ttl or 0)
