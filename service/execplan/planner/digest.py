"""plan_id: a SHA-256 over a canonical JSON form of the plan.

    plan_id = "sha256:" + hex(sha256(canonical_json(plan).encode("ascii")))

The canonical JSON (so any language can verify a plan_id):

- every dataclass in `plan.py` becomes an object whose keys are its field names, all
  fields present (even empty/zero/null), except `Plan.plan_id`, which is left out,
  and the runtime-plan fields (`PlanNode.for_each`, `max_parallel`, `repeat`,
  `workflow`, `dynamic`; `Expression.reads_variables`), which are present only when
  set (not None/0/false/empty), so plans that do not use them keep their plan_id;
  the flow-control fields added after format 1, which are left out when empty
  (null, [], {}, false) so that plans that do not use them keep their ids:
  `Plan.rate_limits`, `PlanNode.limit`, `.rate_limits`, `.cache`,
  `ResolvedCircuitBreaker.key`, `ResourceBinding.custom`, `.isolate`;
  the same for the usage fields (`Plan.budget`, `PlanNode.budget`, `.estimate`): a
  budget is `{"limits": [[name, limit]...], "on_exceeded": "BUDGET_ACTION_..."}`
  (limits sorted by name), an estimate `{"amounts": [{"counter", "amount",
  "expression"}...]}`;
- ints are JSON integers (durations are integer milliseconds), floats use the
  shortest repr that round-trips (Python `repr`: `2.0`, `0.2`), booleans and null
  as JSON; enums are their proto value names as strings (`"EDGE_KIND_DATA"`);
- tuples are arrays; maps (labels, require/prefer labels) are objects;
- a `BindingValue` is an object with exactly one key, the proto oneof name:
  `{"literal": <json>}`, `{"expression": {...}}`, `{"template": {"parts": [...]}}`
  (each part `{"text": "..."}` or `{"expression": {...}}`),
  `{"struct": {"fields": [<Binding>...]}}`, `{"list": {"items": [<BindingValue>...]}}`;
- serialized with sorted keys, separators `(",", ":")`, `ensure_ascii=True`
  (i.e. Python `json.dumps(obj, sort_keys=True, separators=(",", ":"),
  ensure_ascii=True, allow_nan=False)`).

Literal JSON values were normalised by the parser (integral floats are ints), so the
YAML short form and the proto JSON form of one workflow share one plan_id.
`canonical_json` is the reference implementation (one big `json.dumps`); `plan_id`
streams the same bytes into the hash in slices of nodes, ~6x faster at 100k nodes: a
node is one %-format of a template holding what nodes share (policies, type, ...:
memoised by identity), its own values made column by column with map() so the
loops over nodes run in C; a node with any field beyond the twenty every plan has
is written the generic way. Tests assert both produce identical bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from itertools import compress, repeat
from operator import add, attrgetter, is_, itemgetter, mod
from typing import Any, cast

import orjson
from execplan.planner.plan import (
    EDGE_ORDER,
    Binding,
    BindingList,
    Bindings,
    BindingStruct,
    BindingValue,
    Expression,
    Literal,
    Plan,
    PlanEdge,
    PlanEdges,
    PlanNode,
    PlanRateLimit,
    PlanSideTask,
    ResolvedCache,
    ResolvedCircuitBreaker,
    ResolvedLimit,
    ResolvedRateLimitUse,
    ResolvedRetryPolicy,
    ResolvedTimeouts,
    ResourceBinding,
    Template,
    binding_value,
    fields_beyond,
    items,
    plain_slices,
)
from execplan.usage import Budget

Json = object


class _Canon:
    """Converter with a per-plan memo for objects shared by many nodes."""

    def __init__(self) -> None:
        self.memo: dict[int, Json] = {}

    def expression(self, e: Expression) -> Json:
        key = id(e)
        hit = self.memo.get(key)
        if hit is None:
            hit = self.memo[key] = {
                "source": e.source,
                "reads_tasks": list(e.reads_tasks),
                "reads_inputs": list(e.reads_inputs),
                "reads_execution": e.reads_execution,
            }
            if e.reads_variables:
                hit["reads_variables"] = list(e.reads_variables)
        return hit

    def value(self, v: BindingValue) -> Json:
        if type(v) is Literal:
            return {"literal": v.value}
        if type(v) is Expression:
            return {"expression": self.expression(v)}
        if type(v) is Template:
            return {
                "template": {
                    "parts": [
                        {"text": p} if type(p) is str else {"expression": self.expression(p)}  # type: ignore[arg-type]
                        for p in v.parts
                    ]
                }
            }
        if type(v) is BindingStruct:
            return {"struct": {"fields": self.bindings(v.fields)}}
        assert type(v) is BindingList
        return {"list": {"items": [self.value(x) for x in v.items]}}

    def bindings(self, bs: Sequence[Binding]) -> list[Json]:
        return [{"name": b.name, "value": self.value(b.value)} for b in bs]

    def retry(self, r: ResolvedRetryPolicy) -> Json:
        key = id(r)
        hit = self.memo.get(key)
        if hit is None:
            hit = self.memo[key] = {
                "max_attempts": r.max_attempts,
                "initial_interval": r.initial_interval,
                "backoff_coefficient": r.backoff_coefficient,
                "max_interval": r.max_interval,
                "jitter": r.jitter,
                "non_retryable_errors": list(r.non_retryable_errors),
            }
        return hit

    def timeouts(self, t: ResolvedTimeouts) -> Json:
        key = id(t)
        hit = self.memo.get(key)
        if hit is None:
            hit = self.memo[key] = {
                "schedule_to_start": t.schedule_to_start,
                "start_to_close": t.start_to_close,
                "heartbeat": t.heartbeat,
                "schedule_to_close": t.schedule_to_close,
            }
        return hit

    def breaker(self, b: ResolvedCircuitBreaker | None) -> Json:
        if b is None:
            return None
        key = id(b)
        hit = self.memo.get(key)
        if hit is None:
            hit = self.memo[key] = {
                "failure_threshold": b.failure_threshold,
                "open_for": b.open_for,
                "half_open_max_calls": b.half_open_max_calls,
                "failure_rate_threshold": b.failure_rate_threshold,
                "window": b.window,
                "on_open": b.on_open,
            }
            if b.key is not None:
                hit["key"] = self.expression(b.key)
        return hit

    def resources(self, r: ResourceBinding) -> Json:
        key = id(r)
        hit = self.memo.get(key)
        if hit is None:
            hit = self.memo[key] = {
                "cpu_millis": r.cpu_millis,
                "memory_bytes": r.memory_bytes,
                "gpu": r.gpu,
                "require_labels": r.require_labels,
                "prefer_labels": r.prefer_labels,
                "environment": r.environment,
                "secrets": list(r.secrets),
            }
            if r.custom:
                hit["custom"] = r.custom
            if r.isolate:
                hit["isolate"] = True
        return hit

    def optional_expression(self, e: Expression | None) -> Json:
        return None if e is None else self.expression(e)

    def limit(self, lim: ResolvedLimit) -> Json:
        return {"name": lim.name, "key": self.optional_expression(lim.key), "max": lim.max}

    def rate_limit_use(self, u: ResolvedRateLimitUse) -> Json:
        return {
            "name": u.name,
            "key": self.optional_expression(u.key),
            "units": u.units,
            "units_expression": self.optional_expression(u.units_expression),
        }

    def cache(self, c: ResolvedCache) -> Json:
        return {"key": self.optional_expression(c.key), "ttl": c.ttl}

    def flow(self, n: PlanNode) -> dict[str, Json]:
        """The node's flow-control keys, only those that are set."""
        out: dict[str, Json] = {}
        if n.limit is not None:
            out["limit"] = self.limit(n.limit)
        if n.rate_limits:
            out["rate_limits"] = [self.rate_limit_use(u) for u in n.rate_limits]
        if n.cache is not None:
            out["cache"] = self.cache(n.cache)
        return out

    @staticmethod
    def rate_limit(r: PlanRateLimit) -> Json:
        return {"name": r.name, "units": r.units, "period": r.period, "burst": r.burst}

    def side(self, s: PlanSideTask | None) -> Json:
        if s is None:
            return None
        return {
            "type": s.type,
            "bindings": self.bindings(s.bindings),
            "retry": self.retry(s.retry),
            "timeouts": self.timeouts(s.timeouts),
            "inherits_inputs": s.inherits_inputs,
        }

    def node(self, n: PlanNode) -> Json:
        return {
            "index": n.index,
            "task_id": n.task_id,
            "type": n.type,
            "builtin": n.builtin,
            "upstream": n.upstream,
            "downstream": n.downstream,
            "stage": n.stage,
            "critical_path_rank": n.critical_path_rank,
            "priority": n.priority,
            "trigger": n.trigger,
            "condition": None if n.condition is None else self.expression(n.condition),
            "bindings": self.bindings(n.bindings) if n.bindings else [],
            "retry": self.retry(n.retry),
            "timeouts": self.timeouts(n.timeouts),
            "fallback": self.side(n.fallback),
            "compensation": self.side(n.compensation),
            "circuit_breaker": self.breaker(n.circuit_breaker),
            "resources": self.resources(n.resources),
            "estimated_duration_ms": n.estimated_duration_ms,
            "description": n.description,
            **self.runtime(n),
            **self.flow(n),
            **self.usage(n),
        }

    def usage(self, n: PlanNode) -> dict[str, Json]:
        """The budget and estimate of a node, when set (see the module docstring)."""
        out: dict[str, Json] = {}
        if n.budget is not None:
            out["budget"] = _budget(n.budget)
        if n.estimate is not None:
            out["estimate"] = {
                "amounts": [
                    {
                        "counter": a.counter,
                        "amount": a.amount,
                        "expression": None
                        if a.expression is None
                        else self.expression(a.expression),
                    }
                    for a in n.estimate.amounts
                ]
            }
        return out

    def runtime(self, n: PlanNode) -> dict[str, Json]:
        """The runtime-plan fields of a node that are set (see the module docstring)."""
        out: dict[str, Json] = {}
        if n.for_each is not None:
            out["for_each"] = self.expression(n.for_each)
        if n.max_parallel:
            out["max_parallel"] = n.max_parallel
        if n.repeat is not None:
            out["repeat"] = {
                "until": self.expression(n.repeat.until),
                "max_iterations": n.repeat.max_iterations,
            }
        if n.workflow is not None:
            out["workflow"] = {"name": n.workflow.name, "version": n.workflow.version}
        if n.dynamic:
            out["dynamic"] = True
        return out

    def plan(self, p: Plan) -> Json:
        return {
            "workflow_name": p.workflow_name,
            "workflow_version": p.workflow_version,
            "description": p.description,
            "inputs": [
                {
                    "name": i.name,
                    "type": i.type,
                    "required": i.required,
                    "default": i.default,
                    "has_default": i.has_default,
                    "description": i.description,
                }
                for i in p.inputs
            ],
            "on_failure": p.on_failure,
            "max_parallel": p.max_parallel,
            "pause_after_failures": p.pause_after_failures,
            "nodes": [self.node(n) for n in p.nodes],
            "edges": [{"source": e.source, "target": e.target, "kind": e.kind} for e in p.edges],
            "outputs": [{"name": o.name, "value": self.value(o.value)} for o in p.outputs],
            "stage_count": p.stage_count,
            "critical_path_ms": p.critical_path_ms,
            "labels": p.labels,
            "format_version": p.format_version,
            **(
                {"rate_limits": [self.rate_limit(r) for r in p.rate_limits]}
                if p.rate_limits
                else {}
            ),
            **({} if p.budget is None else {"budget": _budget(p.budget)}),
        }


