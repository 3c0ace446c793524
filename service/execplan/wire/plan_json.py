"""The Protobuf JSON of a plan, written piece by piece (`execplan plan --format json`).

    write_plan_json(plan, write)        # write(str) gets the text in chunks

The text is exactly `json_format.MessageToJson(encode_plan(plan),
preserving_proto_field_name=True)` plus a final newline (indent 2, ASCII, fields in
field-number order, zero values left out, int64 as strings, enums by name), except
that map entries and Struct members are in key order (`json_order.py`): protobuf
iterates them in an order that changes from process to process. It is
made without building the `ExecutionPlan` message, a dict of the plan or the whole
string: at 100,000 tasks those took ~15 s and ~1.5 GiB beside a ~2 s compile.

How: everything but `nodes` and `edges` is the real thing (the message of the plan
without them, through `MessageToDict`), so plan-level fields need nothing here. A
node is written from a template: the fields nodes share (type, policies, ...) are
rendered once per combination from the same wire bytes `encode_plan` writes
(`_Encoder.common_wire`), and only the node's own values (index, task id, edges,
stage, rank, condition, bindings, side tasks) are formatted per node. A node with
any other field set (a runtime-plan field, or a field this module does not know
of) is rendered the slow, sure way: its own message through `MessageToDict`. The
tests compare the output with `MessageToJson`'s, maps put in key order, on every
golden plan and on generated ones.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import astuple, fields, replace
from itertools import compress, repeat
from operator import add, attrgetter, contains, itemgetter, not_
from typing import Any

import orjson
from execplan.planner import Binding, Expression, Literal, Plan, PlanNode
from execplan.planner.plan import (
    EDGE_ORDER,
    Bindings,
    PlanEdges,
    binding_value,
    fields_beyond,
    items,
    plain_slices,
)
from execplan.v1 import plan_pb2
from execplan.wire.json_order import message_dict

# The codec's own pieces, so both write a node's shared fields from the same bytes.
from execplan.wire.plan_codec import (
    _binding_wire,
    _Encoder,
    _expression_bytes,
    _ints_table,
    common_key,
    encode_plan,
)

Write = Callable[[str], object]

_quote: Callable[[str], str] = json.encoder.encode_basestring_ascii
# MessageToJson is json.dumps(MessageToDict(...), indent=2), ASCII by default.
_dumps = json.JSONEncoder(indent=2, ensure_ascii=True).encode
_CHUNK = 1024  # nodes or edges per write


def _pad(depth: int) -> str:
    return "  " * depth


def _render(obj: object, depth: int) -> str:
    """`json.dumps(obj, indent=2)` as it appears nested `depth` levels deep."""
    text = _dumps(obj)
    # A JSON string never holds a raw newline, so every "\n" is layout.
    return text.replace("\n", "\n" + _pad(depth)) if depth else text


def _member(name: str, obj: object, depth: int) -> str:
    """`"name": value` as a member of an object whose members are at `depth`."""
    return f"{_pad(depth)}{_quote(name)}: {_render(obj, depth)}"


def _object(members: list[str], depth: int) -> str:
    """An object whose members (already rendered) are at `depth`."""
    if not members:
        return "{}"
    return "{\n" + ",\n".join(members) + "\n" + _pad(depth - 1) + "}"


# PlanNode fields the fast path writes; a node with any other field set goes the
# generic way (so a field added to the plan later is never silently left out).
_FAST_FIELDS = frozenset(
    {
        "index",
        "task_id",
        "type",
        "builtin",
        "upstream",
        "downstream",
        "stage",
        "critical_path_rank",
        "priority",
        "trigger",
        "condition",
        "bindings",
        "retry",
        "timeouts",
        "fallback",
        "compensation",
        "circuit_breaker",
        "resources",
        "estimated_duration_ms",
        "description",
    }
)
_others, _OTHER_DEFAULTS = fields_beyond(_FAST_FIELDS)

# Field numbers of the per-node fields: the shared ones fall in the gaps between them.
_NUMBER = {f.name: f.number for f in plan_pb2.PlanNode.DESCRIPTOR.fields}
_GAPS = ((_NUMBER["task_id"], _NUMBER["upstream"]),
         (_NUMBER["critical_path_rank"], _NUMBER["condition"]),
         (_NUMBER["bindings"], _NUMBER["fallback"]),
         (_NUMBER["compensation"], 1 << 29))  # fmt: skip

# Nodes are items of `nodes` (depth 2); their members are at depth 3.
_NODE = 3
_P3, _P4, _P5, _P6 = _pad(3), _pad(4), _pad(5), _pad(6)


class _NodeWriter:
    """Renders nodes; caches what nodes share (by object identity or wire bytes)."""

    def __init__(self, plan: Plan) -> None:
        self.encoder = _Encoder()
        self.count = len(plan.nodes)
        self.ints: list[bytes] | None = None  # varints, for the generic path only
        self.groups: dict[bytes, tuple[str, str, str, str] | None] = {}
        self.expressions: dict[tuple[int, int], str] = {}
        self.bindings: dict[tuple[str, int], str] = {}
        self.literal_heads: dict[str, str] = {}
        self.sides: dict[bytes, str] = {}
        # Node's shared fields (as `_Encoder.common_wire` keys them) -> `shared()`.
        self.by_key: dict[tuple[object, ...], tuple[str, str, str, str] | None] = {}
        self.by_type: dict[str, tuple[str, str, str, str] | None] = {}  # plain nodes'
        self.plain = False  # whether the nodes `node` gets now are all plain

    def node(self, n: PlanNode, ups: str, downs: str) -> str:
        """One item of `nodes`, indented as in the whole plan's JSON; `ups` and
        `downs` are its upstream and downstream lists as `_numbers` writes them."""
        if self.plain:
            # A plain node (PlanNodes): its shared fields found by its type, the
            # only one of them that differs between plain nodes.
            groups = self.by_type.get(n.type, _UNKNOWN)
            if groups is _UNKNOWN:
                groups = self.by_type[n.type] = self.shared(n)
        else:
            if _others(n) != _OTHER_DEFAULTS:
                return self.generic(n)
            # The key of `_Encoder.common_wire`: the same key, the same shared fields.
            key = common_key(n)
            groups = self.by_key.get(key, _UNKNOWN)
            if groups is _UNKNOWN:
                groups = self.by_key[key] = self.shared(n)
        if groups is None:
            return self.generic(n)
        g1, g2, g3, g4 = groups
        out = [f'{_P3}"index": {n.index}'] if n.index else []
        out.append(f'{_P3}"task_id": {_quote(n.task_id)}')
        if g1:
            out.append(g1)
        if n.upstream:
            out.append(f'{_P3}"upstream": {ups}')
        if n.downstream:
            out.append(f'{_P3}"downstream": {downs}')
        if n.stage:
            out.append(f'{_P3}"stage": {n.stage}')
        if n.critical_path_rank:
            out.append(f'{_P3}"critical_path_rank": "{n.critical_path_rank}"')
        if g2:
            out.append(g2)
        if n.condition is not None:
            out.append(f'{_P3}"condition": ' + self.expression(n.condition, _NODE))
        bs = n.bindings
        if bs.names if type(bs) is Bindings else bs:
            out.append(f'{_P3}"bindings": [\n' + self.binding_items(bs) + f"\n{_P3}]")
        if g3:
            out.append(g3)
        if n.fallback is not None:
            out.append(f'{_P3}"fallback": ' + self.side(self.encoder.side(n.fallback)))
        if n.compensation is not None:
            out.append(f'{_P3}"compensation": ' + self.side(self.encoder.side(n.compensation)))
        if g4:
            out.append(g4)
        return _P2 + "{\n" + ",\n".join(out) + "\n" + _P2 + "}"

    def binding_items(self, bs: Sequence[Binding]) -> str:
        """The items of a node's `bindings`: `binding()` of each, with its usual
        cases (a shared expression, a string or an int literal) inline."""
        if type(bs) is not Bindings:
            return ",\n".join([self.binding(name, v) for name, v in items(bs)])
        expressions, heads = self.bindings, self.literal_heads
        texts = []
        for name, v in zip(bs.names, bs.values, strict=True):
            t = type(v)
            hit = None
            if t is Expression:
                hit = expressions.get((name, id(v)))
            elif t is int or t is str:
                head = heads.get(name)
                if head is not None:
                    # As binding(): an int is a Value's number_value.
                    text = repr(float(v)) if t is int else _quote(v)  # type: ignore[arg-type]
                    hit = head + text + _LITERAL_TAIL
            texts.append(self.binding(name, v) if hit is None else hit)
        return ",\n".join(texts)

    def generic(self, n: PlanNode) -> str:
        if self.ints is None:
            self.ints = _ints_table(self.count + 1)
        wire = self.encoder.node_wire(n, self.ints)
        msg = plan_pb2.ExecutionPlan.FromString(wire).nodes[0]
        return _P2 + _render(message_dict(msg), 2)

    def shared(self, n: PlanNode) -> tuple[str, str, str, str] | None:
        """The rendered shared fields of `n`, in four runs that sit between its own
        fields; None when one of them would not fit a gap (then: generic)."""
        wire = self.encoder.common_wire(n)
        if wire in self.groups:
            return self.groups[wire]
        runs: list[list[str]] = [[], [], [], []]
        found: tuple[str, str, str, str] | None = None
        for name, value in message_dict(plan_pb2.PlanNode.FromString(wire)).items():
            number = _NUMBER[name]
            gap = next((i for i, (lo, hi) in enumerate(_GAPS) if lo < number < hi), None)
            if gap is None:
                break
            runs[gap].append(_member(name, value, _NODE))
        else:
            found = (",\n".join(runs[0]), ",\n".join(runs[1]), ",\n".join(runs[2]),
                     ",\n".join(runs[3]))  # fmt: skip
        self.groups[wire] = found
        return found

    def expression(self, e: Expression, depth: int) -> str:
        key = (id(e), depth)  # the plan keeps e alive, so its id is stable
        hit = self.expressions.get(key)
        if hit is None:
            hit = self.expressions[key] = _expression(e, depth)
        return hit

    def binding(self, name: str, raw: object) -> str:
        """One item of a node's `bindings` (depth 4; its members at depth 5), from
        its value as `items` gives it."""
        v = raw.value if type(raw) is Literal else raw
        t = type(v)
        if t is Expression:
            key = (name, id(v))
            hit = self.bindings.get(key)
            if hit is None:
                hit = self.bindings[key] = (
                    f'{_P4}{{\n{_P5}"name": {_quote(name)},\n{_P5}"value": {{\n'
                    f'{_P6}"expression": {self.expression(v, 6)}\n{_P5}}}\n{_P4}}}'  # type: ignore[arg-type]
                )
            return hit
        text = None
        if t is str:
            text = _quote(v)  # type: ignore[arg-type]
        elif (t is int or t is float) and math.isfinite(v):  # type: ignore[arg-type]
            text = repr(float(v))  # type: ignore[arg-type]  # Value.number_value
        if text is not None:
            head = self.literal_heads.get(name)
            if head is None:
                head = self.literal_heads[name] = (
                    f'{_P4}{{\n{_P5}"name": {_quote(name)},\n{_P5}"value": {{\n{_P6}"literal": '
                )
            return head + text + _LITERAL_TAIL
        # Anything else as encode_plan writes it (struct keys sorted, as on the wire).
        wire = _binding_wire(Binding(name, binding_value(v)))
        msg = plan_pb2.PlanNode.FromString(wire).bindings[0]
        return _P4 + _render(message_dict(msg), 4)

    def side(self, wire: bytes) -> str:
        hit = self.sides.get(wire)
        if hit is None:
            hit = self.sides[wire] = _render(
                message_dict(plan_pb2.PlanSideTask.FromString(wire)), _NODE
            )
        return hit


_P2 = _pad(2)
_LITERAL_TAIL = f"\n{_P5}}}\n{_P4}}}"  # after a literal binding's value
_UNKNOWN: Any = object()


_inner: Callable[[str], str] = itemgetter(slice(1, -1))  # inside a JSON list's brackets
_NUMBER_BREAK = "\n" + _P3  # a line break inside a node's member


def _numbers(lists: Iterable[tuple[int, ...]]) -> list[str]:
    """Each tuple of ints as the value of a node's member (a number a line): orjson
    writes the list at depth 0, and each line break gains a node member's indent.
    ~1.6x faster than joining str() of each number by map() (all of it in C)."""
    dumped = map(orjson.dumps, lists, repeat(None), repeat(orjson.OPT_INDENT_2))
    return list(map(str.replace, map(bytes.decode, dumped), repeat("\n"), repeat(_NUMBER_BREAK)))


# Expression fields in field-number order: repeated strings, then the flag. Each
# expression is distinct in the worst case (10k at 100k tasks in the benchmark), so
# it is written directly: json's indenting encoder is pure Python (~30 us each).
_EXPRESSION_FIELDS = ("source", "reads_tasks", "reads_inputs", "reads_execution", "reads_variables")
_FAST_EXPRESSION = tuple(f.name for f in fields(Expression)) == _EXPRESSION_FIELDS and [
    f.name for f in plan_pb2.Expression.DESCRIPTOR.fields
] == list(_EXPRESSION_FIELDS)


def _expression(e: Expression, depth: int) -> str:
    """An Expression message's JSON as the value of a member at `depth`."""
    if not _FAST_EXPRESSION:
        return _render(message_dict(plan_pb2.Expression.FromString(_expression_bytes(e))), depth)
    pad, inner = _pad(depth + 1), _pad(depth + 2)
    out = [f'{pad}"source": {_quote(e.source)}'] if e.source else []
    for name, values in (("reads_tasks", e.reads_tasks), ("reads_inputs", e.reads_inputs)):
        if values:
            items = f",\n{inner}".join(map(_quote, values))
            out.append(f'{pad}"{name}": [\n{inner}{items}\n{pad}]')
    if e.reads_execution:
        out.append(f'{pad}"reads_execution": true')
    if e.reads_variables:
        items = f",\n{inner}".join(map(_quote, e.reads_variables))
        out.append(f'{pad}"reads_variables": [\n{inner}{items}\n{pad}]')
    return _object(out, depth + 1)


