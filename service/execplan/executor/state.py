"""Execution state: what a fold over an execution's events produces.

Mutable on purpose: a 50,000-task execution cannot copy itself per event. The fold
(`evolve`) is the only writer, so the state is still a pure function of the log.
Trigger counters per task are derived data kept to make readiness O(1) per edge.

Plans that grow at runtime (docs/runtime-plans.md). `tasks` holds one `TaskRun` per
node of the plan (index = node index), then one per task that grew while the
execution ran, in the order they were recorded: for_each instances (`research[2]`)
and the tasks of sub-plans (`agent/a`). `grown[i]` says what `tasks[n + i]` is (n:
the plan's node count), pointing at the one plan node it runs, so 10,000 instances
share one `NodeView`. `extras` holds the bookkeeping of the few tasks that need it
(a for_each task's instances, a repeat's iteration, a child, a sub-plan), `scopes`
the sub-plans. Look tasks up through `index_of`, `node`, `task_id`: never
`plan.nodes[index]` directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from execplan.executor.plan_view import NodeView, PlanView
from execplan.executor.task_errors import TaskError
from execplan.executor.values import JsonValue
from execplan.search import SearchValue
from execplan.store.port import TERMINAL_STATE_NAMES
from execplan.usage import Budget
from execplan.v1 import execution_pb2 as ex

TERMINAL_TASK_STATES = frozenset(
    {
        ex.TASK_STATE_SUCCEEDED,
        ex.TASK_STATE_FAILED,
        ex.TASK_STATE_SKIPPED,
        ex.TASK_STATE_CANCELLED,
        ex.TASK_STATE_COMPENSATED,
        ex.TASK_STATE_COMPENSATION_FAILED,
    }
)
# States in which an attempt holds (or is about to hold) a worker slot.
LEASED_TASK_STATES = frozenset({ex.TASK_STATE_DISPATCHED, ex.TASK_STATE_RUNNING})


def holds_lease(task: TaskRun) -> bool:
    """Does a worker hold (or is about to hold) this task's attempt? A task RUNNING
    without a worker runs what grew from it instead: a for_each task its instances,
    a dynamic task its sub-plan, a builtin.workflow task its child execution."""
    return task.state in LEASED_TASK_STATES and bool(task.worker_id)


# States a task leaves only through an event the engine must still produce.
ACTIVE_TASK_STATES = frozenset(
    {
        ex.TASK_STATE_QUEUED,
        ex.TASK_STATE_DISPATCHED,
        ex.TASK_STATE_RUNNING,
        ex.TASK_STATE_BACKING_OFF,
        ex.TASK_STATE_PARKED,
        ex.TASK_STATE_WAITING,
    }
)
# The names are the store's (one list for every layer); here as enum values.
TERMINAL_EXECUTION_STATES = frozenset(
    ex.ExecutionState.Value("EXECUTION_STATE_" + name) for name in TERMINAL_STATE_NAMES
)


@dataclass(slots=True)
class AttemptRecord:
    attempt: int
    phase: int
    worker_id: str
    epoch: int
    dispatched_ms: int
    finished_ms: int = 0
    error: TaskError | None = None
    # The repeat iteration this attempt ran.
    iteration: int = 0


@dataclass(slots=True)
class TaskRun:
    index: int
    state: int = ex.TASK_STATE_PENDING
    phase: int = ex.TASK_PHASE_MAIN
    attempt: int = 0
    epoch: int = 0
    worker_id: str = ""
    # The authenticated principal of the lease holder ("" with authentication off).
    principal: str = ""
    output: JsonValue = None
    error: TaskError | None = None
    first_queued_ms: int = 0
    queued_ms: int = 0
    started_ms: int = 0
    finished_ms: int = 0
    status_message: str = ""
    attempts: list[AttemptRecord] = field(default_factory=list)
    # Trigger-rule counters over upstream tasks (derived; see module docstring).
    upstream_pending: int = 0
    upstream_succeeded: int = 0
    upstream_failed: int = 0
    upstream_other: int = 0
    # Position in completion order, for Saga compensation in reverse.
    completed_order: int = 0
    compensated: bool = False
    # The latest progress its attempts reported (task_progress), and when.
    progress: JsonValue = None
    progress_ms: int = 0


@dataclass(slots=True)
class AttemptSpend:
    """What one lease (task index, phase, attempt, epoch) used and still holds."""

    worker_id: str
    usage: dict[str, float] = field(default_factory=dict)
    # The highest UsageReport number recorded (each report counts once).
    reports: int = 0
    # What its estimate still holds against the budgets (beyond what it reported).
    reserved: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class BudgetHold:
    """Why a budget paused the execution (ExecutionPaused.budget_exceeded)."""

    counter: str
    limit: float
    spent: float
    reserved: float
    estimate: float
    task_id: str
    budget_task_id: str
    message: str

    def to_proto(self) -> ex.BudgetExceeded:
        return ex.BudgetExceeded(
            counter=self.counter,
            limit=self.limit,
            spent=self.spent,
            reserved=self.reserved,
            estimate=self.estimate,
            task_id=self.task_id,
            budget_task_id=self.budget_task_id,
            message=self.message,
        )

    @classmethod
    def from_proto(cls, b: ex.BudgetExceeded) -> BudgetHold:
        return cls(
            b.counter,
            b.limit,
            b.spent,
            b.reserved,
            b.estimate,
            b.task_id,
            b.budget_task_id,
            b.message,
        )


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what may grow at run time (docs/runtime-plans.md, "Limits"),
    recorded in execution_started. The item cap of a for_each is a runaway cap
    (Spend.max_for_each_items)."""

    # Serialized bytes of one for_each's items (recorded in task_expanded).
    for_each_bytes: int = 8 * 1024 * 1024
    # Tasks of one sub-plan.
    sub_plan_tasks: int = 1_000
    # Sub-plans within sub-plans, children within children.
    nesting_depth: int = 5
    # Tasks of one execution: the plan's, instances and sub-plans' together.
    execution_tasks: int = 100_000


