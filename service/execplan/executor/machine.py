"""decide: turns inputs (start, results, timers, control) into events.

A Machine wraps one ExecutionState. Each event it emits is applied at once with
`evolve`, so later decisions in the same batch see it; the engine commits the batch
and only then carries out the collected effects. If the commit fails the engine
discards this state and rebuilds it from the store, so nothing uncommitted leaks.
"""

from __future__ import annotations

from typing import Any

from execplan.errors import FailedPrecondition, StaleToken
from execplan.executor import effects as fx
from execplan.executor.bindings import EvaluationError, evaluate, reads_of
from execplan.executor.evolve import evolve
from execplan.executor.plan_view import BUILTIN_SLEEP, BUILTIN_WAIT, NodeView, RetryView
from execplan.executor.retry import backoff_ms, should_retry
from execplan.executor.state import (
    ACTIVE_TASK_STATES,
    LEASED_TASK_STATES,
    TERMINAL_TASK_STATES,
    ExecutionState,
    TaskRun,
    execution_state_name,
    task_state_name,
)
from execplan.executor.values import JsonValue, fill_struct, fill_value
from execplan.planner.durations import parse_duration
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import workflow_pb2 as wf

MAIN = ex.TASK_PHASE_MAIN
FALLBACK = ex.TASK_PHASE_FALLBACK
COMPENSATION = ex.TASK_PHASE_COMPENSATION


def _duration_ms(value: JsonValue) -> int:
    if isinstance(value, int | float):
        return int(value * 1000)
    return parse_duration(str(value))


