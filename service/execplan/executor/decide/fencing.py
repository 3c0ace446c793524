"""The one fencing check: does a claim name the current lease of a task?

Every lease is (phase, attempt, lease epoch), granted to one worker id of one
principal. Whatever refers to an attempt goes through `stale` before it may change
anything:

* a worker's ack, heartbeat and result, and each attempt a reconnecting worker lists
  as `running` (`Claim` with a `Holder`: the worker id, principal and registered
  task types of the stream it came on);
* the engine's own deadline handles (ack, start_to_close, heartbeat timers, orphan
  expiry, breaker canaries), which carry the lease they were armed for and must do
  nothing once that lease has moved on (`Claim` without a holder);
* deterministic replay of recorded results.

The epoch alone identifies a lease (it grows with every dispatch of the task); the
phase and attempt are checked too, so that a rejection can say what the worker got
wrong and a wrong phase never reads as a contradiction.
"""

from __future__ import annotations

from execplan.errors import StaleToken
from execplan.executor.plan_view import NodeView
from execplan.executor.state import LEASED_TASK_STATES, ExecutionState, TaskRun, task_state_name
from execplan.records import record
from execplan.v1 import execution_pb2 as ex


@record
class Holder:
    """The worker stream a claim came on."""

    worker_id: str
    # The authenticated principal; None with authentication off (nothing to compare).
    principal: str | None
    # Task types the worker registered (within what its principal may register).
    task_types: frozenset[str]


@record
class Claim:
    phase: int
    attempt: int
    epoch: int
    # None: the engine's own deadline, not a worker.
    holder: Holder | None = None


def stale(task: TaskRun, node: NodeView, claim: Claim) -> str:
    """'' when `claim` names the current lease of `task`; otherwise why it does not."""
    if task.state not in LEASED_TASK_STATES:
        return (
            f"stale token for {describe(node.task_id, claim)}: the task is "
            f"{task_state_name(task.state)}, no attempt is leased"
        )
    if (task.phase, task.attempt, task.epoch) != (claim.phase, claim.attempt, claim.epoch):
        return (
            f"stale token for {describe(node.task_id, claim)} (current: "
            f"{phase_name(task.phase)} attempt {task.attempt} epoch {task.epoch}, "
            f"{task_state_name(task.state)})"
        )
    holder = claim.holder
    if holder is None:
        return ""
    if task.worker_id != holder.worker_id:
        return f"attempt is leased to worker {task.worker_id}, not {holder.worker_id}"
    if holder.principal is not None and task.principal and task.principal != holder.principal:
        return f"attempt is leased to another principal than {holder.principal!r}"
    task_type = node.type_for(task.phase)
    if task_type not in holder.task_types:
        return f"worker {holder.worker_id} did not register task type {task_type}"
    return ""


def holds(state: ExecutionState, index: int, claim: Claim) -> bool:
    """Is `claim` the current lease of task `index`? (The engine's deadlines.)"""
    return not stale(state.tasks[index], state.node(index), claim)


def check(state: ExecutionState, task_id: str, claim: Claim) -> TaskRun:
    """The task whose current lease `claim` names; StaleToken saying why otherwise."""
    index = state.index_of(task_id)
    if index is None:
        raise StaleToken(f"unknown task {task_id[:200]!r}")
    task = state.tasks[index]
    reason = stale(task, state.node(index), claim)
    if reason:
        raise StaleToken(reason)
    return task


def lease_of(task: TaskRun, holder: Holder | None = None) -> Claim:
    """The claim that names the task's lease as it is now (for deadlines armed now)."""
    return Claim(task.phase, task.attempt, task.epoch, holder)


def describe(task_id: str, claim: Claim) -> str:
    return f"{task_id} {phase_name(claim.phase)} attempt {claim.attempt} epoch {claim.epoch}"


def phase_name(phase: int) -> str:
    return _PHASES.get(phase, f"phase {phase}")


_PHASES: dict[int, str] = {
    ex.TASK_PHASE_MAIN: "main",
    ex.TASK_PHASE_FALLBACK: "fallback",
    ex.TASK_PHASE_COMPENSATION: "compensation",
}
