"""Control and completion: external events, pause/resume/cancel, finishing, the Saga.

Decides what a terminal task means for the execution (fail fast, compensate, pause
after repeated failures, or consider the downstream tasks), when the execution is
finished, and runs compensation in reverse completion order. Part of `Machine`
(executor/machine.py); see machine_core for the pattern.
"""

from __future__ import annotations

from typing import Any

from execplan.errors import FailedPrecondition
from execplan.executor import effects as fx
from execplan.executor import requests
from execplan.executor.bindings import EvaluationError, reads_of
from execplan.executor.evaluation import ExpressionBudgetExceeded
from execplan.executor.machine_core import (
    COMPENSATION,
    MAIN,
    MachineCore,
    _error,
    _error_info,
    _expression_error,
)
from execplan.executor.plan_view import BUILTIN_WAIT, NodeView
from execplan.executor.state import (
    ACTIVE_TASK_STATES,
    LEASED_TASK_STATES,
    TaskRun,
    execution_state_name,
)
from execplan.executor.values import JsonValue, fill_struct, fill_value
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import workflow_pb2 as wf


class MachineControl(MachineCore):
    # -- external events and control --------------------------------------------
    def external_event(self, name: str, data: JsonValue, request_id: str) -> str:
        params = requests.digest(name, data)
        answer = requests.repeated(self.state, request_id, "send_event", params)
        if answer is not None:
            return answer
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
            inputs = self.evaluate(f"tasks[{node.index}].inputs", node.inputs, node.reads)
        except EvaluationError:
            return ""
        return str(inputs.get("event", "")) if isinstance(inputs, dict) else ""

    def pause(self, reason: str, request_id: str) -> None:
        if requests.repeated(self.state, request_id, "pause", requests.digest(reason)) is not None:
            return
        self._require_live("pause")
        if not self.state.paused:
            self.emit("execution_paused", reason=reason, request_id=request_id)

    def resume(self, request_id: str) -> None:
        if requests.repeated(self.state, request_id, "resume", requests.digest()) is not None:
            return
        self._require_live("resume")
        if self.state.paused:
            self.emit("execution_resumed", request_id=request_id)
            self.effects.extend(
                fx.TaskReady(t.index) for t in self.state.tasks if t.state == ex.TASK_STATE_QUEUED
            )

    def cancel(self, reason: str, request_id: str, terminate: bool) -> None:
        kind = "terminate" if terminate else "cancel"
        if requests.repeated(self.state, request_id, kind, requests.digest(reason)) is not None:
            return
        self._require_live(kind)
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

    def _outputs(self) -> dict[str, JsonValue]:
        """The workflow's outputs. An output that cannot be evaluated because a task
        it reads was SKIPPED is null: a skipped task's `output` is null, so
        `tasks.register.output.version` has nothing to read, and a `when` that skips
        a task is a normal way to succeed. Any other failure, an expression over its
        budget included, raises EvaluationError (the execution fails with
        OutputError); EvaluationPending (the sandbox is still at it) passes through."""
        outputs: dict[str, JsonValue] = {}
        for name, node in self.state.plan.outputs:
            try:
                outputs[name] = self.evaluate(f"outputs.{name}", node, reads_of(node))
            except ExpressionBudgetExceeded:
                raise  # over its budget: never quietly null
            except EvaluationError:
                skipped = any(
                    self.state.task(task_id).state == ex.TASK_STATE_SKIPPED
                    for task_id in reads_of(node)
                )
                if not skipped:
                    raise
                outputs[name] = None
        return outputs

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
                fill_struct(done.outputs, self._outputs())
            except EvaluationError as exc:
                done.state = ex.EXECUTION_STATE_FAILED
                error = _expression_error("OutputError", exc)
        if error is not None:
            done.error.CopyFrom(_error_info(error))
        self.emit("execution_completed", **{f.name: v for f, v in done.ListFields()})
