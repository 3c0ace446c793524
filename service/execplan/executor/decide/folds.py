"""What the events emitted most do to the state, from their values.

    folds.dispatched(state, at, task, phase, attempt, epoch, worker_id, principal, None)

The fold (`evolve`) of the events every worker task goes through, once or more
each (`task_queued`, `task_dispatched`, `task_started`, `task_succeeded`), of
`execution_started` and `execution_completed`, and the parts of it other kinds share (`settle`,
`drop_timers`, `finish_attempt`). Each function takes the event's values (and its
task), not the message, so there is one fold and two callers:

* `evolve` reads the values of a recorded event (replay, recovery) and calls it;
* the rule that decides the event passes the values it built the event from
  (`Step.emit_folded`), so the hot path does not read back, field by field, a
  message it has just written.

`tests/executor/test_fold_paths.py` folds random histories both ways and compares
the states.
"""

from __future__ import annotations

from collections.abc import Mapping

from execplan.executor.decide import evolve_grown, usage
from execplan.executor.state import AttemptRecord, ExecutionState, Limits, TaskRun
from execplan.executor.task_errors import TaskError
from execplan.executor.values import JsonValue, from_struct, from_value
from execplan.search import SearchValue
from execplan.search.codec import decode_map
from execplan.usage import Budget
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2
from execplan.v1 import execution_pb2 as ex
from google.protobuf import struct_pb2

QUEUED = ex.TASK_STATE_QUEUED
DISPATCHED = ex.TASK_STATE_DISPATCHED
RUNNING = ex.TASK_STATE_RUNNING
SUCCEEDED = ex.TASK_STATE_SUCCEEDED
FAILED = ex.TASK_STATE_FAILED
COMPENSATION = ex.TASK_PHASE_COMPENSATION
RETRY_BACKOFF = ev.TIMER_PURPOSE_RETRY_BACKOFF


# -- shared by several kinds ---------------------------------------------------------


def settle(state: ExecutionState, task: TaskRun, outcome: int, at_ms: int) -> None:
    """Marks a task terminal and updates its downstream trigger counters (an instance:
    its for_each task's counts; a sub-plan task: its sub-plan's)."""
    evolve_grown.leaving_pending(state, task)
    task.state = outcome
    task.finished_ms = at_ms
    if state.timers:
        drop_timers(state, task.index, all_purposes=True)
    state.completions += 1
    task.completed_order = state.completions
    evolve_grown.settled(state, task, outcome)
    tasks = state.tasks
    for child in state.downstream(task.index):
        counters = tasks[child]
        counters.upstream_pending -= 1
        if outcome == SUCCEEDED:
            counters.upstream_succeeded += 1
        elif outcome == FAILED:
            counters.upstream_failed += 1
        else:
            counters.upstream_other += 1


def drop_timers(state: ExecutionState, index: int, *, all_purposes: bool) -> None:
    """A settled task has no pending timers; a queued one no pending backoff.

    Done here, in the fold, so that a state rebuilt from the log and the live state
    agree on which timers are pending.
    """
    for timer in list(state.timers.values()):
        if timer.task_index == index and (all_purposes or timer.purpose == RETRY_BACKOFF):
            del state.timers[timer.timer_id]


def finish_attempt(task: TaskRun, at_ms: int, error: TaskError | None) -> None:
    if task.attempts:
        record = task.attempts[-1]
        record.finished_ms = at_ms
        record.error = error


# -- the execution -----------------------------------------------------------------


def execution_started(
    state: ExecutionState,
    at: int,
    *,
    inputs: dict[str, JsonValue],
    request_id: str,
    fairness_key: str,
    trace_context: dict[str, str],
    parent_execution_id: str,
    parent_task_id: str,
    depth: int,
    limits: Limits | None,
    search_attributes: dict[str, SearchValue],
    budget: Budget | None,
    max_for_each_items: int,
    max_attempts: int,
) -> None:
    """`inputs`, `search_attributes` and `budget` as the event holds them (the log
    normalizes them: a JSON number 3.0 reads as 3); `limits` None: not recorded."""
    state.inputs = inputs
    state.parent_execution_id = parent_execution_id
    state.parent_task_id = parent_task_id
    state.depth = depth
    if limits is not None:
        state.limits = limits
    state.request_id = request_id
    state.fairness_key = fairness_key
    state.trace_context = trace_context
    state.created_ms = at
    state.state = ex.EXECUTION_STATE_RUNNING
    state.search_attributes = search_attributes
    spend = state.spend
    spend.budget = budget
    spend.max_for_each_items = max_for_each_items
    spend.max_attempts = max_attempts