def _budget(b: Budget) -> Json:
    return {"limits": [[name, limit] for name, limit in b.limits], "on_exceeded": b.on_exceeded}


def canonical_json(plan: Plan) -> str:
    """The canonical serialization described in the module docstring."""
    return json.dumps(
        _Canon().plan(plan),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )


_dumps = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
).encode
_quote: Callable[[str], str] = json.encoder.encode_basestring_ascii


_SCALAR = frozenset({int, str, bool, type(None)})


def _scalar(v: object) -> str:
    if type(v) is str:
        return _quote(v)
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    return str(v)


class _Stream:
    """Writes the canonical JSON of a plan in chunks, with shared parts encoded once."""

    def __init__(self) -> None:
        self.canon = _Canon()
        self.text: dict[int, str] = {}
        self.templates: dict[tuple[object, ...], str] = {}
        self.binding_text: dict[tuple[str, int], str] = {}
        self.literal_heads: dict[str, str] = {}
        self.plain_templates: dict[str, str] = {}  # of plain nodes, by type

    def shared(self, obj: object, convert: Callable[[Any], Json]) -> str:
        key = id(obj)
        hit = self.text.get(key)
        if hit is None:
            hit = self.text[key] = _dumps(convert(obj))
        return hit

    def expression(self, e: Expression) -> str:
        """An expression's canonical text, once per object; written directly, since
        expressions are often all distinct (the encoder costs ~10 us a call)."""
        key = id(e)
        hit = self.text.get(key)
        if hit is None:
            hit = self.text[key] = _expression_text(e)
        return hit

    def bindings(self, bs: Sequence[Binding]) -> str:
        """Canonical text of bindings; plain literals and shared expressions are
        written directly (calling the JSON encoder per node dominated the digest),
        and the text before each literal is reused by name."""
        pairs: Iterable[tuple[str, object]]
        if type(bs) is Bindings:
            if not bs.names:  # not `bs`: its __len__ is a Python call
                return "[]"
            pairs = zip(bs.names, bs.values, strict=True)
        elif not bs:
            return "[]"
        else:
            pairs = items(bs)
        out = []
        for name, raw in pairs:
            v = raw.value if type(raw) is Literal else raw
            t = type(v)
            if t is Expression:
                key = (name, id(v))
                text = self.binding_text.get(key)
                if text is None:
                    expr = self.expression(v)  # type: ignore[arg-type]
                    text = self.binding_text[key] = (
                        '{"name":' + _quote(name) + ',"value":{"expression":' + expr + "}}"
                    )
            elif t in _SCALAR:  # a plain literal
                head = self.literal_heads.get(name)
                if head is None:
                    head = self.literal_heads[name] = (
                        '{"name":' + _quote(name) + ',"value":{"literal":'
                    )
                text = head + (str(v) if t is int else _scalar(v)) + "}}"
            else:
                value = _dumps(self.canon.value(binding_value(v)))
                text = '{"name":' + _quote(name) + ',"value":' + value + "}"
            out.append(text)
        return "[" + ",".join(out) + "]"

    def condition(self, e: Expression | None) -> str:
        return "null" if e is None else self.expression(e)

    def side(self, s: PlanSideTask | None) -> str:
        return "null" if s is None else _dumps(self.canon.side(s))

    def template(self, n: PlanNode) -> str:
        """The node's %-template with the values nodes usually share filled in.

        Keys in sorted order; builtin, circuit_breaker, priority, resources, retry,
        timeouts, trigger and type are baked in (cached per combination), so a node
        costs one %-format of its own values (formatting each shared value per node
        dominated the digest). A node with a field set beyond those the template
        holds (runtime plans, flow control, any field added later) gets its whole
        text instead: the generic form, same bytes."""
        if _others(n) != _OTHER_DEFAULTS:
            # "%.0s" writes nothing: the node's own values are already in its text.
            return _dumps(self.canon.node(n)).replace("%", "%%") + "%.0s" * _SLOTS
        key = _template_key(n)
        hit = self.templates.get(key)
        if hit is None:
            c = self.canon
            breaker = "null" if n.circuit_breaker is None else _dumps(c.breaker(n.circuit_breaker))
            fixed = {
                "builtin": _quote(n.builtin),
                "circuit_breaker": breaker,
                "estimated_duration_ms": str(n.estimated_duration_ms),
                "priority": str(n.priority),
                "resources": _dumps(c.resources(n.resources)),
                "retry": _dumps(c.retry(n.retry)),
                "timeouts": _dumps(c.timeouts(n.timeouts)),
                "trigger": _quote(n.trigger),
                "type": _quote(n.type),
            }
            # Every other key is a %s slot (upstream and downstream: `_int_lists`).
            fields = [
                f'"{name}":' + (fixed[name].replace("%", "%%") if name in fixed else "%s")
                for name in _NODE_KEYS
            ]
            hit = self.templates[key] = "{" + ",".join(fields) + "}"
        return hit

    def template_of_each(self, nodes: tuple[PlanNode, ...], plain: bool) -> list[str]:
        """`template(n)` of each node: the cached ones found by keys made in C.
        `plain`: every node is plain (`PlanNodes`), so its template depends on its
        type alone (~1 us per node less than the key).

        A miss is looked up again before a template is made: in the first chunk
        every node misses (the cache fills as the misses are made), and making
        each one again cost a 1,000-task compile ~10% more."""
        if plain:
            by_type = self.plain_templates
            types = list(map(_get_type, nodes))
            found = list(map(by_type.get, types))
            for j in compress(range(len(found)), map(is_, found, repeat(None))):
                found[j] = by_type.get(types[j]) or by_type.setdefault(
                    types[j], self.template(nodes[j])
                )
            return found  # type: ignore[return-value]
        keys = list(map(_template_key, nodes))
        found = list(map(self.templates.get, keys))
        templates = self.templates
        for j in compress(range(len(found)), map(is_, found, repeat(None))):
            found[j] = templates.get(keys[j]) or self.template(nodes[j])
        return found  # type: ignore[return-value]

    def nodes(
        self, nodes: tuple[PlanNode, ...], downs: list[str], ups: list[str], plain: bool
    ) -> Iterator[str]:
        """The text of each node: its template %-formatted with its own values, each
        column of which is made by `map` (so the loops over nodes run in C); `downs`
        and `ups` are the nodes' `_int_lists`; `plain` as for `template_of_each`."""
        values = zip(
            map(self.bindings, map(_get_bindings, nodes)),
            _or_null(self.side, list(map(_get_compensation, nodes))),
            _or_null(self.condition, list(map(_get_condition, nodes))),
            map(_get_rank, nodes),
            map(_quote, map(_get_description, nodes)),
            downs,
            _or_null(self.side, list(map(_get_fallback, nodes))),
            map(_get_index, nodes),
            map(_get_stage, nodes),
            map(_quote, map(_get_task_id, nodes)),
            ups,
            strict=True,
        )
        return map(mod, self.template_of_each(nodes, plain), values)


