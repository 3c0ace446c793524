"""The compiler driver: document -> diagnostics -> `Plan`.

Phases, in order (each in its own module, each only reads the model):

    parse.build_workflow      document -> model.Workflow (+ field/type diagnostics)
    validate_ids              names, ids, duplicates
    validate_deps             depends_on entries -> declared edges
    validate_inputs           input declarations
    validate_policies         retry / breaker / quantities
    validate_builtins         builtin.* inputs (builtin_http for builtin.http)
    validate_runtime          for_each / repeat / workflow / dynamic fields
    flow_control              limit, rate_limits, cache, breaker keys, the workflow's buckets
    budget                    budgets and estimates (checked; put in after build)
    bindings                  inputs/when/for_each/until/outputs -> compiled bindings +
                              expression reads; runtime variables where defined (variables)
    validate_references       reads -> unknown references, data edges
    graph                     Kahn order, cycles (one diagnostic per cycle)
    validate_reachability     trigger rules that can never fire
    build                     resolved policies, indexes, stages, critical path
    digest                    plan_id

Every phase runs even when an earlier one found errors (so all problems are reported
at once); only the plan is skipped. Cycles skip reachability (it needs an order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from execplan.planner import (
    budget,
    builtin_http,
    digest,
    flow_control,
    graph,
    parse,
    resolve,
    validate_builtins,
    validate_deps,
    validate_ids,
    validate_inputs,
    validate_policies,
    validate_reachability,
    validate_runtime,
    variables,
)
from execplan.planner.bindings import compile_bindings, compile_condition, quiet_bindings
from execplan.planner.diagnostics import Diagnostics, clip
from execplan.planner.model import PlainTask, Task, TaskDefaults, Workflow
from execplan.planner.plan import (
    FORMAT_VERSION,
    FORMAT_VERSION_RUNTIME,
    Binding,
    Bindings,
    Expression,
    Plan,
    PlanEdges,
    PlanInput,
    PlanNode,
    PlanNodes,
    PlanOutput,
    PlanRateLimit,
    PlanRepeat,
    PlanSideTask,
    ResolvedCircuitBreaker,
    ResolvedRetryPolicy,
    ResolvedTimeouts,
    WorkflowRef,
    fast_constructor,
)
from execplan.planner.validate_references import check_reads

ORDER, DATA = 1, 2
EDGE_KIND = {
    ORDER: "EDGE_KIND_ORDER",
    DATA: "EDGE_KIND_DATA",
    ORDER | DATA: "EDGE_KIND_ORDER_AND_DATA",
}


class _Compiled:
    """Per-task results of the bindings phase, reused when building nodes."""

    __slots__ = ("bindings", "compensation", "condition", "fallback", "for_each", "until")

    def __init__(
        self,
        bindings: Sequence[Binding],
        condition: Expression | None,
        fallback: Sequence[Binding],
        compensation: Sequence[Binding],
        *,
        for_each: Expression | None = None,
        until: Expression | None = None,
    ) -> None:
        self.bindings = bindings
        self.condition = condition
        self.fallback = fallback
        self.compensation = compensation
        self.for_each = for_each
        self.until = until


_NOTHING = _Compiled((), None, (), ())


def _new_compiled(  # noqa: PLR0917 (positional: one call per task)
    bindings: Sequence[Binding],
    condition: Expression | None,
    fallback: Sequence[Binding],
    compensation: Sequence[Binding],
    for_each: Expression | None,
    until: Expression | None,
) -> _Compiled:
    """`_Compiled(...)` without the keyword-argument call (one per task)."""
    c = _new_object(_Compiled)
    c.bindings, c.condition, c.fallback, c.compensation = (
        bindings,
        condition,
        fallback,
        compensation,
    )
    c.for_each, c.until = for_each, until
    return c


_new_object = object.__new__

# 100k nodes per big plan: a positional constructor that skip the
# frozen dataclass __init__'s object.__setattr__ per field.
_new_node = fast_constructor(PlanNode)


def compile_workflow(wf: Workflow, diags: Diagnostics, *, build: bool = True) -> Plan | None:
    """Run every phase; the plan, or None when there are errors (or `build` is False)."""
    ids = validate_ids.task_index(wf)
    validate_ids.check(wf, ids, diags)
    succ, pred, forward = validate_deps.check(wf, ids, diags)
    validate_inputs.check(wf, diags)
    validate_policies.check(wf, diags)
    validate_builtins.check(wf, diags)
    validate_runtime.check(wf, diags)
    buckets = flow_control.declared_buckets(wf, diags)
    d = wf.defaults
    default_breaker_key = flow_control.compile_breaker_key(
        d.circuit_breaker if d else None, "defaults.circuit_breaker", wf, diags
    )
    flows = [flow_control.NO_FLOW] * len(wf.tasks)
    for task in wf.beyond_plain():
        # The test compile_task starts with, inline: most tasks have no flow control.
        if (
            task.limit is not None
            or task.rate_limits
            or task.cache is not None
            or task.circuit_breaker is not None
        ):
            flows[task.index] = flow_control.compile_task(task, wf, buckets, diags)
    budgets = budget.check(wf, diags)

    data: list[tuple[int, int, str]] = []
    # Per task: its _Compiled, or for a task with only inputs just their Bindings.
    compiled: list[_Compiled | Bindings | None] = []
    quiet = _Quiet(wf)
    for t in wf.tasks:
        if t is None:
            compiled.append(None)
        elif type(t) is not PlainTask and (
            t.when or t.fallback or t.compensation or t.for_each or t.repeat
        ):
            compiled.append(_compile_task(t, wf, ids, diags, data))
        elif t.inputs:
            # Inputs only: most such tasks read nothing a check could refuse.
            bindings = (
                None
                if t.type == builtin_http.TYPE
                else quiet_bindings(t.inputs, quiet.check, quiet.strings)
            )
            if bindings is None:
                compiled.append(_compile_task(t, wf, ids, diags, data))
            else:
                compiled.append(bindings)  # no _Compiled for the common task
        else:
            compiled.append(_NOTHING)  # no expressions: skip the call and the object
    out_refs: list[tuple[str, Expression]] = []
    outputs = compile_bindings(wf.outputs, "outputs", diags, out_refs)
    variables.check(out_refs, None, "outputs", diags)
    check_reads(out_refs, ids, wf.inputs, diags, reader=None, self_ok=True, edges=None)

    n = len(wf.tasks)
    kinds, data_forward = _data_edges(n, data, succ, pred)

    order, leftover = graph.topo_order(n, succ, forward=forward and data_forward)
    if leftover:
        for cycle in graph.find_cycles(succ, leftover):
            closing = _edge_path(wf, cycle[-2], cycle[-1], data)
            diags.error("cycle", closing, "dependency cycle: " + _cycle_text(wf, cycle))
    else:
        validate_reachability.check(wf.tasks, order, pred, wf.on_failure, diags)
    if diags.has_errors or not build:
        return None
    plan = _build(
        wf,
        order=order,
        succ=succ,
        pred=pred,
        kinds=kinds,
        compiled=compiled,
        outputs=outputs,
        flow=_Flow(flows, default_breaker_key, tuple(sorted(buckets.values(), key=_by_name))),
    )
    if budgets:  # rare: the plan is digested again rather than every plan paying
        plan = budgets.apply(plan)
        plan = replace(plan, plan_id=digest.plan_id(plan))
    return plan


class _Quiet:
    """Whether an expression (one the bindings reported no problem for), in the
    inputs of a task without for_each or repeat, needs no further check: it reads
    no task (no data edge), no runtime variable and only declared workflow inputs,
    so `variables.check` and `check_reads` would find nothing. Cached by source."""

    __slots__ = ("declared", "known", "strings")

    def __init__(self, wf: Workflow) -> None:
        self.declared = wf.inputs
        self.known: dict[str, bool] = {}
        self.strings: dict[str, object] = {}  # quiet_bindings' verdicts, by text

    def check(self, expr: Expression) -> bool:
        hit = self.known.get(expr.source)
        if hit is None:
            hit = self.known[expr.source] = (
                not expr.reads_tasks
                and not expr.reads_variables
                and all(name in self.declared for name in expr.reads_inputs)
            )
        return hit


class _Flow:
    """The flow-control results of the checking phases, for `_build`."""

    __slots__ = ("buckets", "default_breaker_key", "tasks")

    def __init__(
        self,
        tasks: list[flow_control.TaskFlow],
        default_breaker_key: Expression | None,
        buckets: tuple[PlanRateLimit, ...],
    ) -> None:
        self.tasks = tasks
        self.default_breaker_key = default_breaker_key
        self.buckets = buckets


def _by_name(r: PlanRateLimit) -> str:
    return r.name


def _data_edges(
    n: int,
    data: list[tuple[int, int, str]],
    succ: list[list[int]],
    pred: list[list[int]],
) -> tuple[dict[int, int], bool]:
    """Add the data edges to succ/pred; the kind of every edge that carries data, and
    whether every edge added goes to a later task.

    Keys are u * n + v (int keys hash faster than tuples). Edges not in the result
    are ORDER only, so a workflow without expressions builds no per-edge map."""
    kinds: dict[int, int] = {}
    forward = True
    wide: dict[int, set[int]] = {}  # pred sets of tasks with many upstreams
    for u, v, _ in data:
        key = u * n + v
        if key in kinds:
            continue
        # A new key: pred[v] holds only declared sources plus data sources already
        # in `kinds`, so this finds a declared edge without a 300k-entry set.
        ups = pred[v]
        if len(ups) > 16:  # many upstreams: look up in a set (built once per task)
            found = wide.get(v)
            if found is None:
                found = wide[v] = set(ups)
            declared = u in found
        else:
            declared = u in ups
        if declared:
            kinds[key] = ORDER | DATA
        else:
            kinds[key] = DATA
            succ[u].append(v)
            pred[v].append(u)
            forward = forward and u < v
    return kinds, forward


def _edge_path(wf: Workflow, u: int, v: int, data: list[tuple[int, int, str]]) -> str:
    """Where edge u -> v was written: the depends_on entry, else the expression."""
    j = validate_deps.declared_at(wf, u, v)
    if j is not None:
        return f"tasks[{v}].depends_on[{j}]"
    return next(path for a, b, path in data if a == u and b == v)


def _id(t: Task | None) -> str:
    return clip(t.id) if t is not None else "?"


def _cycle_text(wf: Workflow, cycle: list[int]) -> str:
    """`a > b > c > a`; a long cycle shows its first and last few tasks only."""
    if len(cycle) <= 12:
        return " > ".join(_id(wf.tasks[u]) for u in cycle)
    head = " > ".join(_id(wf.tasks[u]) for u in cycle[:6])
    tail = " > ".join(_id(wf.tasks[u]) for u in cycle[-5:])
    return f"{head} > …({len(cycle) - 11:,} more) > {tail}"


def _compile_task(
    t: Task, wf: Workflow, ids: dict[str, int], diags: Diagnostics, data: list[tuple[int, int, str]]
) -> _Compiled:
    # Each site separately, for the variables it may read; then every read the task
    # needs before it starts (inputs, when, for_each, until) is a data edge. Paths are
    # formatted only for the sites a task has (100k tasks: ~0.1 s of f-strings).
    p = t.path
    refs: list[tuple[str, Expression]] = []
    if t.type == builtin_http.TYPE:
        bindings = builtin_http.compile_inputs(t, diags, refs)
    else:
        bindings = compile_bindings(t.inputs, f"{p}.inputs", diags, refs) if t.inputs else ()
    if refs:
        variables.check(refs, t, "inputs", diags)
    condition = for_each = until = None
    if t.when:
        condition = _site(t.when, t, "when", f"{p}.when", diags=diags, refs=refs)
    if t.for_each:
        for_each = _site(t.for_each, t, "for_each", f"{p}.for_each", diags=diags, refs=refs)
    if t.repeat is not None:
        until = _site(t.repeat.until, t, "until", f"{p}.repeat.until", diags=diags, refs=refs)
    if refs:
        check_reads(refs, ids, wf.inputs, diags, reader=t.index, self_ok=False, edges=data)
    if t.fallback is None and t.compensation is None:
        return _new_compiled(bindings, condition, (), (), for_each, until)
    sides: list[Sequence[Binding]] = []
    for name, side in (("fallback", t.fallback), ("compensation", t.compensation)):
        if side is None or not side.inputs:
            sides.append(())
            continue
        side_refs: list[tuple[str, Expression]] = []
        sides.append(compile_bindings(side.inputs, f"{p}.{name}.inputs", diags, side_refs))
        variables.check(side_refs, t, name, diags)
        check_reads(
            side_refs,
            ids,
            wf.inputs,
            diags,
            reader=t.index,
            self_ok=True,
            edges=data if name == "fallback" else None,
        )
    return _new_compiled(bindings, condition, sides[0], sides[1], for_each, until)


def _site(
    source: str,
    t: Task,
    site: str,
    path: str,
    *,
    diags: Diagnostics,
    refs: list[tuple[str, Expression]],
) -> Expression | None:
    """A bare-CEL field of a task (`when`, `for_each`, `repeat.until`), compiled."""
    if not source:
        return None
    mine: list[tuple[str, Expression]] = []
    expr = compile_condition(source, path, diags, mine)
    variables.check(mine, t, site, diags)
    refs.extend(mine)
    return expr


def _build(
    wf: Workflow,
    *,
    order: list[int],
    succ: list[list[int]],
    pred: list[list[int]],
    kinds: dict[int, int],
    compiled: list[_Compiled | Bindings | None],
    outputs: Sequence[Binding],
    flow: _Flow,
) -> Plan:
    n = len(wf.tasks)
    tasks: list[Task] = [t for t in wf.tasks if t is not None]
    pos = [0] * n
    for i, u in enumerate(order):
        pos[u] = i
    at = pos.__getitem__  # map(at, ...): the loops over edges run in C
    identity = order == list(range(n))  # declared in order: positions are indexes
    stage = graph.stages(order, pred)
    weight = [1] * n  # a plain task has no estimated_duration
    for t in wf.beyond_plain():
        weight[t.index] = max(t.estimated_duration or 0, 1)
    rank = graph.critical_path(order, succ, weight)

    d = wf.defaults
    base_retry = resolve.retry(d.retry if d else None)
    base_timeouts = resolve.timeouts(d.timeouts if d else None)
    base_breaker = resolve.breaker(None, d.circuit_breaker if d else None)
    if base_breaker is not None and flow.default_breaker_key is not None:
        base_breaker = replace(base_breaker, key=flow.default_breaker_key)
    base_resources = resolve.resources(None, None, (), d)
    base_priority = (d.priority if d else None) or 0

    nodes: list[PlanNode] = []
    builtin_kind = validate_builtins.BUILTINS.get
    # Only edges that carry data are in `kinds` (key u * n + v); the rest are ORDER.
    special = {key: EDGE_KIND[kind] for key, kind in kinds.items()}
    with_data = {key // n for key in kinds}
    edge_kinds: dict[int, tuple[str, ...]] = {}  # PlanEdges' kinds, by node index
    order_kind = EDGE_KIND[ORDER]
    others: list[int] = []  # nodes of tasks beyond plain: only they may be runtime
    for i, u in enumerate(order):
        t = tasks[u]
        entry = compiled[u]
        assert entry is not None
        bindings: Sequence[Binding]
        if type(entry) is Bindings:  # a task with only inputs
            bindings, c = entry, _NOTHING
        else:
            assert isinstance(entry, _Compiled)
            bindings, c = entry.bindings, entry
        # Sorted positions: the plan's edges come out by (source, target) for free.
        downstream = tuple(sorted(succ[u] if identity else map(at, succ[u])))
        if u in with_data:
            base = u * n
            edge_kinds[i] = tuple([special.get(base + order[j], order_kind) for j in downstream])
        upstream = tuple(sorted(pred[u] if identity else map(at, pred[u])))
        if type(t) is PlainTask:
            # Only id, type, depends_on and inputs: every other field is what the
            # defaults give (and no when, for_each or repeat, so no condition).
            nodes.append(
                _new_node(
                    i,
                    t.id,
                    t.type,
                    builtin_kind(t.type, "BUILTIN_KIND_NONE"),
                    upstream,
                    downstream,
                    stage[u],
                    rank[u],
                    base_priority,
                    "TRIGGER_RULE_ALL_SUCCESS",
                    None,  # condition
                    bindings,
                    base_retry,
                    base_timeouts,
                    None,  # fallback
                    None,  # compensation
                    base_breaker,
                    base_resources,
                    0,  # estimated_duration_ms
                    "",  # description
                    None,  # for_each
                    0,  # max_parallel
                    None,  # repeat
                    None if t.type != validate_runtime.WORKFLOW_TYPE else _workflow_ref(t),
                )
            )
            continue
        others.append(i)
        f = flow.tasks[t.index]
        retry = (
            base_retry
            if t.retry is None
            else resolve.retry(t.retry, base_retry if d and d.retry else None)
        )
        timeouts = (
            base_timeouts if t.timeouts is None else resolve.timeouts(t.timeouts, base_timeouts)
        )
        nodes.append(
            _new_node(
                i,  # index
                t.id,  # task_id
                t.type,  # type
                builtin_kind(t.type, "BUILTIN_KIND_NONE"),  # builtin
                upstream,
                downstream,
                stage[u],  # stage
                rank[u],  # critical_path_rank
                base_priority if t.priority is None else t.priority,  # priority
                t.trigger or "TRIGGER_RULE_ALL_SUCCESS",  # trigger
                c.condition,  # condition
                bindings,
                retry,
                timeouts,
                None  # fallback
                if t.fallback is None
                else _side(t, "fallback", c.fallback, retry, timeouts),
                None  # compensation
                if t.compensation is None
                else _side(t, "compensation", c.compensation, retry, timeouts),
                base_breaker  # circuit_breaker
                if t.circuit_breaker is None
                else _breaker(t, d, f.breaker_key or flow.default_breaker_key),
                base_resources  # resources
                if t.resources is None and t.placement is None and not t.secrets
                else resolve.resources(t.resources, t.placement, t.secrets, d),
                t.estimated_duration or 0,  # estimated_duration_ms
                t.description,  # description
                c.for_each,
                t.max_parallel,
                None if c.until is None else PlanRepeat(c.until, t.repeat.max_iterations or 0),  # type: ignore[union-attr]
                None if t.type != validate_runtime.WORKFLOW_TYPE else _workflow_ref(t),
                t.dynamic,
                f.limit,
                f.rate_limits,
                f.cache,
            )
        )
    plan = Plan(
        plan_id="",
        workflow_name=wf.name,
        workflow_version=wf.version,
        description=wf.description,
        inputs=tuple(
            PlanInput(
                name,
                s.type or "INPUT_TYPE_ANY",
                s.required,
                s.default,
                s.has_default,
                s.description,
            )
            for name, s in sorted(wf.inputs.items())
        ),
        on_failure=wf.on_failure or "ON_FAILURE_FAIL_FAST",
        max_parallel=wf.max_parallel,
        pause_after_failures=wf.pause_after_failures,
        # Plain tasks' nodes hold the same objects in every field but their own.
        nodes=(node_tuple := PlanNodes(nodes, others)),
        edges=PlanEdges(node_tuple, edge_kinds),
        outputs=tuple(PlanOutput(b.name, b.value) for b in outputs),
        stage_count=max(stage) + 1 if stage else 0,
        critical_path_ms=max(rank) if rank else 0,
        labels=dict(sorted(wf.labels.items())),
        format_version=(
            FORMAT_VERSION_RUNTIME if any(nodes[i].runtime for i in others) else FORMAT_VERSION
        ),
        rate_limits=flow.buckets,
    )
    return replace(plan, plan_id=digest.plan_id(plan))


def _workflow_ref(t: Task) -> WorkflowRef | None:
    if t.type != validate_runtime.WORKFLOW_TYPE:
        return None
    ref = validate_runtime.parse_workflow_ref(t.workflow)
    assert isinstance(ref, WorkflowRef)  # validate_runtime reported it otherwise
    return ref


def _breaker(
    t: Task, d: TaskDefaults | None, key: Expression | None
) -> ResolvedCircuitBreaker | None:
    resolved = resolve.breaker(t.circuit_breaker, d.circuit_breaker if d else None)
    return resolved if resolved is None or key is None else replace(resolved, key=key)


def _side(
    t: Task,
    name: str,
    bindings: Sequence[Binding],
    retry: ResolvedRetryPolicy,
    timeouts: ResolvedTimeouts,
) -> PlanSideTask | None:
    side = t.fallback if name == "fallback" else t.compensation
    if side is None:
        return None
    return PlanSideTask(
        type=side.type,
        bindings=bindings,
        retry=resolve.retry(side.retry, retry),
        timeouts=resolve.timeouts(side.timeouts, timeouts),
        inherits_inputs=not side.inputs,
    )


def compile_document(doc: object, diags: Diagnostics, *, build: bool = True) -> Plan | None:
    wf = parse.build_workflow(doc, diags)
    return compile_workflow(wf, diags, build=build)
