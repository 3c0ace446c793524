"""The execution plan as plain frozen dataclasses, mirroring `plan.proto` field by field.

The executor works on these objects; `execplan.wire.plan_codec.encode_plan` turns them
into `execplan.v1.ExecutionPlan`. Conventions:

- durations are int milliseconds (0 = no limit / unset);
- enums are proto value names (`"TRIGGER_RULE_ALL_SUCCESS"`, `"EDGE_KIND_DATA"`);
- a `BindingValue` is one of `Literal`, `Expression`, `Template`, `BindingStruct`,
  `BindingList` (the proto oneof); `Template.parts` holds `str` text and `Expression`s;
- maps are dicts (read-only by convention); everything else is tuples, except two
  sequences kept lean for big plans: `Plan.edges`, a `PlanEdges` (no object per
  edge), and compiled bindings, a `Bindings` (no object per plain literal binding);
  a compiled plan's `nodes` is a `PlanNodes`, a tuple that also tells which nodes
  are plain (the writers find their shared fields by type).

Objects may be shared between nodes (e.g. one `ResolvedRetryPolicy` built from
`defaults` serves every task that does not override it): never mutate them.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from itertools import accumulate, chain, repeat
from operator import attrgetter
from typing import Any, TypeAlias, TypeVar, overload

from execplan.usage import Budget

FORMAT_VERSION = 1
# The format of a plan that uses a runtime-plan field (for_each, repeat, workflow,
# dynamic): an executor that knows only format 1 must refuse it, not ignore them.
FORMAT_VERSION_RUNTIME = 2
# The format of a plan with a budget or an estimate (docs/usage.md): an executor that
# would ignore them would let an execution overspend.
FORMAT_VERSION_BUDGETS = 3


@dataclass(frozen=True, slots=True)
class Expression:
    source: str
    reads_tasks: tuple[str, ...] = ()
    reads_inputs: tuple[str, ...] = ()
    reads_execution: bool = False
    # item, index, iteration, previous, output: sorted (docs/runtime-plans.md).
    reads_variables: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Literal:
    value: object  # a JSON value


@dataclass(frozen=True, slots=True)
class Template:
    parts: tuple[str | Expression, ...]


@dataclass(frozen=True, slots=True)
class Binding:
    name: str
    value: BindingValue


@dataclass(frozen=True, slots=True)
class BindingStruct:
    fields: Sequence[Binding]  # a Bindings when compiled


@dataclass(frozen=True, slots=True)
class BindingList:
    items: tuple[BindingValue, ...]


BindingValue: TypeAlias = Literal | Expression | Template | BindingStruct | BindingList
_VALUE_TYPES = frozenset({Literal, Expression, Template, BindingStruct, BindingList})


def binding_value(v: object) -> BindingValue:
    """A value of `Bindings.values` as a BindingValue: a plain JSON value is a Literal."""
    return v if type(v) in _VALUE_TYPES else Literal(v)  # type: ignore[return-value]


class Bindings(Sequence[Binding]):
    """Bindings sorted by name, without two objects per binding (a 100k-task plan has
    ~200k bindings; a Binding and a Literal for each were half of its objects).

    `names` and `values` side by side; a value is a `BindingValue`, or the JSON value
    itself where the binding is a plain `Literal` (JSON values are never one of the
    BindingValue classes, so `binding_value` tells them apart). Iterating, indexing
    and comparing work as on a tuple of `Binding` (made on the fly); `items(bs)` is
    the cheap way through for code that reads every binding of every node."""

    __slots__ = ("names", "values")

    def __init__(self, names: tuple[str, ...], values: tuple[object, ...]) -> None:
        self.names = names
        self.values = values

    def __iter__(self) -> Iterator[Binding]:
        for name, v in zip(self.names, self.values, strict=True):
            yield Binding(name, binding_value(v))

    def __len__(self) -> int:
        return len(self.names)

    @overload
    def __getitem__(self, i: int) -> Binding: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[Binding, ...]: ...
    def __getitem__(self, i: int | slice) -> Binding | tuple[Binding, ...]:
        if isinstance(i, slice):
            return tuple(self)[i]
        return Binding(self.names[i], binding_value(self.values[i]))

    def __eq__(self, other: object) -> bool:
        if type(other) is Bindings:
            return self.names == other.names and self.values == other.values
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"Bindings({tuple(self)!r})"


def items(bs: Sequence[Binding]) -> Iterator[tuple[str, object]]:
    """(name, value) of each binding; a plain literal's value may be its JSON value
    (from a `Bindings`) or a `Literal` (from a tuple of Binding): handle both."""
    if type(bs) is Bindings:
        return zip(bs.names, bs.values, strict=True)
    return ((b.name, b.value) for b in bs)


@dataclass(frozen=True, slots=True)
class PlanInput:
    name: str
    type: str
    required: bool = False
    default: object = None
    has_default: bool = False
    description: str = ""


@dataclass(frozen=True, slots=True)
class ResolvedRetryPolicy:
    max_attempts: int
    initial_interval: int
    backoff_coefficient: float
    max_interval: int
    jitter: float
    non_retryable_errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ResolvedTimeouts:
    schedule_to_start: int = 0
    start_to_close: int = 0
    heartbeat: int = 0
    schedule_to_close: int = 0


@dataclass(frozen=True, slots=True)
class ResolvedCircuitBreaker:
    failure_threshold: int
    open_for: int
    half_open_max_calls: int
    failure_rate_threshold: float
    window: int
    on_open: str
    key: Expression | None = None


@dataclass(frozen=True, slots=True)
class ResolvedLimit:
    name: str
    key: Expression | None
    max: int


@dataclass(frozen=True, slots=True)
class ResolvedRateLimitUse:
    name: str
    key: Expression | None
    units: int
    units_expression: Expression | None = None


@dataclass(frozen=True, slots=True)
class ResolvedCache:
    key: Expression | None
    ttl: int  # ms; 0 = until purged


@dataclass(frozen=True, slots=True)
class PlanRateLimit:
    name: str
    units: int
    period: int  # ms
    burst: int


@dataclass(frozen=True, slots=True)
class ResourceBinding:
    cpu_millis: int = 0
    memory_bytes: int = 0
    gpu: int = 0
    require_labels: dict[str, str] = field(default_factory=dict)
    prefer_labels: dict[str, str] = field(default_factory=dict)
    environment: str = ""
    secrets: tuple[str, ...] = ()
    custom: dict[str, int] = field(default_factory=dict)
    isolate: bool = False


@dataclass(frozen=True, slots=True)
class PlanSideTask:
    type: str
    bindings: Sequence[Binding]
    retry: ResolvedRetryPolicy
    timeouts: ResolvedTimeouts
    inherits_inputs: bool


@dataclass(frozen=True, slots=True)
class PlanRepeat:
    until: Expression
    max_iterations: int


@dataclass(frozen=True, slots=True)
class WorkflowRef:
    """A registered workflow: `version` "" means the latest registered."""

    name: str
    version: str = ""

    def __str__(self) -> str:
        return f"{self.name}@{self.version}" if self.version else self.name


@dataclass(frozen=True, slots=True)
class PlanEdge:
    source: int
    target: int
    kind: str


EDGE_ORDER = "EDGE_KIND_ORDER"


class PlanEdges(Sequence[PlanEdge]):
    """`Plan.edges` without an object per edge (a 100k-task plan has ~300k edges).

    Edges are listed by (source, target), which is each node's `downstream` in node
    order; so only the kinds of edges need keeping, and only for the few nodes with
    an edge that carries data (`kinds`: source index -> one kind per entry of its
    `downstream`); every other edge is ORDER. Iterating, indexing and comparing
    work as on a tuple of `PlanEdge` (made on the fly); `by_source()` is the cheap
    way through for code that writes every edge."""

    __slots__ = ("_kinds", "_len", "_nodes", "_starts")

    def __init__(self, nodes: Sequence[PlanNode], kinds: Mapping[int, tuple[str, ...]]) -> None:
        self._nodes = nodes
        self._kinds = kinds
        self._len = sum(map(len, map(_downstream, nodes)))
        self._starts: list[int] | None = None  # edge number of each node's first edge

    @property
    def nodes(self) -> Sequence[PlanNode]:
        """The nodes whose `downstream` these edges are."""
        return self._nodes

    @property
    def kinds(self) -> Mapping[int, tuple[str, ...]]:
        """Node index -> the kind of each of its edges, for nodes with a data edge."""
        return self._kinds

    def by_source(self) -> Iterator[tuple[int, tuple[int, ...], tuple[str, ...] | None]]:
        """(source, targets, kinds) per node with edges; kinds None: all ORDER."""
        kinds = self._kinds.get
        for n in self._nodes:
            if n.downstream:
                yield n.index, n.downstream, kinds(n.index)

    def columns(self) -> tuple[list[int], list[int], list[str] | None]:
        """Every edge's source, target and kind as three lists (kinds None: all
        ORDER), made with map() and chain(), so writers can format them in C."""
        nodes = self._nodes
        downs = list(map(_downstream, nodes))
        counts = map(len, downs)
        sources = list(chain.from_iterable(map(repeat, map(_index, nodes), counts)))
        targets = list(chain.from_iterable(downs))
        if not self._kinds:
            return sources, targets, None
        get = self._kinds.get
        kinds = list(
            chain.from_iterable(
                get(n.index) or repeat(EDGE_ORDER, len(d))
                for n, d in zip(nodes, downs, strict=True)
            )
        )
        return sources, targets, kinds

    def __iter__(self) -> Iterator[PlanEdge]:
        for source, targets, kinds in self.by_source():
            if kinds is None:
                for target in targets:
                    yield PlanEdge(source, target, EDGE_ORDER)
            else:
                for target, kind in zip(targets, kinds, strict=True):
                    yield PlanEdge(source, target, kind)

    def __len__(self) -> int:
        return self._len

    @overload
    def __getitem__(self, i: int) -> PlanEdge: ...
    @overload
    def __getitem__(self, i: slice) -> tuple[PlanEdge, ...]: ...
    def __getitem__(self, i: int | slice) -> PlanEdge | tuple[PlanEdge, ...]:
        if isinstance(i, slice):
            return tuple(self)[i]
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError("edge index out of range")
        if self._starts is None:
            self._starts = list(accumulate(map(len, map(_downstream, self._nodes)), initial=0))
        k = bisect_right(self._starts, i) - 1
        n = self._nodes[k]
        j = i - self._starts[k]
        kinds = self._kinds.get(n.index)
        return PlanEdge(n.index, n.downstream[j], EDGE_ORDER if kinds is None else kinds[j])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and tuple(self) == tuple(other)

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"PlanEdges({tuple(self)!r})"


_downstream: Callable[[PlanNode], tuple[int, ...]] = attrgetter("downstream")
_index: Callable[[PlanNode], int] = attrgetter("index")


@dataclass(frozen=True, slots=True)
class PlanNode:
    index: int
    task_id: str
    type: str
    builtin: str
    upstream: tuple[int, ...]
    downstream: tuple[int, ...]
    stage: int
    critical_path_rank: int
    priority: int
    trigger: str
    condition: Expression | None
    bindings: Sequence[Binding]  # a Bindings when compiled
    retry: ResolvedRetryPolicy
    timeouts: ResolvedTimeouts
    fallback: PlanSideTask | None
    compensation: PlanSideTask | None
    circuit_breaker: ResolvedCircuitBreaker | None
    resources: ResourceBinding
    estimated_duration_ms: int
    description: str
    # Plans that grow at runtime: None/0/False when unused.
    for_each: Expression | None = None
    max_parallel: int = 0
    repeat: PlanRepeat | None = None
    workflow: WorkflowRef | None = None
    dynamic: bool = False
    # Flow control (docs/flow-control.md): None/() when unused.
    limit: ResolvedLimit | None = None
    rate_limits: tuple[ResolvedRateLimitUse, ...] = ()
    cache: ResolvedCache | None = None
    # Usage (docs/usage.md): None when the task declares none.
    budget: Budget | None = None
    estimate: PlanEstimate | None = None

    @property
    def runtime(self) -> bool:
        """True when the node uses a runtime-plan field (format 2)."""
        return (
            self.for_each is not None
            or self.repeat is not None
            or self.workflow is not None
            or self.dynamic
        )


class PlanNodes(tuple[PlanNode, ...]):
    """`Plan.nodes` as the compiler makes it: a tuple of the nodes that also tells
    which of them are plain, for the writers (plan_id, the plan JSON) to find a plain
    node's shared fields by its type instead of a key of ten of its fields (~1 us
    per node each).

    A node is plain when it holds the very objects and values every other plain
    node of the plan holds in each field but index, task_id, type, builtin (which
    follows from the type), upstream, downstream, stage, critical_path_rank and
    bindings, and has no field beyond those twenty set: the node of a task that sets
    only id, type, depends_on and inputs. `plain_except` lists the positions of the
    other nodes, sorted; None says nothing (a PlanNodes made from one sequence, as
    `dataclasses.asdict` makes one), and neither does any other sequence of nodes (a
    tuple made from these, or another plan's): the writers then treat every node as
    possibly not plain."""

    plain_except: tuple[int, ...] | None

    def __new__(
        cls, nodes: Iterable[PlanNode], plain_except: Iterable[int] | None = None
    ) -> PlanNodes:
        made = super().__new__(cls, nodes)
        made.plain_except = None if plain_except is None else tuple(plain_except)
        return made

    def __getnewargs__(self) -> tuple[tuple[PlanNode, ...], tuple[int, ...] | None]:
        return tuple(self), self.plain_except  # copy and pickle keep what it tells

    def all_plain(self, start: int, end: int) -> bool:
        """Whether every node at positions start..end-1 is known to be plain."""
        found = self.plain_except
        if found is None:
            return False
        return bisect_left(found, start) == bisect_left(found, end)


def plain_slices(nodes: Sequence[PlanNode], size: int) -> list[bool]:
    """For each slice of `size` nodes, whether `nodes` says all of them are plain."""
    count = -(-len(nodes) // size)
    if type(nodes) is not PlanNodes:
        return [False] * count
    return [nodes.all_plain(start, start + size) for start in range(0, len(nodes), size)]


@dataclass(frozen=True, slots=True)
class EstimateAmount:
    """What one attempt is expected to use of `counter`: `amount`, unless
    `expression` is set (evaluated when the attempt is about to be dispatched)."""

    counter: str
    amount: float = 0.0
    expression: Expression | None = None


@dataclass(frozen=True, slots=True)
class PlanEstimate:
    amounts: tuple[EstimateAmount, ...]  # sorted by counter


@dataclass(frozen=True, slots=True)
class PlanOutput:
    name: str
    value: BindingValue


@dataclass(frozen=True, slots=True)
class Plan:
    plan_id: str
    workflow_name: str
    workflow_version: str
    description: str
    inputs: tuple[PlanInput, ...]
    on_failure: str
    max_parallel: int
    pause_after_failures: int
    nodes: tuple[PlanNode, ...]
    edges: Sequence[PlanEdge]  # a PlanEdges when compiled; any sequence will do
    outputs: tuple[PlanOutput, ...]
    stage_count: int
    critical_path_ms: int
    labels: dict[str, str]
    format_version: int = FORMAT_VERSION
    rate_limits: tuple[PlanRateLimit, ...] = ()
    budget: Budget | None = None

    def node(self, task_id: str) -> PlanNode:
        """The node of `task_id` (linear scan; build your own index for hot paths)."""
        for n in self.nodes:
            if n.task_id == task_id:
                return n
        raise KeyError(task_id)


def fields_beyond(
    known: Iterable[str],
) -> tuple[Callable[[PlanNode], object], tuple[object, ...]]:
    """For a fast path that writes only the PlanNode fields `known`: a getter of all the
    other fields (one C call per node: attrgetter of two or more names returns a tuple)
    and what it returns when none of them is set. `getter(n) == unset` says the fast
    path covers `n`; any other node goes the generic way, so a field added to the plan
    later is never silently left out."""
    known = frozenset(known)
    other = [f for f in fields(PlanNode) if f.name not in known]
    unset = tuple(
        f.default if f.default is not MISSING else f.default_factory()  # type: ignore[operator]
        for f in other
    )
    names = [f.name for f in other]
    getter: Callable[[PlanNode], object] = (
        attrgetter(*names) if len(names) > 1 else lambda n: tuple(getattr(n, f) for f in names)
    )
    return getter, unset


_C = TypeVar("_C")


def fast_constructor(cls: type[_C]) -> Callable[..., _C]:
    """A positional constructor for a frozen slotted dataclass, for the compiler's hot
    loops, ~3x faster than the generated `__init__` (which goes through
    `object.__setattr__` per field: ~1.5 us for a 30-field PlanNode against ~0.45).

    How: the object is made as an instance of a plain twin class with the very same
    `__slots__`, its fields set by ordinary attribute stores (which the interpreter
    specializes for slots), and then given its real class; Python allows that
    `__class__` assignment exactly when the two layouts are the same. The object is
    the same as `cls(*args)` (and as frozen); fields with a plain default (not a
    factory) may be left out."""
    slots = cls.__slots__  # type: ignore[attr-defined]
    twin = type(f"_{cls.__name__}Twin", (), {"__slots__": slots})
    params: list[str] = []
    env: dict[str, Any] = {"_new": object.__new__, "_twin": twin, "_cls": cls}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.default is MISSING:
            params.append(f.name)
        else:
            env[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    body = "".join(f"    self.{name} = {name}\n" for name in names)
    source = (
        f"def new({', '.join(params)}):\n    self = _new(_twin)\n{body}"
        "    self.__class__ = _cls\n    return self\n"
    )
    exec(source, env)  # the same technique dataclasses uses to generate __init__
    made: Callable[..., _C] = env["new"]
    return made
