"""Plan dataclasses -> `execplan.v1.ExecutionPlan` (and diagnostics -> proto).

`encode_plan(plan)` builds the protobuf message field by field. Durations (int ms in
the plan) become `google.protobuf.Duration`; enum names map to their numbers; JSON
literals become `google.protobuf.Value`. Sub-messages shared by many nodes (the
resolved policies built from `defaults`) are encoded once and copied in as bytes,
which keeps a 100k-node plan cheap to encode.

Byte-identical plans: protobuf does not order map entries (labels) unless asked, so
serialize with `SerializeToString(deterministic=True)`, or call `serialize_plan`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from itertools import repeat
from typing import Any

from execplan.planner import (
    Binding,
    BindingList,
    BindingStruct,
    BindingValue,
    Diagnostic,
    Expression,
    Literal,
    Plan,
    PlanNode,
    PlanSideTask,
    ResolvedCircuitBreaker,
    ResolvedRetryPolicy,
    ResolvedTimeouts,
    ResourceBinding,
    Template,
)
from execplan.planner.plan import EDGE_ORDER, PlanEdges, binding_value, items
from execplan.usage.codec import encode_budget
from execplan.v1 import plan_pb2, planner_service_pb2, workflow_pb2
from google.protobuf import duration_pb2, struct_pb2

_SEVERITY = {
    "error": planner_service_pb2.SEVERITY_ERROR,
    "warning": planner_service_pb2.SEVERITY_WARNING,
}


def _duration(ms: int) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromMilliseconds(ms)
    return duration


def set_value(msg: struct_pb2.Value, v: object) -> None:
    """Store a JSON value in a `google.protobuf.Value`."""
    if v is None:
        msg.null_value = struct_pb2.NULL_VALUE
    elif isinstance(v, bool):
        msg.bool_value = v
    elif isinstance(v, int | float):
        msg.number_value = float(v)
    elif isinstance(v, str):
        msg.string_value = v
    elif isinstance(v, dict):
        msg.struct_value.SetInParent()  # an empty {} is still a value (a default, say)
        msg.struct_value.update(v)
    elif isinstance(v, list):
        msg.list_value.SetInParent()  # an empty [] likewise
        msg.list_value.extend(v)
    else:
        raise TypeError(f"not a JSON value: {type(v).__name__}")


def _expression(e: Expression) -> plan_pb2.Expression:
    return plan_pb2.Expression(
        source=e.source,
        reads_tasks=e.reads_tasks,
        reads_inputs=e.reads_inputs,
        reads_execution=e.reads_execution,
        reads_variables=e.reads_variables,
    )


_EXPRESSION_BYTES: dict[Expression, bytes] = {}


def _expression_bytes(e: Expression) -> bytes:
    # Keyed by value (Expression is frozen and hashable); bounded so it cannot grow
    # without limit in a long-running server.
    hit = _EXPRESSION_BYTES.get(e)
    if hit is None:
        if len(_EXPRESSION_BYTES) > 65536:
            _EXPRESSION_BYTES.clear()
        hit = _EXPRESSION_BYTES[e] = _expression(e).SerializeToString()
    return hit


def _value(v: BindingValue, out: plan_pb2.BindingValue) -> None:
    t = type(v)
    if t is Literal:
        lit = v.value  # type: ignore[union-attr]
        if isinstance(lit, int | float) and not isinstance(lit, bool):
            out.literal.number_value = lit
        elif isinstance(lit, str):
            out.literal.string_value = lit
        else:
            set_value(out.literal, lit)
    elif t is Expression:
        out.expression.MergeFromString(_expression_bytes(v))  # type: ignore[arg-type]
    elif type(v) is Template:
        for p in v.parts:
            part = out.template.parts.add()
            if type(p) is str:
                part.text = p
            else:
                part.expression.CopyFrom(_expression(p))  # type: ignore[arg-type]
        if not v.parts:
            out.template.SetInParent()
    elif type(v) is BindingStruct:
        out.struct.SetInParent()
        _bindings(v.fields, out.struct.fields)
    else:
        assert type(v) is BindingList
        out.list.SetInParent()
        for item in v.items:
            _value(item, out.list.items.add())


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    n = len(payload)
    return tag + (_VARINTS[n] if n < 16384 else _varint_slow(n)) + payload


_DOUBLE = struct.Struct("<d").pack


def _binding_wire(b: Binding) -> bytes:
    """PlanNode.bindings (field 12) entry in wire format.

    Plain numbers, strings and expressions (the common cases) are written directly;
    anything else goes through a real BindingValue message."""
    v = b.value
    value: bytes
    lit = v.value if isinstance(v, Literal) else None
    lt = type(lit)
    if isinstance(v, Expression):
        value = _field(b"\x12", _expression_bytes(v))
    elif (lt is int or lt is float) and isinstance(lit, int | float):
        value = _field(b"\x0a", b"\x11" + _DOUBLE(float(lit)))
    elif isinstance(lit, str):
        value = _field(b"\x0a", _field(b"\x1a", lit.encode()))
    else:
        msg = plan_pb2.BindingValue()
        _value(v, msg)
        value = msg.SerializeToString(deterministic=True)
    return _field(b"\x62", _field(b"\x0a", b.name.encode()) + _field(b"\x12", value))


def _bindings(bs: Sequence[Binding], out: Any) -> None:
    for b in bs:
        msg = out.add(name=b.name)
        _value(b.value, msg.value)


def common_key(n: PlanNode) -> tuple[object, ...]:
    """What `_Encoder.common_wire` caches a node's shared fields by: nodes with the
    same key have the same type, builtin, trigger, priority, estimate, description
    and the same policy objects."""
    return (
        n.type,
        n.builtin,
        n.trigger,
        n.priority,
        n.estimated_duration_ms,
        n.description,
        id(n.retry),
        id(n.timeouts),
        id(n.circuit_breaker),
        id(n.resources),
    )


class _Encoder:
    """Memoises serialized sub-messages by object identity (shared policies)."""

    def __init__(self) -> None:
        self.memo: dict[int, bytes] = {}
        self.wires: dict[tuple[int, int, int, int], bytes] = {}
        self.common: dict[tuple[object, ...], bytes] = {}
        self.bindings: dict[tuple[str, int], bytes] = {}
        self.number_heads: dict[str, bytes] = {}

    def binding(self, name: str, raw: object) -> bytes:
        """`_binding_wire` of one binding (its value as `items` gives it), reusing the
        bytes of an expression binding shared by many nodes and the bytes before the
        double of a number literal by name."""
        v = raw.value if type(raw) is Literal else raw
        t = type(v)
        if t is Expression:
            key = (name, id(v))  # the plan keeps v alive, so its id is stable
            hit = self.bindings.get(key)
            if hit is None:
                hit = self.bindings[key] = _binding_wire(Binding(name, v))  # type: ignore[arg-type]
            return hit
        if t is int or t is float:
            head = self.number_heads.get(name)
            if head is None:
                whole = _binding_wire(Binding(name, Literal(v)))
                head = self.number_heads[name] = whole[:-8]  # all but the double
            return head + _DOUBLE(v)  # struct converts an int as float() does
        return _binding_wire(Binding(name, binding_value(v)))

    def retry(self, r: ResolvedRetryPolicy) -> bytes:
        hit = self.memo.get(id(r))
        if hit is None:
            hit = self.memo[id(r)] = plan_pb2.ResolvedRetryPolicy(
                max_attempts=r.max_attempts,
                initial_interval=_duration(r.initial_interval),
                backoff_coefficient=r.backoff_coefficient,
                max_interval=_duration(r.max_interval),
                jitter=r.jitter,
                non_retryable_errors=r.non_retryable_errors,
            ).SerializeToString()
        return hit

    def timeouts(self, t: ResolvedTimeouts) -> bytes:
        hit = self.memo.get(id(t))
        if hit is None:
            hit = self.memo[id(t)] = plan_pb2.ResolvedTimeouts(
                schedule_to_start=_duration(t.schedule_to_start),
                start_to_close=_duration(t.start_to_close),
                heartbeat=_duration(t.heartbeat),
                schedule_to_close=_duration(t.schedule_to_close),
            ).SerializeToString()
        return hit

    def breaker(self, b: ResolvedCircuitBreaker) -> bytes:
        hit = self.memo.get(id(b))
        if hit is None:
            hit = self.memo[id(b)] = plan_pb2.ResolvedCircuitBreaker(
                failure_threshold=b.failure_threshold,
                open_for=_duration(b.open_for),
                half_open_max_calls=b.half_open_max_calls,
                failure_rate_threshold=b.failure_rate_threshold,
                window=_duration(b.window),
                on_open=workflow_pb2.BreakerOpenAction.Value(b.on_open),
                key=None if b.key is None else _expression(b.key),
            ).SerializeToString(deterministic=True)
        return hit

    def resources(self, r: ResourceBinding) -> bytes:
        hit = self.memo.get(id(r))
        if hit is None:
            hit = self.memo[id(r)] = plan_pb2.ResourceBinding(
                cpu_millis=r.cpu_millis,
                memory_bytes=r.memory_bytes,
                gpu=r.gpu,
                require_labels=r.require_labels,
                prefer_labels=r.prefer_labels,
                environment=r.environment,
                secrets=r.secrets,
                custom=r.custom,
                isolate=r.isolate,
            ).SerializeToString(deterministic=True)
        return hit

    def shared_wire(self, n: PlanNode) -> bytes:
        """PlanNode fields retry (13), timeouts (14), circuit_breaker (17) and
        resources (18) in wire format; nodes mostly share these objects."""
        key = (id(n.retry), id(n.timeouts), id(n.circuit_breaker), id(n.resources))
        hit = self.wires.get(key)
        if hit is None:
            parts = [
                _field(b"\x6a", self.retry(n.retry)),
                _field(b"\x72", self.timeouts(n.timeouts)),
                _field(b"\x92\x01", self.resources(n.resources)),
            ]
            if n.circuit_breaker is not None:
                parts.append(_field(b"\x8a\x01", self.breaker(n.circuit_breaker)))
            hit = self.wires[key] = b"".join(parts)
        return hit

    def side(self, s: PlanSideTask) -> bytes:
        out = plan_pb2.PlanSideTask(type=s.type, inherits_inputs=s.inherits_inputs)
        _bindings(s.bindings, out.bindings)
        out.retry.MergeFromString(self.retry(s.retry))
        out.timeouts.MergeFromString(self.timeouts(s.timeouts))
        return out.SerializeToString(deterministic=True)

    def common_wire(self, n: PlanNode) -> bytes:
        """PlanNode fields that nodes usually share (type, builtin, priority, trigger,
        the policies, estimated_duration_ms, description) in wire format, cached."""
        key = common_key(n)
        hit = self.common.get(key)
        if hit is None:
            parts = [
                _string(b"\x1a", n.type),
                _uint(b"\x20", _BUILTIN(n.builtin)),
                _sint(b"\x48", n.priority),
                _uint(b"\x50", _TRIGGER(n.trigger)),
                self.shared_wire(n),
                _uint(b"\x98\x01", n.estimated_duration_ms),
                _string(b"\xa2\x01", n.description),
            ]
            hit = self.common[key] = b"".join(parts)
        return hit

    def node_wire(self, n: PlanNode, ints: list[bytes]) -> bytes:
        """One `ExecutionPlan.nodes` entry (field 9) in wire format.

        Building 100k PlanNode messages with `nodes.add(...)` cost ~0.3 s; the bytes
        of the whole node list parse in one `MergeFromString` call instead. Zero
        values are left out, as protobuf itself does for proto3 scalars."""
        task_id = n.task_id.encode()
        parts = [
            b"\x08" + ints[n.index] if n.index else b"",
            b"\x12" + _varint(len(task_id)) + task_id,
        ]
        if n.upstream:
            packed = b"".join([ints[u] for u in n.upstream])
            parts.append(b"\x2a" + _varint(len(packed)) + packed)
        if n.downstream:
            packed = b"".join([ints[d] for d in n.downstream])
            parts.append(b"\x32" + _varint(len(packed)) + packed)
        if n.stage:
            parts.append(b"\x38" + ints[n.stage])
        if n.critical_path_rank:
            parts.append(b"\x40" + _varint(n.critical_path_rank))
        parts.append(self.common_wire(n))
        if n.condition is not None:
            parts.append(_field(b"\x5a", _expression_bytes(n.condition)))
        if n.bindings:
            binding = self.binding
            parts.extend([binding(name, v) for name, v in items(n.bindings)])
        if n.fallback is not None:
            parts.append(_field(b"\x7a", self.side(n.fallback)))
        if n.compensation is not None:
            parts.append(_field(b"\x82\x01", self.side(n.compensation)))
        if n.runtime:
            parts.append(_runtime_wire(n))
        if n.limit is not None or n.rate_limits or n.cache is not None:
            parts.append(_flow_wire(n))  # rare: a real message, merged in
        if n.budget is not None or n.estimate is not None:
            parts.append(_usage_wire(n))
        return _field(b"\x4a", b"".join(parts))


def _runtime_wire(n: PlanNode) -> bytes:
    """The runtime-plan fields of a node (100-104) in wire format; few nodes have them."""
    out = plan_pb2.PlanNode(max_parallel=n.max_parallel, dynamic=n.dynamic)
    if n.for_each is not None:
        out.for_each.CopyFrom(_expression(n.for_each))
    if n.repeat is not None:
        out.repeat.until.CopyFrom(_expression(n.repeat.until))
        out.repeat.max_iterations = n.repeat.max_iterations
    if n.workflow is not None:
        out.workflow.name = n.workflow.name
        out.workflow.version = n.workflow.version
    return out.SerializeToString(deterministic=True)


def _optional_expression(e: Expression | None) -> plan_pb2.Expression | None:
    return None if e is None else _expression(e)


def _flow_wire(n: PlanNode) -> bytes:
    """PlanNode fields limit (120), rate_limits (121) and cache (122) in wire format."""
    out = plan_pb2.PlanNode()
    if n.limit is not None:
        out.limit.SetInParent()
        out.limit.name = n.limit.name
        out.limit.max = n.limit.max
        if n.limit.key is not None:
            out.limit.key.CopyFrom(_expression(n.limit.key))
    for u in n.rate_limits:
        out.rate_limits.add(
            name=u.name,
            key=_optional_expression(u.key),
            units=u.units,
            units_expression=_optional_expression(u.units_expression),
        )
    if n.cache is not None:
        out.cache.SetInParent()
        if n.cache.key is not None:
            out.cache.key.CopyFrom(_expression(n.cache.key))
        if n.cache.ttl:
            out.cache.ttl.CopyFrom(_duration(n.cache.ttl))
    return out.SerializeToString(deterministic=True)


def _usage_wire(n: PlanNode) -> bytes:
    """A node's budget and estimate (160, 161) in wire format; few nodes have them."""
    out = plan_pb2.PlanNode()
    if n.budget is not None:
        encode_budget(n.budget, out.budget)
    if n.estimate is not None:
        for a in n.estimate.amounts:
            amount = out.estimate.amounts.add(counter=a.counter, amount=a.amount)
            if a.expression is not None:
                amount.expression.CopyFrom(_expression(a.expression))
    return out.SerializeToString(deterministic=True)