def _edges(plan: Plan, write: Write) -> None:
    names: dict[str, str] = {}

    def tail(kind: str) -> str:  # what follows the target: the kind, the closing brace
        hit = names.get(kind)
        if hit is None:
            name = plan_pb2.EdgeKind.Name(plan_pb2.EdgeKind.Value(kind))
            hit = names[kind] = f',\n{_P3}"kind": "{name}"\n{_P2}}}'
        return hit

    def one(source: int, target: int, kind: str) -> str:
        if source and target:
            return f'{_P2}{{\n{_P3}"source": {source},\n{_P3}"target": {target}' + tail(kind)
        msg = plan_pb2.PlanEdge(source=source, target=target)  # a zero is left out
        msg.kind = plan_pb2.EdgeKind.Value(kind)
        return _P2 + _render(message_dict(msg), 2)

    edges = plan.edges
    if not isinstance(edges, PlanEdges):
        for start in range(0, len(edges), _CHUNK * 4):
            part = edges[start : start + _CHUNK * 4]
            write((",\n" if start else "") + ",\n".join([one(*astuple(e)) for e in part]))
        return
    # By source node: a node's ORDER edges are its targets joined by the text that
    # ends one edge and starts the next (map() in C); data edges one by one.
    order = tail(EDGE_ORDER)
    nodes = edges.nodes
    first = True
    kinds = edges.kinds
    for start in range(0, len(nodes), _CHUNK):
        chunk = list(
            compress(nodes[start : start + _CHUNK], map(_down, nodes[start : start + _CHUNK]))
        )
        sources, downs = list(map(_index, chunk)), list(map(_down, chunk))
        heads = list(map(_EDGE_HEAD.__mod__, sources))
        seps = map(add, repeat(order + ",\n"), heads)
        # "[5,9]" from orjson, without its brackets, each comma turned into `seps`.
        targets = map(_inner, map(bytes.decode, map(orjson.dumps, downs)))
        texts = list(map(add, map(add, heads, map(str.replace, targets, repeat(","), seps)),
                         repeat(order)))  # fmt: skip
        # Edges with data, or a zero source or target, are written one by one.
        few = range(len(chunk))
        odd = set(compress(few, map(kinds.__contains__, sources)))
        odd.update(compress(few, map(not_, sources)))
        odd.update(compress(few, map(contains, downs, repeat(0))))
        for j in sorted(odd):
            ks = kinds.get(sources[j]) or repeat(EDGE_ORDER)
            texts[j] = ",\n".join(map(one, repeat(sources[j]), downs[j], ks))
        if texts:
            write(("" if first else ",\n") + ",\n".join(texts))
            first = False