def execution_completed(  # noqa: PLR0917 (the values of execution_completed)
    state: ExecutionState,
    at: int,
    outcome: int,
    outputs: struct_pb2.Struct,
    error: TaskError | None,
    failed_task_id: str,
) -> None:
    """`outputs` as the event holds them (a JSON number 3.0 reads as 3, live or
    replayed); `error` None: the event holds none."""
    state.state = outcome
    state.outputs = from_struct(outputs)
    state.error = error
    state.failed_task_id = failed_task_id
    state.finished_ms = at
    state.timers.clear()


def recorded_attributes(
    recorded: Mapping[str, execution_pb2.SearchAttributeValue],
) -> dict[str, SearchValue]:
    """Search attributes as an event holds them (an empty value holds none)."""
    return {name: value for name, value in decode_map(recorded).items() if value is not None}


# -- the attempts of a task ----------------------------------------------------------


def queued(  # noqa: PLR0917 (the values of task_queued)
    state: ExecutionState, at: int, task: TaskRun, phase: int, attempt: int, iteration: int
) -> None:
    if task.state == ex.TASK_STATE_PENDING:
        evolve_grown.leaving_pending(state, task)
    evolve_grown.iteration(state, task, iteration, phase, at)
    task.state = QUEUED
    task.phase = phase
    task.attempt = attempt
    task.worker_id = ""
    task.principal = ""
    task.queued_ms = at
    task.first_queued_ms = task.first_queued_ms or at
    if state.timers:
        drop_timers(state, task.index, all_purposes=False)
    task.status_message = ""


def dispatched(  # noqa: PLR0917 (the values of task_dispatched)
    state: ExecutionState,
    at: int,
    task: TaskRun,
    phase: int,
    attempt: int,
    epoch: int,
    worker_id: str,
    principal: str,
    estimate: Mapping[str, float] | None,
) -> None:
    """`estimate`: what the lease reserves against the budgets (None: nothing)."""
    task.state = DISPATCHED
    task.attempt = attempt
    task.epoch = epoch
    task.worker_id = worker_id
    task.principal = principal
    task.status_message = ""
    iteration = evolve_grown.iteration_of(state, task, phase)
    task.attempts.append(AttemptRecord(attempt, phase, worker_id, epoch, at, 0, None, iteration))
    usage.leased(state, task, (task.index, phase, attempt, epoch), worker_id, estimate)


def started(state: ExecutionState, at: int, task: TaskRun) -> None:
    task.state = RUNNING
    task.started_ms = at


def succeeded(  # noqa: PLR0917 (the values of task_succeeded)
    state: ExecutionState,
    at: int,
    task: TaskRun,
    phase: int,
    attempt: int,
    epoch: int,
    output: struct_pb2.Value,
    cache_hit: bool,
) -> None:
    """`output` as the event holds it: what a task's output reads as afterwards is
    what the log gives back (a JSON number 3.0 is 3), live or replayed. `cache_hit`:
    the result cache answered, so no attempt ran."""
    if not cache_hit:
        finish_attempt(task, at, None)
    if phase == COMPENSATION:
        task.state = ex.TASK_STATE_COMPENSATED
        task.compensated = True
        task.finished_ms = at
        if state.compensation_queue and state.compensation_queue[0] == task.index:
            state.compensation_queue.pop(0)
    else:
        # A for_each task's output is its instances' (each recorded in its own event).
        gathered = evolve_grown.gathered_output(state, task)
        task.output = from_value(output) if gathered is None else gathered
        task.error = None
        state.consecutive_failures = 0
        settle(state, task, SUCCEEDED, at)
    usage.lease_ended(state, (task.index, phase, attempt, epoch))
