"""Attempts of a task: leases, acknowledgements, results, retries, timeouts, parking.

    QUEUED --dispatch--> DISPATCHED --acknowledged--> RUNNING --succeeded--> SUCCEEDED
                          |    \\--requeue (lost worker, missed ack)--> QUEUED (same attempt)
                          \\--failed / deadline_passed / circuit_open:
                                retry (backoff timer)  |  fallback (its own attempts)
                                |  final failure (flow.after_final_failure)

A worker's report reaches these functions only after `fencing` confirmed it names
the current lease. Retry delays come from `retry.py` (deterministic jitter), so
replaying a history reproduces the schedule.
"""

from __future__ import annotations

from execplan.executor.decide import budgets, events, flow, folds, loops
from execplan.executor.decide import effects as fx
from execplan.executor.decide.fencing import phase_name
from execplan.executor.decide.retry import backoff_ms, should_retry
from execplan.executor.decide.step import Step
from execplan.executor.expressions.bindings import EvaluationError, StructBinding, reads_of
from execplan.executor.expressions.evaluation import failure
from execplan.executor.plan_view import NodeView, RetryView
from execplan.executor.state import LEASED_TASK_STATES, TaskRun
from execplan.executor.task_errors import BINDING_ERROR, CIRCUIT_OPEN, TaskError, timeout_error
from execplan.executor.values import JsonValue
from execplan.usage.codec import decode_usage
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex

MAIN = ex.TASK_PHASE_MAIN
FALLBACK = ex.TASK_PHASE_FALLBACK


def dispatch(step: Step, index: int, worker_id: str, principal: str = "") -> bool:
    """Leases a QUEUED task to a worker (of `principal`, "" with authentication off);
    False if its inputs failed to evaluate (the task then failed for good)."""
    task = step.state.tasks[index]
    node = step.state.node(index)
    task_id = step.task_id(task)
    side = node.side(task.phase)
    own = side is not None and not side.inherits_inputs
    bindings = side.inputs if own and side is not None else node.inputs
    resolved: JsonValue
    if type(bindings) is StructBinding and not bindings.fields:
        resolved = {}  # no inputs (Step.evaluate's answer, without naming the field)
    else:
        suffix = f".{phase_name(task.phase)}.inputs" if own else ".inputs"
        side_reads = frozenset(reads_of(side.inputs)) if side is not None else frozenset()
        try:
            resolved = step.evaluate(
                step.field(task, suffix), bindings, node.reads | side_reads, task
            )
        except EvaluationError as error:
            flow.fail_final(step, task, task.phase, failure(BINDING_ERROR, error))
            return False
    estimate = budgets.admit(step, task, node, resolved)
    if isinstance(estimate, budgets.Refusal):
        if estimate.hold is not None:
            budgets.pause(step, estimate.hold)
        elif estimate.error is not None:
            failed(step, task, estimate.error)
        return False
    epoch = task.epoch + 1
    extra = step.state.extras.get(index)
    iteration = extra.iteration if extra is not None and task.phase == MAIN else 0
    # A repeat's later iterations have keys of their own; the first keeps the old form.
    attempt = f"i{iteration}.{task.attempt}" if iteration else str(task.attempt)
    key = f"{step.state.execution_id}/{task_id}/{phase_name(task.phase)}/{attempt}"
    event = events.task_dispatched(
        task_id,
        task.phase,
        task.attempt,
        epoch,
        worker_id=worker_id,
        idempotency_key=key,
        principal=principal,
        estimate=estimate,
    )
    # The estimate as the event holds it (rare: most tasks have none).
    held = decode_usage(event.task_dispatched.estimate) if estimate else None
    step.emit_folded(
        event,
        "task_dispatched",
        folds.dispatched,
        task,
        task.phase,
        task.attempt,
        epoch,
        worker_id,
        principal,
        held,
    )
    step.effect(
        fx.SendDispatch(
            index=index,
            worker_id=worker_id,
            attempt=task.attempt,
            epoch=epoch,
            phase=task.phase,
            task_type=node.type_for(task.phase),
            inputs=resolved if isinstance(resolved, dict) else {},
            idempotency_key=key,
            previous_error=previous_error(task),
        )
    )
    return True


def previous_error(task: TaskRun) -> TaskError | None:
    """The error of the task's previous attempt in this phase and iteration (for the
    worker: `ctx.previous_error`), None for a first attempt."""
    if task.attempt <= 1 or not task.attempts:
        return None
    current = task.attempts[-1]  # the lease just recorded
    for record in reversed(task.attempts[:-1]):
        if (
            record.phase == current.phase
            and record.iteration == current.iteration
            and record.attempt < current.attempt
        ):
            return record.error
    return None


def acknowledged(step: Step, task: TaskRun) -> None:
    if task.state == ex.TASK_STATE_DISPATCHED:
        event = events.task_started(
            step.task_id(task), task.phase, task.attempt, task.epoch, task.worker_id
        )
        step.emit_folded(event, "task_started", folds.started, task)


