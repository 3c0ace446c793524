"""Parse: document -> `model.Workflow`, with exact-path diagnostics.

`build_workflow(doc, diags)` walks a JSON-like document (from `source.load`, or a
`MessageToDict` of a Workflow) against a small schema that mirrors `workflow.proto`
field by field. Both spellings of the WDL are accepted everywhere:

- enums: `compensate`, `COMPENSATE` or `ON_FAILURE_COMPENSATE` (and the proto number);
- durations: `250ms`, `1h30m` or proto JSON `"0.250s"`;
- int32/uint32 as JSON numbers or decimal strings (proto JSON allows both);
- `version`, label and placement values as strings, or integers (`version: 3`).

Problems become diagnostics (`unknown-field` with a did-you-mean hint, `invalid-type`,
`invalid-number`, `unknown-enum`, `unknown-trigger`, `invalid-duration`,
`missing-required`, `limit-tasks`, `limit-document-depth`) and the offending field
is left at its default so later phases still see everything else. Values (task and
side-task inputs, input defaults, outputs) keep to limits.MAX_DOCUMENT_DEPTH and
their integers to +-limits.MAX_SAFE_INTEGER. The input document is never mutated:
every container in the model is new.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from typing import Any

from execplan.planner import limits, model
from execplan.planner.diagnostics import MAX_ECHO_CHARS, Diagnostics, child, echo
from execplan.planner.durations import parse_duration
from execplan.planner.load_json import LongNumber


class _Bad:
    """Marker for a value that failed to convert (a diagnostic was already added)."""


BAD: Any = _Bad()
Conv = Callable[[object, str, Diagnostics], Any]


# --- scalar converters ----------------------------------------------------------------


def _type_name(v: object) -> str:
    if v is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list"}.get(
        type(v), "object" if isinstance(v, dict) else type(v).__name__
    )


def _invalid(diags: Diagnostics, path: str, want: str, v: object) -> Any:
    if type(v) is LongNumber:
        diags.error(
            "invalid-number",
            path,
            f"a number of {v.digits:,} digits; at most {limits.MAX_NUMBER_CHARS} "
            "(quote it to keep it as text)",
        )
    else:
        diags.error("invalid-type", path, f"expected {want}, got {_type_name(v)}")
    return BAD


def _string(v: object, path: str, diags: Diagnostics) -> Any:
    return v if type(v) is str else _invalid(diags, path, "a string", v)


def _text(v: object, path: str, diags: Diagnostics) -> Any:
    """A string, or an integer written without quotes (`version: 3`)."""
    if type(v) is str:
        return v
    if type(v) is int and abs(v) < 10**20:
        return str(v)
    if type(v) is float:
        diags.error(
            "invalid-type", path, "expected a string, got number: quote it (YAML reads 1.10 as 1.1)"
        )
        return BAD
    return _invalid(diags, path, "a string", v)


def _bool(v: object, path: str, diags: Diagnostics) -> Any:
    return v if type(v) is bool else _invalid(diags, path, "a boolean", v)


_DECIMAL = re.compile(r"\s*-?[0-9]{1,20}\s*")


def _integral(v: object) -> bool:
    """An integral float (proto JSON may print 3.0) or a decimal string ("3"), ASCII
    digits only and short: int() refuses '²' and more than 4,300 digits."""
    if type(v) is float:
        return v.is_integer()
    return type(v) is str and _DECIMAL.fullmatch(v) is not None


def _integer(lo: int, hi: int) -> Conv:
    def conv(v: object, path: str, diags: Diagnostics) -> Any:
        n: int | None = None
        if type(v) is int:
            n = v
        elif _integral(v):
            n = int(v)  # type: ignore[call-overload]
        if n is None:
            return _invalid(diags, path, "an integer", v)
        if not lo <= n <= hi:
            diags.error("invalid-type", path, f"{echo(n)} is out of range {lo}..{hi}")
            return BAD
        return n

    return conv


_int32 = _integer(-(2**31), 2**31 - 1)
_int64 = _integer(-(2**63), 2**63 - 1)
_uint32 = _integer(0, 2**32 - 1)


def _double(v: object, path: str, diags: Diagnostics) -> Any:
    if type(v) is int or type(v) is float:
        f = float(v)
    elif type(v) is str:
        try:
            f = float(v)
        except ValueError:
            return _invalid(diags, path, "a number", v)
    else:
        return _invalid(diags, path, "a number", v)
    if not math.isfinite(f):
        diags.error("invalid-type", path, "expected a finite number")
        return BAD
    return f


def _duration(v: object, path: str, diags: Diagnostics) -> Any:
    if type(v) is not str:
        return _invalid(diags, path, "a duration string such as 30s", v)
    try:
        return parse_duration(v)
    except ValueError as exc:
        diags.error("invalid-duration", path, str(exc))
        return BAD


def _enum(prefix: str, names: tuple[str, ...], code: str = "unknown-enum") -> Conv:
    full = [f"{prefix}_{n}" for n in names]
    lookup: dict[str, str] = {}
    for short, name in zip(names, full, strict=True):
        lookup[short.lower()] = lookup[short] = lookup[name] = name
    by_number = dict(enumerate([f"{prefix}_UNSPECIFIED", *full]))
    allowed = ", ".join(n.lower() for n in names)

    def conv(v: object, path: str, diags: Diagnostics) -> Any:
        if type(v) is int and v in by_number:
            return "" if v == 0 else by_number[v]
        if type(v) is str:
            if v in lookup:
                return lookup[v]
            if v in ("", f"{prefix}_UNSPECIFIED"):
                return ""
            norm = v.strip().upper()
            if norm in lookup:
                return lookup[norm]
        diags.error(code, path, f"unknown value {echo(v)}: expected one of {allowed}")
        return BAD

    return conv


def _json(v: object, path: str, diags: Diagnostics, depth: int) -> Any:
    """A fresh JSON value whose lists/maps sit at document depth `depth`; integral
    floats become ints (proto Value is a double)."""
    t = type(v)
    if t is str or t is bool or v is None:
        return v
    if t is int:
        n: int = v  # type: ignore[assignment]
        if -limits.MAX_SAFE_INTEGER <= n <= limits.MAX_SAFE_INTEGER:
            return n
        diags.error(
            "invalid-number",
            path,
            f"{echo(n)} is outside +-(2^53 - 1), where JSON and protobuf numbers (doubles) "
            "are exact: quote it to keep it as text",
        )
        return BAD
    if t is float:
        f: float = v  # type: ignore[assignment]
        if not math.isfinite(f):
            diags.error("invalid-type", path, "expected a finite number")
            return BAD
        return int(f) if f.is_integer() and abs(f) < 2**53 else f
    if t is list or t is dict:
        if depth > limits.MAX_DOCUMENT_DEPTH:
            diags.error(
                "limit-document-depth",
                path,
                f"lists and maps nest more than {limits.MAX_DOCUMENT_DEPTH} levels deep",
            )
            return BAD
        if t is list:
            items: list[object] = v  # type: ignore[assignment]
            return [_json(x, f"{path}[{i}]", diags, depth + 1) for i, x in enumerate(items)]
        obj: dict[object, object] = v  # type: ignore[assignment]
        out: dict[str, object] = {}
        for key, x in obj.items():
            if type(key) is not str:
                diags.error("invalid-type", path, f"object key {echo(key)} is not a string")
                continue
            out[key] = _json(x, child(path, key), diags, depth + 1)
        return out
    return _invalid(diags, path, "a JSON value", v)


def _json_at(depth: int) -> Conv:
    """Converter for a value whose own list/map would be at document depth `depth`
    (the root map is depth 1)."""

    def conv(v: object, path: str, diags: Diagnostics) -> Any:
        return _json(v, path, diags, depth)

    return conv


# --- containers -----------------------------------------------------------------------


def _list(item: Conv) -> Conv:
    def conv(v: object, path: str, diags: Diagnostics) -> Any:
        if type(v) is not list:
            return _invalid(diags, path, "a list", v)
        out = []
        for i, x in enumerate(v):
            r = item(x, f"{path}[{i}]", diags)
            out.append(None if r is BAD else r)
        return tuple(out)

    return conv


def _map(item: Conv) -> Conv:
    def conv(v: object, path: str, diags: Diagnostics) -> Any:
        if not isinstance(v, dict):
            return _invalid(diags, path, "a map", v)
        out = {}
        for key, x in v.items():
            if type(key) is not str:
                diags.error("invalid-type", path, f"map key {echo(key)} is not a string")
                continue
            r = item(x, child(path, key), diags)
            if r is not BAD:
                out[key] = r
        return out

    return conv


def _message(
    cls: Callable[..., Any],
    fields: dict[str, Conv],
    required: tuple[str, ...] = (),
    nullable: frozenset[str] = frozenset(),
) -> Callable[..., Any]:
    """Converter for one proto message: checks every key, reports unknown ones."""
    names = sorted(fields)

    def conv(v: object, path: str, diags: Diagnostics, **extra: Any) -> Any:
        if not isinstance(v, dict):
            return _invalid(diags, path, "an object", v)
        kwargs: dict[str, Any] = extra
        prefix = f"{path}." if path else ""
        for key, x in v.items():
            fconv = fields.get(key)
            if fconv is None:
                _unknown_field(key, prefix, names, diags)
                continue
            if x is None and key not in nullable:
                continue  # YAML `retry:` with nothing after it: same as absent
            r = fconv(x, prefix + key, diags)
            if r is not BAD:
                kwargs[key] = r
        for key in required:
            # Present with a wrong type is already an invalid-type; "" counts as absent.
            if not kwargs.get(key) and v.get(key) in (None, ""):
                diags.error("missing-required", prefix + key, f"{key} is required")
        return cls(**kwargs)

    return conv


def _unknown_field(key: object, prefix: str, names: list[str], diags: Diagnostics) -> None:
    if type(key) is not str:
        diags.error("invalid-type", prefix.rstrip("."), f"field name {echo(key)} is not a string")
        return
    # The hint compares with every field name: not for huge keys or endless lists.
    wanted = len(key) <= MAX_ECHO_CHARS and not diags.full
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6) if wanted else []
    hint = f"; did you mean {close[0]}?" if close else ""
    diags.error("unknown-field", child(prefix.rstrip("."), key), f"unknown field {echo(key)}{hint}")


# --- the schema (mirrors workflow.proto) ----------------------------------------------

_retry = _message(
    model.RetrySpec,
    {
        "max_attempts": _int32,
        "initial_interval": _duration,
        "backoff_coefficient": _double,
        "max_interval": _duration,
        "jitter": _double,
        "non_retryable_errors": _list(_string),
    },
)
_timeouts = _message(
    model.TimeoutsSpec,
    {
        k: _duration
        for k in ("schedule_to_start", "start_to_close", "heartbeat", "schedule_to_close")
    },
)
_breaker = _message(
    model.BreakerSpec,
    {
        "failure_threshold": _int32,
        "open_for": _duration,
        "half_open_max_calls": _int32,
        "failure_rate_threshold": _double,
        "window": _duration,
        "on_open": _enum("BREAKER_OPEN_ACTION", ("PARK", "FAIL_FAST")),
        "key": _string,
    },
)
_placement = _message(
    model.PlacementSpec,
    {"require": _map(_text), "prefer": _map(_text), "environment": _string},
)
_resources = _message(
    model.ResourcesSpec,
    # cpu/memory also accept bare numbers (`cpu: 2`); quantities.py checks the value.
    {
        "cpu": lambda v, p, d: str(v) if type(v) in (int, float) else _string(v, p, d),
        "memory": lambda v, p, d: str(v) if type(v) in (int, float) else _string(v, p, d),
        "gpu": _int32,
        "custom": _map(_int64),
        "isolate": _bool,
    },
)


def _units(v: object, path: str, diags: Diagnostics) -> Any:
    """`units: 3` or `units: "size(inputs.prompt) / 4"`: kept as text."""
    if type(v) is int:
        return str(v)
    if type(v) is float and v.is_integer():
        return str(int(v))
    return _string(v, path, diags)


_limit = _message(model.LimitSpec, {"key": _string, "max": _uint32, "name": _string})
_rate_limit_use = _message(
    model.RateLimitUseSpec, {"name": _string, "key": _string, "units": _units}, required=("name",)
)
_rate_limit_definition = _message(
    model.RateLimitDefinitionSpec,
    {"name": _string, "rate": _string, "burst": _uint32},
    required=("name", "rate"),
)
_cache = _message(model.CacheSpec, {"key": _string, "ttl": _duration})


def _amount(v: object, path: str, diags: Diagnostics) -> Any:
    """An estimate amount: `0.05` (kept as its text) or CEL as a string."""
    if type(v) is int:
        return str(v)
    if type(v) is float:
        f = _double(v, path, diags)
        return BAD if f is BAD else repr(f)
    return _string(v, path, diags)


_budget = _message(
    model.BudgetSpec,
    {
        "cost": _double,
        "tokens": _double,
        "counters": _map(_double),
        "on_exceeded": _enum("BUDGET_ACTION", ("PAUSE", "FAIL")),
    },
)
_estimate = _message(
    model.EstimateSpec, {"cost": _amount, "tokens": _amount, "counters": _map(_amount)}
)
_side_fields: dict[str, Conv] = {
    "type": _string,
    "inputs": _map(_json_at(6)),  # root > tasks > task > fallback > inputs > value
    "retry": _retry,
    "timeouts": _timeouts,
}
_side = _message(model.SideTaskSpec, _side_fields, required=("type",))


def _input_spec_cls(**kw: Any) -> model.InputSpec:
    return model.InputSpec(has_default="default" in kw, **kw)


_input_spec = _message(
    _input_spec_cls,
    {
        "type": _enum(
            "INPUT_TYPE", ("STRING", "NUMBER", "INTEGER", "BOOLEAN", "OBJECT", "ARRAY", "ANY")
        ),
        "required": _bool,
        "default": _json_at(4),  # root > inputs > spec > default
        "description": _string,
    },
    nullable=frozenset({"default"}),
)
_defaults = _message(
    model.TaskDefaults,
    {
        "retry": _retry,
        "timeouts": _timeouts,
        "circuit_breaker": _breaker,
        "placement": _placement,
        "resources": _resources,
        "priority": _int32,
    },
)
_repeat = _message(
    model.RepeatSpec,
    {"until": _string, "max_iterations": _uint32},
    required=("until", "max_iterations"),
)
_task = _message(
    model.Task,
    {
        "id": _string,
        "type": _string,
        "depends_on": _list(_string),
        "inputs": _map(_json_at(5)),  # root > tasks > task > inputs > value
        "when": _string,
        "trigger": _enum(
            "TRIGGER_RULE",
            ("ALL_SUCCESS", "ALL_DONE", "ONE_SUCCESS", "ALL_FAILED"),
            code="unknown-trigger",
        ),
        "retry": _retry,
        "timeouts": _timeouts,
        "fallback": _side,
        "compensation": _side,
        "circuit_breaker": _breaker,
        "placement": _placement,
        "resources": _resources,
        "secrets": _list(_string),
        "priority": _int32,
        "estimated_duration": _duration,
        "description": _string,
        "for_each": _string,
        "max_parallel": _uint32,
        "repeat": _repeat,
        "workflow": _string,
        "dynamic": _bool,
        "limit": _limit,
        "rate_limits": _list(_rate_limit_use),
        "cache": _cache,
        "budget": _budget,
        "estimate": _estimate,
    },
    required=("id", "type"),
)


def _tasks(v: object, path: str, diags: Diagnostics) -> Any:
    if type(v) is not list:
        return _invalid(diags, path, "a list", v)
    if len(v) > limits.MAX_TASKS:
        diags.error(
            "limit-tasks", path, f"{len(v):,} tasks; at most {limits.MAX_TASKS:,} are allowed"
        )
        return BAD
    out: list[model.Task | None] = []
    task_cls = model.PlainTask  # the phases that check other fields skip it
    simple = _SIMPLE_TASK_KEYS
    for i, x in enumerate(v):
        # Fast path for the common minimal task (id, type, depends_on, scalar inputs):
        # the generic converter costs ~3 us per task in checks this shape cannot fail.
        if type(x) is dict and x.keys() <= simple:
            tid = x.get("id")
            ttype = x.get("type")
            deps = x.get("depends_on", ())
            inputs = x.get("inputs")  # null is the same as absent, as in _message
            if _simple_task(tid, ttype, deps, inputs):
                copied = {} if inputs is None else dict(inputs)
                # Positional: keyword arguments cost ~0.2 us more per task.
                out.append(task_cls(i, tid, ttype, tuple(deps), copied))  # type: ignore[arg-type]
                continue
        r = _task(x, f"tasks[{i}]", diags, index=i)
        out.append(None if r is BAD else r)
    return tuple(out)


def _simple_task(tid: object, ttype: object, deps: object, inputs: object) -> bool:
    """Whether a task of only id, type, depends_on and inputs may take the fast
    path: id and type non-empty strings, depends_on a list of strings, inputs absent
    or a map of strings, safe ints, booleans and nulls (`_json` would return an
    equal copy, so the fast path copies the dict itself; floats need normalising).
    Plain loops, in one call: ~0.4 us per task less than all() over generators."""
    if type(tid) is not str or not tid or type(ttype) is not str or not ttype:
        return False
    if type(deps) is not list and type(deps) is not tuple:
        return False
    for d in deps:
        if type(d) is not str:
            return False
    if inputs is None:
        return True
    if type(inputs) is not dict:
        return False
    safe = limits.MAX_SAFE_INTEGER
    for k, x in inputs.items():
        if type(k) is not str:
            return False
        t = type(x)
        if t is int:
            if not -safe <= x <= safe:
                return False
        elif t not in _SCALARS:
            return False
    return True


_SCALARS = frozenset({str, bool, type(None)})
_SIMPLE_TASK_KEYS = frozenset({"id", "type", "depends_on", "inputs"})


_workflow = _message(
    model.Workflow,
    {
        "name": _string,
        "version": _text,
        "description": _string,
        "inputs": _map(_input_spec),
        "defaults": _defaults,
        "on_failure": _enum("ON_FAILURE", ("FAIL_FAST", "CONTINUE", "COMPENSATE")),
        "max_parallel": _uint32,
        "tasks": _tasks,
        "outputs": _map(_json_at(3)),  # root > outputs > value
        "pause_after_failures": _uint32,
        "labels": _map(_text),
        "rate_limits": _list(_rate_limit_definition),
        "budget": _budget,
    },
    required=("name",),
)


def build_workflow(doc: object, diags: Diagnostics) -> model.Workflow:
    """The model of `doc`; problems are reported to `diags` (see module docstring)."""
    wf = _workflow(doc, "", diags)
    if wf is BAD:
        return model.Workflow()
    result: model.Workflow = wf
    return result