_TRIGGER = workflow_pb2.TriggerRule.Value
_BUILTIN = plan_pb2.BuiltinKind.Value
_EDGE = plan_pb2.EdgeKind.Value


def _varint_slow(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Lengths and indexes are nearly always small: a table beats the loop ~5x.
_VARINTS = [_varint_slow(i) for i in range(1 << 14)]


def _varint(n: int) -> bytes:
    return _VARINTS[n] if n < 16384 else _varint_slow(n)


def _uint(tag: bytes, n: int) -> bytes:
    """A varint field, left out when zero (proto3)."""
    return tag + _varint(n) if n else b""


def _sint(tag: bytes, n: int) -> bytes:
    """An int32/int64 varint field: negatives are 10-byte two's complement."""
    return _uint(tag, n if n >= 0 else n + (1 << 64))


def _string(tag: bytes, s: str) -> bytes:
    """A string field, left out when empty (proto3)."""
    return _field(tag, s.encode()) if s else b""


def _ints_table(n: int) -> list[bytes]:
    """Varints of 0..n-1 (indexes, stages), shared by every node of a plan."""
    if n <= len(_VARINTS):
        return _VARINTS
    return _VARINTS + [_varint_slow(i) for i in range(len(_VARINTS), n)]


_EDGES_TAG = b"\x52"  # field 10 (edges), wire type 2


def _edges_wire(plan: Plan, ints: list[bytes]) -> bytes:
    """`ExecutionPlan.edges` in wire format, merged in with one call.

    A plan has ~3 edges per node; one `edges.add(...)` per edge cost ~40% of encoding
    a 100k-node plan. The message parsed from these bytes is the same as the one built
    field by field (the golden and round-trip tests compare them)."""
    kinds: dict[str, bytes] = {}

    def kind(k: str) -> bytes:
        hit = kinds.get(k)
        if hit is None:
            hit = kinds[k] = b"\x18" + _varint(_EDGE(k))
        return hit

    parts = []
    edges = plan.edges
    if isinstance(edges, PlanEdges):  # by source: no PlanEdge object per edge
        order = kind(EDGE_ORDER)
        for source, targets, of in edges.by_source():
            head = b"\x08" + ints[source] + b"\x10"
            ks = repeat(order, len(targets)) if of is None else map(kind, of)
            for target, k in zip(targets, ks, strict=True):
                body = head + ints[target] + k
                parts.append(_EDGES_TAG + ints[len(body)] + body)
        return b"".join(parts)
    for e in edges:
        body = b"\x08" + ints[e.source] + b"\x10" + ints[e.target] + kind(e.kind)
        parts.append(_EDGES_TAG + ints[len(body)] + body)
    return b"".join(parts)


def encode_plan(plan: Plan) -> plan_pb2.ExecutionPlan:
    enc = _Encoder()
    out = plan_pb2.ExecutionPlan(
        plan_id=plan.plan_id,
        workflow_name=plan.workflow_name,
        workflow_version=plan.workflow_version,
        description=plan.description,
        on_failure=workflow_pb2.OnFailure.Value(plan.on_failure),
        max_parallel=plan.max_parallel,
        pause_after_failures=plan.pause_after_failures,
        stage_count=plan.stage_count,
        critical_path_ms=plan.critical_path_ms,
        labels=plan.labels,
        format_version=plan.format_version,
    )
    for i in plan.inputs:
        pi = out.inputs.add(
            name=i.name,
            type=workflow_pb2.InputType.Value(i.type),
            required=i.required,
            description=i.description,
        )
        if i.has_default:
            set_value(pi.default, i.default)
    # Nodes and edges go in as wire-format bytes, parsed in one call each.
    ints = _ints_table(len(plan.nodes) + 1)
    node_wire = enc.node_wire
    nodes = plan.nodes
    for start in range(0, len(nodes), 4096):  # in slices: no second copy of every node
        out.MergeFromString(b"".join([node_wire(n, ints) for n in nodes[start : start + 4096]]))
    if plan.edges:
        out.MergeFromString(_edges_wire(plan, ints))
    for o in plan.outputs:
        _value(o.value, out.outputs.add(name=o.name).value)
    for r in plan.rate_limits:
        out.rate_limits.add(name=r.name, units=r.units, period=_duration(r.period), burst=r.burst)
    if plan.budget is not None:
        encode_budget(plan.budget, out.budget)
    return out


def serialize_plan(plan: Plan) -> bytes:
    """The plan as deterministic protobuf bytes (same plan -> same bytes)."""
    return encode_plan(plan).SerializeToString(deterministic=True)


def encode_diagnostic(d: Diagnostic) -> planner_service_pb2.Diagnostic:
    return planner_service_pb2.Diagnostic(
        code=d.code,
        path=d.path,
        message=d.message,
        severity=_SEVERITY.get(d.severity, planner_service_pb2.SEVERITY_UNSPECIFIED),
    )