def requeue(step: Step, task: TaskRun, reason: str) -> None:
    """The lease ends without a result (lost worker, missed ack): the same attempt is
    queued again and will be leased under a new epoch."""
    if task.worker_id:
        # The worker may still run it (a reconnect that did not claim it, a lost
        # stream): after the commit it is told to stop, before it is re-dispatched.
        step.effect(
            fx.CancelLease(task.index, task.worker_id, task.attempt, task.epoch, task.phase, reason)
        )
    step.effect(fx.ReleaseLease(task.index, task.worker_id))
    step.emit(
        events.task_requeued(step.task_id(task), task.phase, task.attempt, task.epoch, reason)
    )
    step.effect(fx.TaskReady(task.index))


def succeeded(step: Step, task: TaskRun, output: JsonValue) -> None:
    step.effect(fx.ReleaseLease(task.index, task.worker_id))
    if task.phase == MAIN and step.node(task).repeat is not None:
        loops.iteration_done(step, task, output)
    else:
        flow.succeed(step, task, task.phase, output)


def failed(step: Step, task: TaskRun, error: TaskError, timeout_kind: int = 0) -> None:
    """An attempt failed (or timed out): retry it, run the fallback, or fail for good.

    Also for attempts that never got a lease (schedule_to_start, schedule_to_close,
    an open circuit breaker): then there is no worker slot to free.
    """
    if task.state in LEASED_TASK_STATES and task.worker_id:
        step.effect(fx.ReleaseLease(task.index, task.worker_id))
    node = step.node(task)
    policy = node.retry_for(task.phase)
    retry = should_retry(policy, task.attempt, error.type, error.retryable)
    fallback_follows = not retry and task.phase == MAIN and node.fallback is not None
    final = not retry and not fallback_follows
    task_id = step.task_id(task)
    if timeout_kind:
        step.emit(
            events.task_timed_out(
                task_id, task.phase, task.attempt, task.epoch, timeout_kind, final=final
            )
        )
    else:
        step.emit(
            events.task_failed(task_id, task.phase, task.attempt, task.epoch, error, final=final)
        )
    if retry:
        _schedule_retry(step, task, node, policy, error.retry_after_ms)
    elif fallback_follows:
        flow.queue(step, task, node, FALLBACK, 1)
    else:
        flow.after_final_failure(step, task)


def _schedule_retry(
    step: Step, task: TaskRun, node: NodeView, policy: RetryView, at_least_ms: int = 0
) -> None:
    """The next attempt after the policy's backoff, or after a provider's retry-after
    (`at_least_ms`) when that is longer."""
    task_id = step.task_id(task)
    delay = backoff_ms(policy, step.state.execution_id, task_id, task.phase, task.attempt)
    delay = max(delay, at_least_ms)
    step.emit(
        events.task_retry_scheduled(
            task_id,
            task.phase,
            task.attempt + 1,
            step.now_ms + delay,
            f"attempt {task.attempt} failed; retry in {delay} ms",
        )
    )
    if delay <= 0:
        flow.queue(step, task, node, task.phase, task.attempt + 1)
    else:
        step.timer(task, ev.TIMER_PURPOSE_RETRY_BACKOFF, delay, f"retry:{task.attempt + 1}")


def retry_due(step: Step, task: TaskRun) -> None:
    """The backoff timer of a failed attempt fired: queue the next attempt."""
    if task.state == ex.TASK_STATE_BACKING_OFF:
        flow.queue(step, task, step.node(task), task.phase, task.attempt + 1)


def deadline_passed(step: Step, task: TaskRun, kind: int) -> None:
    """A timeout of an attempt (or, schedule_to_close, of the whole task) fired."""
    extra = step.state.extras.get(task.index)
    running = task.state == ex.TASK_STATE_RUNNING
    child = extra.child_execution_id if running and extra is not None else ""
    # RUNNING without a worker or a child: it runs its sub-plan (or its instances).
    owner = running and not task.worker_id and not child
    if owner and kind != ev.TIMEOUT_KIND_SCHEDULE_TO_CLOSE:
        return  # the attempt's own timeouts ended when it answered with the sub-plan
    if child:
        step.effect(fx.StopChild(child, "timed out", False))
    elif task.state in LEASED_TASK_STATES and task.worker_id:
        step.effect(
            fx.CancelLease(
                task.index, task.worker_id, task.attempt, task.epoch, task.phase, "timed out"
            )
        )
    failed(step, task, timeout_error(kind), kind)  # the input event comes first
    if owner:
        flow.stop_grown(step, task, f"{step.task_id(task)} timed out")


# -- circuit breakers --------------------------------------------------------------


def park(step: Step, task: TaskRun, breaker_type: str, parked: bool) -> None:
    """Holds a QUEUED task behind an open breaker, or lets a PARKED one queue again."""
    step.emit(events.task_parked(step.task_id(task), task.phase, breaker_type, parked))
    if not parked:
        step.effect(fx.TaskReady(task.index))


def circuit_open(step: Step, task: TaskRun, breaker_type: str) -> None:
    """`on_open: fail_fast`: the attempt fails at once, not retryable (fallback, if any)."""
    failed(step, task, TaskError(CIRCUIT_OPEN, f"circuit breaker {breaker_type} is open"))