def _or_null(write: Callable[[Any], str], values: list[Any]) -> Iterable[str]:
    """`map(write, values)` for a field that is None in most plans (a side task, a
    condition): "null" for each, without a call per node, when all are None."""
    if values.count(None) == len(values):
        return repeat("null", len(values))
    return map(write, values)


# The keys of a node in the canonical JSON, sorted; the template writes the first
# twenty (the fields every plan has) and the values fill in _SLOTS of them.
_NODE_KEYS = sorted(
    [
        "bindings",
        "builtin",
        "circuit_breaker",
        "compensation",
        "condition",
        "critical_path_rank",
        "description",
        "downstream",
        "estimated_duration_ms",
        "fallback",
        "index",
        "priority",
        "resources",
        "retry",
        "stage",
        "task_id",
        "timeouts",
        "trigger",
        "type",
        "upstream",
    ]
)
_SLOTS = 11
(
    _get_bindings,
    _get_compensation,
    _get_condition,
    _get_rank,
    _get_description,
    _get_downstream,
    _get_fallback,
    _get_index,
    _get_stage,
    _get_task_id,
    _get_upstream,
) = (
    attrgetter(name)
    for name in (
        "bindings",
        "compensation",
        "condition",
        "critical_path_rank",
        "description",
        "downstream",
        "fallback",
        "index",
        "stage",
        "task_id",
        "upstream",
    )
)
# Any other field of a node is written only when set (module docstring), by the
# generic form: a node qualifies for the template when all of them are unset.
_others, _OTHER_DEFAULTS = fields_beyond(_NODE_KEYS)