@dataclass(frozen=True, slots=True)
class Allowance:
    """What an execution starts with besides its plan: its budget (the workflow's over
    the server's default), the server's runaway caps (0: none) and the limits of what
    may grow at run time (None: not recorded, the engine's apply)."""

    budget: Budget | None = None
    max_for_each_items: int = 0
    max_attempts: int = 0
    limits: Limits | None = None


# A lease: (task index, phase, attempt, lease epoch).
LeaseKey = tuple[int, int, int, int]


@dataclass(slots=True)
class Spend:
    """Usage, budgets and runaway caps of one execution (docs/usage.md); written by
    the fold (decide/usage.py) like the rest of the state."""

    budget: Budget | None = None
    # Runaway caps recorded at the start (0: none).
    max_for_each_items: int = 0
    max_attempts: int = 0
    # Attempts dispatched so far (re-leases of an attempt and compensations not counted).
    attempts: int = 0
    # Everything reported (and what ended children used).
    usage: dict[str, float] = field(default_factory=dict)
    # Estimates of running attempts not yet covered by their reports.
    reserved: dict[str, float] = field(default_factory=dict)
    # Per task index: what it used, and what its running attempts hold.
    tasks: dict[int, dict[str, float]] = field(default_factory=dict)
    task_reserved: dict[int, dict[str, float]] = field(default_factory=dict)
    leases: dict[LeaseKey, AttemptSpend] = field(default_factory=dict)
    # Set while the execution is paused by a budget.
    hold: BudgetHold | None = None
    # Task budgets raised by SetBudget (task index -> the budget in force): they
    # replace the plan's `budget` of that task.
    task_budgets: dict[int, Budget] = field(default_factory=dict)


@dataclass(slots=True)
class Grown:
    """A task that is not a node of the execution's plan: a for_each instance or a task
    of a sub-plan. It runs `node` (its for_each task's, or the sub-plan's)."""

    task_id: str
    node: NodeView
    # The for_each task of an instance; the dynamic task of a sub-plan task.
    parent: int
    # An instance: the position of its item (-1 for a sub-plan task) and the item.
    item_index: int
    item: JsonValue
    # 0: the execution's plan; k: the sub-plan of revision k.
    scope: int


@dataclass(slots=True)
class Extra:
    """Runtime-plan bookkeeping of one task (only tasks that need it have one)."""

    # A for_each task: its instances are tasks[first : first + count] (count -1: not
    # expanded yet); `started` of them left PENDING (in item order), `finished` ended,
    # `failed` of those for good.
    first: int = 0
    count: int = -1
    started: int = 0
    finished: int = 0
    failed: int = 0
    # A repeat task: the iteration running (0-based) and the last one's output.
    iteration: int = 0
    previous: JsonValue = None
    # A builtin.workflow task: its child execution, once started.
    child_execution_id: str = ""
    # A dynamic task: the revision of its sub-plan (0: none yet).
    revision: int = 0


@dataclass(slots=True)
class Scope:
    """A sub-plan: the plan a dynamic task answered with, run inside this execution."""

    revision: int
    task: int  # the dynamic task's index
    plan: PlanView
    base: int  # index of the TaskRun of the sub-plan's node 0
    prefix: str  # "agent/": its task ids are prefix + the sub-plan's ids
    inputs: dict[str, JsonValue]
    finished: int = 0
    # The compiled sub-plan as recorded (checkpoints carry it).
    plan_bytes: bytes = b""


@dataclass(slots=True)
class Timer:
    timer_id: str
    task_index: int
    purpose: int
    fire_at_ms: int


