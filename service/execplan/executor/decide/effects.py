"""Effects: what the engine does after the events that caused them are committed."""

from __future__ import annotations

from execplan.executor.task_errors import TaskError
from execplan.executor.values import JsonValue
from execplan.records import record
from execplan.usage import Budget


@record
class TaskReady:
    """A worker task entered QUEUED and can be matched to a worker."""

    index: int


@record
class SendDispatch:
    index: int
    worker_id: str
    attempt: int
    epoch: int
    phase: int
    task_type: str
    inputs: dict[str, JsonValue]
    idempotency_key: str
    # The error of the task's previous attempt (Dispatch.previous_error).
    previous_error: TaskError | None = None


@record
class CancelLease:
    index: int
    worker_id: str
    attempt: int
    epoch: int
    phase: int
    reason: str


@record
class ArmTimer:
    timer_id: str
    fire_at_ms: int


@record
class ReleaseLease:
    """A leased attempt ended (result, timeout, cancel): free the worker slot."""

    index: int
    worker_id: str


@record
class StartChild:
    """Start (or find again: `request_id`) the child execution of a builtin.workflow
    task (docs/runtime-plans.md); its answer comes back as `Machine.child_started`."""

    index: int
    task_id: str
    attempt: int
    epoch: int
    workflow: str  # the registered name
    version: str  # "" = the latest registered
    inputs: dict[str, JsonValue]
    request_id: str
    depth: int
    # What is left of the parent's budget: the child may spend no more (docs/usage.md).
    budget: Budget | None = None


@record
class StopChild:
    """Cancel (or terminate) a running child execution."""

    child_execution_id: str
    reason: str
    terminate: bool


Effect = TaskReady | SendDispatch | CancelLease | ArmTimer | ReleaseLease | StartChild | StopChild