_EDGE_HEAD = f'{_P2}{{\n{_P3}"source": %d,\n{_P3}"target": '
_index = attrgetter("index")
_down = attrgetter("downstream")
_up = attrgetter("upstream")


def write_plan_json(plan: Plan, write: Write) -> None:
    """Write the plan's Protobuf JSON (see the module docstring), ending in a newline."""
    head = message_dict(encode_plan(replace(plan, nodes=(), edges=())))
    number = {f.name: f.number for f in plan_pb2.ExecutionPlan.DESCRIPTOR.fields}
    streamed = [("nodes", bool(plan.nodes)), ("edges", bool(plan.edges))]
    members = list(head.items())
    if not members and not plan.nodes:
        write("{}\n")
        return
    write("{\n")
    first = True
    for name, present in streamed:  # splice the streamed lists in at their numbers
        at = next((i for i, (k, _) in enumerate(members) if number[k] > number[name]), None)
        members.insert(len(members) if at is None else at, (name, present))
    for name, value in members:
        if name in ("nodes", "edges") and isinstance(value, bool):
            if not value:
                continue
            write(("" if first else ",\n") + f'{_pad(1)}"{name}": [\n')
            if name == "nodes":
                _nodes(plan, write)
            else:
                _edges(plan, write)
            write(f"\n{_pad(1)}]")
        else:
            write(("" if first else ",\n") + _member(name, value, 1))
        first = False
    write("\n}\n")


def _nodes(plan: Plan, write: Write) -> None:
    writer = _NodeWriter(plan)
    nodes = plan.nodes
    plain = plain_slices(nodes, _CHUNK)
    for start in range(0, len(nodes), _CHUNK):
        chunk = nodes[start : start + _CHUNK]
        ups, downs = _numbers(map(_up, chunk)), _numbers(map(_down, chunk))
        if start:
            write(",\n")  # apart: joined to the slice it would copy its ~1.4 MB
        writer.plain = plain[start // _CHUNK]
        write(",\n".join(map(writer.node, chunk, ups, downs)))