@dataclass(slots=True)
class ExecutionState:
    execution_id: str
    plan: PlanView
    state: int = ex.EXECUTION_STATE_RUNNING
    inputs: dict[str, JsonValue] = field(default_factory=dict)
    outputs: dict[str, JsonValue] = field(default_factory=dict)
    error: TaskError | None = None
    failed_task_id: str = ""
    request_id: str = ""
    fairness_key: str = ""
    trace_context: dict[str, str] = field(default_factory=dict)
    created_ms: int = 0
    updated_ms: int = 0
    finished_ms: int = 0
    last_sequence: int = 0
    tasks: list[TaskRun] = field(default_factory=list)
    paused: bool = False
    cancel_requested: bool = False
    compensation_queue: list[int] = field(default_factory=list)
    timers: dict[str, Timer] = field(default_factory=dict)
    # Named external events that arrived before a task waited for them.
    mailbox: dict[str, list[JsonValue]] = field(default_factory=dict)
    # request_id -> [kind, parameter digest, answer] of the control calls recorded in
    # the log (executor/decide/requests.py): repeated request_ids are answered from here.
    requests: dict[str, list[str]] = field(default_factory=dict)
    consecutive_failures: int = 0
    completions: int = 0
    any_failed: bool = False
    spend: Spend = field(default_factory=Spend)
    # What may grow at run time, as recorded when it started (None: not recorded).
    limits: Limits | None = None
    # A child execution (builtin.workflow): who started it, and how deep it nests.
    parent_execution_id: str = ""
    parent_task_id: str = ""
    depth: int = 0
    # What grew at run time (see the module docstring).
    grown: list[Grown] = field(default_factory=list)
    grown_index: dict[str, int] = field(default_factory=dict)
    extras: dict[int, Extra] = field(default_factory=dict)
    scopes: list[Scope] = field(default_factory=list)
    # Typed key/values to find it by: given at start, set by its tasks.
    search_attributes: dict[str, SearchValue] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_EXECUTION_STATES

    def index_of(self, task_id: str) -> int | None:
        index = self.plan.index_of.get(task_id)
        return index if index is not None else self.grown_index.get(task_id)

    def task(self, task_id: str) -> TaskRun:
        index = self.index_of(task_id)
        if index is None:
            raise KeyError(task_id)
        return self.tasks[index]

    def node(self, index: int) -> NodeView:
        """The plan node task `index` runs."""
        nodes = self.plan.nodes
        return nodes[index] if index < len(nodes) else self.grown[index - len(nodes)].node

    def task_id(self, index: int) -> str:
        nodes = self.plan.nodes
        return (
            nodes[index].task_id if index < len(nodes) else self.grown[index - len(nodes)].task_id
        )

    def grown_of(self, index: int) -> Grown | None:
        n = len(self.plan.nodes)
        return self.grown[index - n] if index >= n else None

    def scope_of(self, index: int) -> Scope | None:
        """The sub-plan task `index` belongs to (None: the execution's own plan)."""
        grown = self.grown_of(index)
        return self.scopes[grown.scope - 1] if grown is not None and grown.scope else None

    def downstream(self, index: int) -> tuple[int, ...]:
        """Indexes of the tasks after task `index` (none for an instance)."""
        grown = self.grown_of(index)
        if grown is None:
            return self.plan.nodes[index].downstream
        if grown.item_index >= 0:
            return ()
        base = self.scopes[grown.scope - 1].base
        return tuple(base + d for d in grown.node.downstream)


def new_state(execution_id: str, plan: PlanView) -> ExecutionState:
    state = ExecutionState(execution_id=execution_id, plan=plan)
    state.tasks = [
        TaskRun(index=node.index, upstream_pending=len(node.upstream)) for node in plan.nodes
    ]
    return state


# Names by number, looked up per event and per commit (the enum wrapper's Name()
# costs a Python call and a descriptor walk each time).
_TASK_STATE_NAMES: dict[int, str] = {
    number: name.removeprefix("TASK_STATE_") for name, number in ex.TaskState.items()
}
_EXECUTION_STATE_NAMES: dict[int, str] = {
    number: name.removeprefix("EXECUTION_STATE_") for name, number in ex.ExecutionState.items()
}


def task_state_name(value: int) -> str:
    name = _TASK_STATE_NAMES.get(value)
    if name is None:  # not a TaskState: Name() raises its ValueError
        return ex.TaskState.Name(cast(ex.TaskState.ValueType, value))
    return name


def execution_state_name(value: int) -> str:
    name = _EXECUTION_STATE_NAMES.get(value)
    if name is None:  # not an ExecutionState: Name() raises its ValueError
        return ex.ExecutionState.Name(cast(ex.ExecutionState.ValueType, value))
    return name
