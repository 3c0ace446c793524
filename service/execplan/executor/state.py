"""Execution state: what a fold over an execution's events produces.

Mutable on purpose: a 50,000-task execution cannot copy itself per event. The fold
(`evolve`) is the only writer, so the state is still a pure function of the log.
Trigger counters per task are derived data kept to make readiness O(1) per edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from execplan.executor.plan_view import PlanView
from execplan.executor.task_errors import TaskError
from execplan.executor.values import JsonValue
from execplan.store.port import TERMINAL_STATE_NAMES
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

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_EXECUTION_STATES

    def task(self, task_id: str) -> TaskRun:
        return self.tasks[self.plan.index_of[task_id]]


def new_state(execution_id: str, plan: PlanView) -> ExecutionState:
    state = ExecutionState(execution_id=execution_id, plan=plan)
    state.tasks = [
        TaskRun(index=node.index, upstream_pending=len(node.upstream)) for node in plan.nodes
    ]
    return state


def task_state_name(value: int) -> str:
    return ex.TaskState.Name(cast(ex.TaskState.ValueType, value)).removeprefix("TASK_STATE_")


def execution_state_name(value: int) -> str:
    name = ex.ExecutionState.Name(cast(ex.ExecutionState.ValueType, value))
    return name.removeprefix("EXECUTION_STATE_")