def _template_key(n: PlanNode) -> tuple[object, ...]:
    """What a node's template depends on: whether it is a plain node (no field beyond
    the twenty; a generic node's "template" is its own text, never found by key), its
    shared values, and the identities of its shared policy objects."""
    return (
        _others(n) == _OTHER_DEFAULTS,
        _get_shared(n),
        id(n.circuit_breaker),
        id(n.resources),
        id(n.retry),
        id(n.timeouts),
    )


_get_shared = attrgetter("builtin", "priority", "trigger", "type", "estimated_duration_ms")
_get_type = attrgetter("type")


def _int_lists(lists: Iterable[tuple[int, ...]]) -> list[str]:
    """ "[1,2,3]" for each tuple of ints: orjson writes a tuple of ints exactly as
    the canonical form does, ~2.5x faster than joining str() of each number by map()
    (~0.05 s per column at 100k nodes)."""
    return list(map(bytes.decode, map(orjson.dumps, lists)))


def _expression_text(e: Expression) -> str:
    """`_dumps(_Canon().expression(e))`, written out (keys in sorted order)."""
    out = [
        '{"reads_execution":',
        "true" if e.reads_execution else "false",
        ',"reads_inputs":[',
        ",".join(map(_quote, e.reads_inputs)),
        '],"reads_tasks":[',
        ",".join(map(_quote, e.reads_tasks)),
        "]",
    ]
    if e.reads_variables:
        out += [',"reads_variables":[', ",".join(map(_quote, e.reads_variables)), "]"]
    out += [',"source":', _quote(e.source), "}"]
    return "".join(out)


