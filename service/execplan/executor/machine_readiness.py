"""Readiness: when a task may run, and starting an execution.

Trigger rules and conditions decide whether a PENDING task is queued or skipped;
queuing a builtin (sleep, wait_for_event) arms its timer instead of asking for a
worker. Part of `Machine` (executor/machine.py); see machine_core for the pattern.
"""

from __future__ import annotations

from execplan.executor import effects as fx
from execplan.executor.bindings import EvaluationError
from execplan.executor.machine_core import MAIN, MachineCore, _error, _expression_error
from execplan.executor.plan_view import BUILTIN_SLEEP, BUILTIN_WAIT, NodeView
from execplan.executor.state import TaskRun
from execplan.executor.values import JsonValue, fill_struct
from execplan.planner.durations import parse_duration
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import workflow_pb2 as wf


def _duration_ms(value: JsonValue) -> int | None:
    """Milliseconds of a builtin's duration input (seconds as a number, or text
    like `5m`); None when it is not a duration, e.g. bad data from an upstream."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value * 1000) if value >= 0 else None
    try:
        return parse_duration(str(value))
    except ValueError:
        return None


class MachineReadiness(MachineCore):
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
                allowed = self.evaluate(f"tasks[{node.index}].when", node.condition, node.reads)
            except EvaluationError as error:
                self._fail_final(task, MAIN, _expression_error("ConditionError", error))
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
            value = self.evaluate(f"tasks[{node.index}].inputs", node.inputs, node.reads)
        except EvaluationError as error:
            self._fail_final(task, MAIN, _expression_error("BindingError", error))
            return None
        return value if isinstance(value, dict) else {}

    def _start_sleep(self, task: TaskRun, node: NodeView) -> None:
        inputs = self._builtin_inputs(task, node)
        if inputs is None:
            return
        delay = _duration_ms(inputs.get("duration", 0))
        if delay is None:
            self._bad_duration(task, "duration", inputs.get("duration"))
            return
        self._timer(task, ev.TIMER_PURPOSE_SLEEP, delay, "sleep")

    def _bad_duration(self, task: TaskRun, name: str, value: JsonValue) -> None:
        self._fail_final(
            task, MAIN, _error("BindingError", f"input {name!r} is not a duration: {value!r}")
        )

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
        if delay is None:
            self._bad_duration(task, "timeout", timeout)
            return
        if delay:
            self._timer(task, ev.TIMER_PURPOSE_EVENT_TIMEOUT, delay, f"wait:{name}")
        else:
            self.emit(
                "timer_scheduled",
                timer_id="",
                task_id=node.task_id,
                purpose=ev.TIMER_PURPOSE_EVENT_TIMEOUT,
            )
