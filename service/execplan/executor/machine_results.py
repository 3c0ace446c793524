"""Attempts: dispatch, acks, results, retries and fallback, breakers, deadlines, timers.

Leases a queued task to a worker (checking attempt tokens on every report), turns
a result or a failure into the next step (retry with backoff, the fallback, or a
final outcome) and reacts to fired timers. Part of `Machine` (executor/machine.py);
see machine_core for the pattern.
"""

from __future__ import annotations

from typing import Any

from execplan.errors import StaleToken
from execplan.executor import effects as fx
from execplan.executor.bindings import EvaluationError, reads_of
from execplan.executor.fencing import Claim, phase_name, stale
from execplan.executor.machine_core import (
    COMPENSATION,
    FALLBACK,
    MAIN,
    MachineCore,
    _error,
    _error_info,
    _expression_error,
)
from execplan.executor.plan_view import NodeView, RetryView
from execplan.executor.retry import backoff_ms, should_retry
from execplan.executor.state import LEASED_TASK_STATES, TaskRun
from execplan.executor.values import JsonValue, fill_value
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex


class MachineResults(MachineCore):
    # -- dispatch ---------------------------------------------------------------
    def dispatch(self, index: int, worker_id: str, principal: str = "") -> bool:
        """Leases a QUEUED task to a worker (of `principal`, "" with authentication
        off); False if it failed to resolve inputs."""
        task = self.state.tasks[index]
        node = self.state.plan.nodes[index]
        task_type, bindings = node.type_for(task.phase), node.inputs
        field = f"tasks[{index}].inputs"
        side = node.side(task.phase)
        if side is not None and not side.inherits_inputs:
            bindings, field = side.inputs, f"tasks[{index}].{phase_name(task.phase)}.inputs"
        try:
            resolved = self.evaluate(field, bindings, node.reads | _side_reads(node, task.phase))
        except EvaluationError as error:
            self._fail_final(task, task.phase, _expression_error("BindingError", error))
            return False
        epoch = task.epoch + 1
        key = f"{self.state.execution_id}/{node.task_id}/{phase_name(task.phase)}/{task.attempt}"
        self.emit(
            "task_dispatched",
            task_id=node.task_id,
            phase=task.phase,
            token=ev.AttemptToken(attempt=task.attempt, lease_epoch=epoch),
            worker_id=worker_id,
            idempotency_key=key,
            principal=principal,
        )
        self.effects.append(
            fx.SendDispatch(
                index=index,
                worker_id=worker_id,
                attempt=task.attempt,
                epoch=epoch,
                phase=task.phase,
                task_type=task_type,
                inputs=resolved if isinstance(resolved, dict) else {},
                idempotency_key=key,
            )
        )
        return True

    def check_token(self, task_id: str, claim: Claim) -> TaskRun:
        """The task whose current lease `claim` names; StaleToken (why not) otherwise."""
        index = self.state.plan.index_of.get(task_id)
        if index is None:
            raise StaleToken(f"unknown task {task_id[:200]!r}")
        task = self.state.tasks[index]
        reason = stale(task, self.state.plan.nodes[index], claim)
        if reason:
            raise StaleToken(reason)
        return task

    def acknowledged(self, task: TaskRun) -> None:
        if task.state == ex.TASK_STATE_DISPATCHED:
            node = self.state.plan.nodes[task.index]
            self.emit(
                "task_started",
                task_id=node.task_id,
                phase=task.phase,
                token=ev.AttemptToken(attempt=task.attempt, lease_epoch=task.epoch),
                worker_id=task.worker_id,
            )

    def requeue(self, task: TaskRun, reason: str) -> None:
        node = self.state.plan.nodes[task.index]
        if task.worker_id:
            # The worker may still run it (a reconnect that did not claim it, a lost
            # stream): after the commit it is told to stop, before it is re-dispatched.
            self.effects.append(
                fx.CancelLease(
                    task.index, task.worker_id, task.attempt, task.epoch, task.phase, reason
                )
            )
        self.effects.append(fx.ReleaseLease(task.index, task.worker_id))
        self.emit(
            "task_requeued",
            task_id=node.task_id,
            phase=task.phase,
            token=ev.AttemptToken(attempt=task.attempt, lease_epoch=task.epoch),
            reason=reason,
        )
        self.effects.append(fx.TaskReady(task.index))

    # -- results ----------------------------------------------------------------
    def succeeded(self, task: TaskRun, output: JsonValue) -> None:
        self.effects.append(fx.ReleaseLease(task.index, task.worker_id))
        self._succeed(task, task.phase, output)

    def _succeed(self, task: TaskRun, phase: int, output: JsonValue) -> None:
        node = self.state.plan.nodes[task.index]
        value = ev.TaskSucceeded(
            task_id=node.task_id,
            phase=phase,  # type: ignore[arg-type]
            token=ev.AttemptToken(attempt=task.attempt, lease_epoch=task.epoch),
        )
        fill_value(value.output, output)
        self.emit("task_succeeded", **{f.name: v for f, v in value.ListFields()})
        if phase == COMPENSATION:
            self._next_compensation()
        else:
            self._after_terminal(task)

    def failed(self, task: TaskRun, error: dict[str, Any], timeout_kind: int = 0) -> None:
        # Also for attempts that never got a lease (schedule_to_start, schedule_to_close,
        # an open circuit breaker): then there is no worker slot to free.
        if task.state in LEASED_TASK_STATES:
            self.effects.append(fx.ReleaseLease(task.index, task.worker_id))
        node = self.state.plan.nodes[task.index]
        policy = self._policy(node, task.phase)
        retry = should_retry(policy, task.attempt, error["type"], bool(error.get("retryable")))
        fallback_follows = not retry and task.phase == MAIN and node.fallback is not None
        final = not retry and not fallback_follows
        token = ev.AttemptToken(attempt=task.attempt, lease_epoch=task.epoch)
        if timeout_kind:
            self.emit(
                "task_timed_out",
                task_id=node.task_id,
                phase=task.phase,
                token=token,
                timeout=timeout_kind,
                final=final,
            )
        else:
            self.emit(
                "task_failed",
                task_id=node.task_id,
                phase=task.phase,
                token=token,
                error=_error_info(error),
                final=final,
            )
        if retry:
            self._schedule_retry(task, node, policy)
        elif fallback_follows:
            self._queue(task, node, FALLBACK, 1)
        else:
            self._after_final_failure(task)

    def _fail_final(self, task: TaskRun, phase: int, error: dict[str, Any]) -> None:
        node = self.state.plan.nodes[task.index]
        self.emit(
            "task_failed",
            task_id=node.task_id,
            phase=phase,
            token=ev.AttemptToken(attempt=task.attempt, lease_epoch=task.epoch),
            error=_error_info(error),
            final=True,
        )
        self._after_final_failure(task)

    def _after_final_failure(self, task: TaskRun) -> None:
        if task.phase == COMPENSATION:
            self._finish(ex.EXECUTION_STATE_COMPENSATION_FAILED, task)
        else:
            self._after_terminal(task)

    def _policy(self, node: NodeView, phase: int) -> RetryView:
        if phase == FALLBACK and node.fallback is not None:
            return node.fallback.retry
        if phase == COMPENSATION and node.compensation is not None:
            return node.compensation.retry
        return node.retry

    def _schedule_retry(self, task: TaskRun, node: NodeView, policy: RetryView) -> None:
        delay = backoff_ms(policy, self.state.execution_id, node.task_id, task.phase, task.attempt)
        fire_at = ev.TaskRetryScheduled().fire_at
        fire_at.FromMilliseconds(self.now_ms + delay)
        self.emit(
            "task_retry_scheduled",
            task_id=node.task_id,
            phase=task.phase,
            next_attempt=task.attempt + 1,
            fire_at=fire_at,
            reason=f"attempt {task.attempt} failed; retry in {delay} ms",
        )
        if delay <= 0:
            self._queue(task, node, task.phase, task.attempt + 1)
        else:
            self._timer(task, ev.TIMER_PURPOSE_RETRY_BACKOFF, delay, f"retry:{task.attempt + 1}")

    # -- circuit breakers and deadlines ------------------------------------------
    def park(self, task: TaskRun, breaker_type: str, parked: bool) -> None:
        """Holds a QUEUED task behind an open breaker, or lets a PARKED one queue again."""
        self.emit(
            "task_parked",
            task_id=self._id(task),
            phase=task.phase,
            breaker_type=breaker_type,
            parked=parked,
        )
        if not parked:
            self.effects.append(fx.TaskReady(task.index))

    def circuit_open(self, task: TaskRun, breaker_type: str) -> None:
        """`on_open: fail_fast`: the attempt fails at once, not retryable (fallback, if any)."""
        self.failed(task, _error("CircuitOpen", f"circuit breaker {breaker_type} is open"))

    def deadline_passed(self, task: TaskRun, kind: int, *, give_up: bool = False) -> None:
        """A timeout of an attempt (or, with `give_up`, of the whole task) fired."""
        if task.state in LEASED_TASK_STATES:
            self.effects.append(
                fx.CancelLease(
                    task.index, task.worker_id, task.attempt, task.epoch, task.phase, "timed out"
                )
            )
        name = ev.TimeoutKind.Name(kind).removeprefix("TIMEOUT_KIND_").lower()  # type: ignore[arg-type]
        self.failed(task, _error("Timeout", f"{name} timeout", retryable=not give_up), kind)

    # -- timers -----------------------------------------------------------------
    def timer_fired(self, timer_id: str) -> None:
        timer = self.state.timers.get(timer_id)
        if timer is None or self.state.terminal:
            return
        task = self.state.tasks[timer.task_index]
        node = self.state.plan.nodes[task.index]
        self.emit("timer_fired", timer_id=timer_id, task_id=node.task_id, purpose=timer.purpose)
        if timer.purpose == ev.TIMER_PURPOSE_RETRY_BACKOFF:
            if task.state == ex.TASK_STATE_BACKING_OFF:
                self._queue(task, node, task.phase, task.attempt + 1)
        elif timer.purpose == ev.TIMER_PURPOSE_SLEEP:
            if task.state == ex.TASK_STATE_WAITING:
                self._succeed(task, MAIN, {"slept_ms": timer.fire_at_ms - task.started_ms})
        elif (
            timer.purpose == ev.TIMER_PURPOSE_EVENT_TIMEOUT and task.state == ex.TASK_STATE_WAITING
        ):
            self._fail_final(task, MAIN, _error("Timeout", "no event before the timeout"))


def _side_reads(node: NodeView, phase: int) -> frozenset[str]:
    side = (
        node.fallback if phase == FALLBACK else node.compensation if phase == COMPENSATION else None
    )
    return frozenset(reads_of(side.inputs)) if side is not None else frozenset()