# What is inside the brackets of a JSON list.
_inner: Callable[[str], str] = itemgetter(slice(1, -1))
_EDGE_HEAD = '{"kind":' + _quote(EDGE_ORDER) + ',"source":%d,"target":'


def _edges_text(edges: Sequence[PlanEdge], downs: list[str] | None) -> Iterator[str]:
    """The canonical text of the edges (keys kind, source, target), in pieces.

    ~300k edges at 100k tasks: a node's ORDER edges are its downstream text ("[5,9]",
    from `_int_lists`, given as `downs` for `edges.nodes`) without its brackets, with
    each comma turned into the text between two edges, all of it by map() in C; only
    the few nodes with a data edge are written edge by edge. A slice of nodes at a
    time: the whole text at once (~21 MB, and its lists of 100k strings) was most
    of the ~90 MB a 100k-task plan_id added to the compile's peak memory."""
    if not isinstance(edges, PlanEdges) or downs is None:
        yield _dumps([{"source": e.source, "target": e.target, "kind": e.kind} for e in edges])
        return
    nodes, kinds = edges.nodes, edges.kinds
    opened = False
    for start in range(0, len(nodes), _SLICE):
        end = start + _SLICE
        keep = list(map(bool, map(_get_downstream, nodes[start:end])))
        sources = list(compress(map(_get_index, nodes[start:end]), keep))
        if not sources:
            continue
        targets = list(map(_inner, compress(downs[start:end], keep)))
        heads = list(map(_EDGE_HEAD.__mod__, sources))
        # Each text lacks its last "}": the joins put them back.
        texts = list(
            map(add, heads, map(str.replace, targets, repeat(","), map("},".__add__, heads)))
        )
        for j in compress(range(len(sources)), map(kinds.__contains__, sources)):
            source = sources[j]
            texts[j] = "},".join(
                f'{{"kind":{_quote(kind)},"source":{source},"target":{target}'
                for target, kind in zip(targets[j].split(","), kinds[source], strict=True)
            )
        yield "}," if opened else "["
        yield "},".join(texts)
        opened = True
    yield "}]" if opened else "[]"