class Machine:
    def __init__(self, state: ExecutionState, now_ms: int) -> None:
        self.state = state
        self.now_ms = now_ms
        self.events: list[ev.ExecutionEvent] = []
        self.effects: list[fx.Effect] = []

    # -- emitting ---------------------------------------------------------------
    def emit(self, kind: str, **fields: Any) -> ev.ExecutionEvent:
        event = ev.ExecutionEvent(
            execution_id=self.state.execution_id, sequence=self.state.last_sequence + 1
        )
        event.recorded_at.FromMilliseconds(self.now_ms)
        getattr(event, kind).MergeFrom(getattr(ev, _MESSAGE[kind])(**fields))
        evolve(self.state, event)
        self.events.append(event)
        return event

    def _timer(self, task: TaskRun, purpose: int, delay_ms: int, suffix: str) -> None:
        node = self.state.plan.nodes[task.index]
        timer_id = f"{node.task_id}/{suffix}"
        fire = ev.TimerScheduled(timer_id=timer_id, task_id=node.task_id)
        fire.fire_at.FromMilliseconds(self.now_ms + delay_ms)
        self.emit(
            "timer_scheduled",
            timer_id=timer_id,
            task_id=node.task_id,
            purpose=purpose,
            fire_at=fire.fire_at,
        )
        self.effects.append(fx.ArmTimer(timer_id, self.now_ms + delay_ms))

    # -- context for expressions -------------------------------------------------
    def context(self, reads: frozenset[str] | set[str]) -> dict[str, JsonValue]:
        tasks: dict[str, JsonValue] = {}
        for task_id in reads:
            run = self.state.task(task_id)
            tasks[task_id] = {
                "output": run.output,
                "status": task_state_name(run.state),
                "error": run.error,
                "attempts": run.attempt,
            }
        return {
            "workflow": {"inputs": self.state.inputs, "name": self.state.plan.workflow_name},
            "tasks": tasks,
            "execution": {
                "id": self.state.execution_id,
                "plan_id": self.state.plan.plan_id,
                "fairness_key": self.state.fairness_key,
            },
        }

    # -- starting ---------------------------------------------------------------
    def start(
        self,
        inputs: dict[str, JsonValue],
        request_id: str,
        fairness_key: str,
        trace_context: dict[str, str],
    ) -> None:
        plan = self.state.plan
        started = ev.ExecutionStarted(
            plan_id=plan.plan_id,
            workflow_name=plan.workflow_name,
            workflow_version=plan.workflow_version,
            request_id=request_id,
            fairness_key=fairness_key,
            trace_context=trace_context,
        )
        fill_struct(started.inputs, inputs)
        self.emit("execution_started", **{f.name: v for f, v in started.ListFields()})
        for node in plan.nodes:
            if not node.upstream:
                self._consider(self.state.tasks[node.index])
        self._maybe_finish()

    # -- readiness --------------------------------------------------------------
    def _trigger_verdict(self, task: TaskRun, node: NodeView) -> bool | None:
        """True = ready, False = skip, None = not yet decidable."""
        done = task.upstream_pending == 0
        rule = node.trigger
        if rule == wf.TRIGGER_RULE_ALL_DONE:
            return True if done else None
        if rule == wf.TRIGGER_RULE_ONE_SUCCESS:
            if task.upstream_succeeded:
                return True
            return False if done else None
        if rule == wf.TRIGGER_RULE_ALL_FAILED:
            if task.upstream_succeeded or task.upstream_other:
                return False
            return True if done else None
        if task.upstream_failed or task.upstream_other:
            return False
        return True if done else None

    def _consider(self, task: TaskRun) -> None:
        if (
            task.state != ex.TASK_STATE_PENDING
            or self.state.terminal
            or self.state.cancel_requested
        ):
            return
        node = self.state.plan.nodes[task.index]
        verdict = self._trigger_verdict(task, node)
        if verdict is None:
            return
        if not verdict:
            self._skip(task, "trigger rule not satisfied")
            return
        if node.condition is not None:
            try:
                allowed = node.condition.evaluate(self.context(node.reads))
            except EvaluationError as error:
                self._fail_final(task, MAIN, _error("ConditionError", str(error)))
                return
            if allowed is not True:
                self._skip(task, f"condition is {str(allowed).lower()}: {node.condition.source}")
                return
        self._queue(task, node, MAIN, 1)

    def _skip(self, task: TaskRun, reason: str) -> None:
        node = self.state.plan.nodes[task.index]
        self.emit("task_skipped", task_id=node.task_id, reason=reason)
        self._after_terminal(task)

    def _queue(self, task: TaskRun, node: NodeView, phase: int, attempt: int) -> None:
        self.emit("task_queued", task_id=node.task_id, phase=phase, attempt=attempt)
        if phase == MAIN and node.builtin == BUILTIN_SLEEP:
            self._start_sleep(task, node)
        elif phase == MAIN and node.builtin == BUILTIN_WAIT:
            self._start_wait(task, node)
        else:
            self.effects.append(fx.TaskReady(task.index))

    def _builtin_inputs(self, task: TaskRun, node: NodeView) -> dict[str, JsonValue] | None:
        try:
            value = evaluate(node.inputs, self.context(node.reads))
        except EvaluationError as error:
            self._fail_final(task, MAIN, _error("BindingError", str(error)))
            return None
        return value if isinstance(value, dict) else {}

    def _start_sleep(self, task: TaskRun, node: NodeView) -> None:
        inputs = self._builtin_inputs(task, node)
        if inputs is None:
            return
        delay = _duration_ms(inputs.get("duration", 0))
        self._timer(task, ev.TIMER_PURPOSE_SLEEP, delay, "sleep")

    def _start_wait(self, task: TaskRun, node: NodeView) -> None:
        inputs = self._builtin_inputs(task, node)
        if inputs is None:
            return
        name = str(inputs.get("event", ""))
        if name in self.state.mailbox:
            self._succeed(task, MAIN, {"event": name, "data": self.state.mailbox[name][-1]})
            return
        timeout = inputs.get("timeout")
        delay = _duration_ms(timeout) if timeout else 0
        if delay:
            self._timer(task, ev.TIMER_PURPOSE_EVENT_TIMEOUT, delay, f"wait:{name}")
        else:
            self.emit(
                "timer_scheduled",
                timer_id="",
                task_id=node.task_id,
                purpose=ev.TIMER_PURPOSE_EVENT_TIMEOUT,
            )

    # -- dispatch ---------------------------------------------------------------
    def dispatch(self, index: int, worker_id: str) -> bool:
        """Leases a QUEUED task to a worker; False if it failed to resolve inputs."""
        task = self.state.tasks[index]
        node = self.state.plan.nodes[index]
        task_type, bindings = node.type, node.inputs
        if task.phase != MAIN:
            side = node.fallback if task.phase == FALLBACK else node.compensation
            assert side is not None
            task_type = side.type
            bindings = node.inputs if side.inherits_inputs else side.inputs
        try:
            resolved = evaluate(
                bindings,
                self.context(self.state.plan.nodes[index].reads | _side_reads(node, task.phase)),
            )
        except EvaluationError as error:
            self._fail_final(task, task.phase, _error("BindingError", str(error)))
            return False
        epoch = task.epoch + 1
        key = f"{self.state.execution_id}/{node.task_id}/{_PHASE_NAME[task.phase]}/{task.attempt}"
        self.emit(
            "task_dispatched",
            task_id=node.task_id,
            phase=task.phase,
            token=ev.AttemptToken(attempt=task.attempt, lease_epoch=epoch),
            worker_id=worker_id,
            idempotency_key=key,
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

    def check_token(self, task_id: str, phase: int, attempt: int, epoch: int) -> TaskRun:
        index = self.state.plan.index_of.get(task_id)
        if index is None:
            raise StaleToken(f"unknown task {task_id!r}")
        task = self.state.tasks[index]
        if (
            task.state not in LEASED_TASK_STATES
            or task.phase != phase
            or task.attempt != attempt
            or task.epoch != epoch
        ):
            raise StaleToken(
                f"stale token for {task_id} attempt {attempt} epoch {epoch} "
                f"(current attempt {task.attempt} epoch {task.epoch}, "
                f"{task_state_name(task.state)})"
            )
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

    # -- external events and control --------------------------------------------
    def external_event(self, name: str, data: JsonValue, request_id: str) -> str:
        waiting = ""
        for task in self.state.tasks:
            node = self.state.plan.nodes[task.index]
            if (
                task.state == ex.TASK_STATE_WAITING
                and node.builtin == BUILTIN_WAIT
                and self._awaited_event(task, node) == name
            ):
                waiting = node.task_id
                break
        value = ev.ExternalEventReceived(name=name, request_id=request_id, task_id=waiting)
        fill_value(value.data, data)
        self.emit("external_event_received", **{f.name: v for f, v in value.ListFields()})
        if waiting:
            task = self.state.task(waiting)
            self._succeed(task, MAIN, {"event": name, "data": data})
        return waiting

    def _awaited_event(self, task: TaskRun, node: NodeView) -> str:
        try:
            inputs = evaluate(node.inputs, self.context(node.reads))
        except EvaluationError:
            return ""
        return str(inputs.get("event", "")) if isinstance(inputs, dict) else ""

    def pause(self, reason: str, request_id: str) -> None:
        self._require_live("pause")
        if not self.state.paused:
            self.emit("execution_paused", reason=reason, request_id=request_id)

    def resume(self, request_id: str) -> None:
        self._require_live("resume")
        if self.state.paused:
            self.emit("execution_resumed", request_id=request_id)
            self.effects.extend(
                fx.TaskReady(t.index) for t in self.state.tasks if t.state == ex.TASK_STATE_QUEUED
            )

    def cancel(self, reason: str, request_id: str, terminate: bool) -> None:
        self._require_live("terminate" if terminate else "cancel")
        self.emit(
            "execution_cancel_requested", reason=reason, request_id=request_id, terminate=terminate
        )
        error = _error("Terminated" if terminate else "Cancelled", reason or "requested")
        if terminate:
            self._finish(ex.EXECUTION_STATE_TERMINATED, None, error)
        elif (
            self.state.plan.on_failure == wf.ON_FAILURE_COMPENSATE
            and self.state.state != ex.EXECUTION_STATE_COMPENSATING
        ):
            self._cancel_active("execution cancelled")
            self._start_compensation("execution cancelled")
        elif self.state.state != ex.EXECUTION_STATE_COMPENSATING:
            self._finish(ex.EXECUTION_STATE_CANCELLED, None, error)

    def _require_live(self, action: str) -> None:
        if self.state.terminal:
            state = execution_state_name(self.state.state)
            raise FailedPrecondition(f"cannot {action} execution in state {state}")

    # -- completion -------------------------------------------------------------
    def _after_terminal(self, task: TaskRun) -> None:
        if self.state.terminal:
            return
        if task.state == ex.TASK_STATE_FAILED:
            policy = self.state.plan.on_failure
            if policy == wf.ON_FAILURE_COMPENSATE:
                self._cancel_active("another task failed")
                self._start_compensation(f"task {self._id(task)} failed")
                return
            if self.state.plan.fail_fast:
                self._finish(ex.EXECUTION_STATE_FAILED, task)
                return
            limit = self.state.plan.pause_after_failures
            if limit and self.state.consecutive_failures >= limit and not self.state.paused:
                self.emit(
                    "execution_paused", reason=f"{limit} consecutive task failures", request_id=""
                )
        for child in self.state.plan.nodes[task.index].downstream:
            self._consider(self.state.tasks[child])
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        if self.state.terminal or self.state.state == ex.EXECUTION_STATE_COMPENSATING:
            return
        if self.state.completions < len(self.state.tasks):
            return
        if self.state.any_failed:
            failed = next(t for t in self.state.tasks if t.state == ex.TASK_STATE_FAILED)
            self._finish(ex.EXECUTION_STATE_FAILED, failed)
        else:
            self._finish(ex.EXECUTION_STATE_SUCCEEDED, None)

    def _start_compensation(self, reason: str) -> None:
        done = sorted(
            (
                t
                for t in self.state.tasks
                if t.state == ex.TASK_STATE_SUCCEEDED
                and self.state.plan.nodes[t.index].compensation is not None
            ),
            key=lambda t: -t.completed_order,
        )
        self.emit("compensation_started", task_ids=[self._id(t) for t in done], reason=reason)
        self._next_compensation()

    def _next_compensation(self) -> None:
        queue = self.state.compensation_queue
        if queue:
            task = self.state.tasks[queue[0]]
            self._queue(task, self.state.plan.nodes[task.index], COMPENSATION, 1)
            return
        if self.state.cancel_requested:
            self._finish(ex.EXECUTION_STATE_CANCELLED, None, _error("Cancelled", "cancelled"))
        else:
            failed = next((t for t in self.state.tasks if t.state == ex.TASK_STATE_FAILED), None)
            self._finish(ex.EXECUTION_STATE_COMPENSATED, failed)

    def _cancel_active(self, reason: str, *, pending_too: bool = False) -> None:
        for task in self.state.tasks:
            if pending_too and task.state == ex.TASK_STATE_PENDING:
                self.emit(
                    "task_cancelled",
                    task_id=self._id(task),
                    phase=task.phase,
                    reason="execution ended before the task could run",
                )
            elif task.state in ACTIVE_TASK_STATES:
                if task.state in LEASED_TASK_STATES:
                    self.effects.append(
                        fx.CancelLease(
                            task.index, task.worker_id, task.attempt, task.epoch, task.phase, reason
                        )
                    )
                    self.effects.append(fx.ReleaseLease(task.index, task.worker_id))
                self.emit("task_cancelled", task_id=self._id(task), phase=task.phase, reason=reason)

    def _finish(
        self, outcome: int, failed: TaskRun | None, error: dict[str, Any] | None = None
    ) -> None:
        self._cancel_active("execution finished", pending_too=True)
        done = ev.ExecutionCompleted(state=outcome)  # type: ignore[arg-type]
        if failed is not None:
            done.failed_task_id = self._id(failed)
            error = error or failed.error or _error("TaskFailed", "task failed")
            error = {**error, "message": f"task {self._id(failed)}: {error.get('message', '')}"}
        if outcome == ex.EXECUTION_STATE_SUCCEEDED:
            try:
                outputs = {
                    name: evaluate(node, self.context(set(self.state.plan.index_of)))
                    for name, node in self.state.plan.outputs
                }
                fill_struct(done.outputs, outputs)
            except EvaluationError as exc:
                done.state = ex.EXECUTION_STATE_FAILED
                error = _error("OutputError", str(exc))
        if error is not None:
            done.error.CopyFrom(_error_info(error))
        self.emit("execution_completed", **{f.name: v for f, v in done.ListFields()})

    def _id(self, task: TaskRun) -> str:
        return self.state.plan.nodes[task.index].task_id


def _side_reads(node: NodeView, phase: int) -> frozenset[str]:
    side = (
        node.fallback if phase == FALLBACK else node.compensation if phase == COMPENSATION else None
    )
    return frozenset(reads_of(side.inputs)) if side is not None else frozenset()


def _error(kind: str, message: str, retryable: bool = False) -> dict[str, Any]:
    return {"type": kind, "message": message, "retryable": retryable}


def _error_info(error: dict[str, Any]) -> ex.ErrorInfo:
    return ex.ErrorInfo(
        type=str(error.get("type", "")),
        message=str(error.get("message", "")),
        retryable=bool(error.get("retryable", False)),
    )


_PHASE_NAME: dict[int, str] = {MAIN: "main", FALLBACK: "fallback", COMPENSATION: "compensation"}

_MESSAGE = {
    field.name: field.message_type.name
    for field in ev.ExecutionEvent.DESCRIPTOR.oneofs_by_name["kind"].fields
    if field.message_type is not None
}

__all__ = ["TERMINAL_TASK_STATES", "Machine"]