_SLICE = 2048  # nodes per slice of text hashed at once


def plan_id(plan: Plan) -> str:
    """ "sha256:<hex>" of `canonical_json(plan)`, computed without building it whole.
    A slice of nodes that `PlanNodes` says are all plain finds their templates by
    type (`_Stream.template_of_each`)."""
    h = hashlib.sha256()
    head = dict(cast(dict[str, Json], _Canon().plan(replace(plan, nodes=(), edges=()))))
    # Keys sorted; "edges" and "nodes" are streamed in their places.
    keys = sorted(head)
    stream = _Stream()
    nodes = plan.nodes
    downs = _int_lists(map(_get_downstream, nodes)) if nodes else []
    ups = _int_lists(map(_get_upstream, nodes)) if nodes else []
    chunk: list[str] = ["{"]
    for i, key in enumerate(keys):
        chunk.append(("," if i else "") + _quote(key) + ":")
        if key == "nodes":
            chunk.append("[")
            plain = plain_slices(nodes, _SLICE)
            for start in range(0, len(nodes), _SLICE):
                end = start + _SLICE
                text = ",".join(
                    stream.nodes(
                        nodes[start:end], downs[start:end], ups[start:end], plain[start // _SLICE]
                    )
                )
                if start:
                    chunk.append(",")
                # What came before the slice, then the slice itself: hashing them
                # one after the other spares a copy of the ~2 MB of text.
                h.update("".join(chunk).encode("ascii"))
                h.update(text.encode("ascii"))
                chunk = []
            chunk.append("]")
        elif key == "edges":
            edges = plan.edges
            same = isinstance(edges, PlanEdges) and edges.nodes is nodes
            h.update("".join(chunk).encode("ascii"))
            chunk = []
            for piece in _edges_text(edges, downs if same else None):
                h.update(piece.encode("ascii"))
        else:
            chunk.append(_dumps(head[key]))
    chunk.append("}")
    h.update("".join(chunk).encode("ascii"))
    return "sha256:" + h.hexdigest()
