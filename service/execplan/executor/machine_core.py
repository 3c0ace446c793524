"""The shared core of the Machine: its state, `emit`, timers and expression context.

`Machine` (executor/machine.py) is put together from one mixin per concern:
machine_readiness (trigger rules, skip/queue, the sleep and wait_for_event builtins),
machine_results (dispatch, acks, results, retries, breakers, deadlines, timers) and
machine_control (external events, pause/resume/cancel, completion and the Saga).
Each inherits `MachineCore`, which holds the state and the primitives every concern
uses. The methods one concern calls on another are declared here for the type
checker only, so mypy checks every cross-concern call; at run time they resolve to
the mixin that defines them.
"""

from __future__ import annotations

from collections.abc import Set
from typing import TYPE_CHECKING, Any

from execplan.executor import effects as fx
from execplan.executor.bindings import BindingNode, EvaluationError, StructBinding
from execplan.executor.evaluation import (
    BUDGET_EXCEEDED,
    DEFAULT_EVALUATOR,
    Evaluator,
    ExpressionBudgetExceeded,
    Where,
    evaluate_binding,
)
from execplan.executor.evolve import evolve
from execplan.executor.state import ExecutionState, TaskRun, task_state_name
from execplan.executor.values import JsonValue
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex

if TYPE_CHECKING:
    from execplan.executor.plan_view import NodeView

MAIN = ex.TASK_PHASE_MAIN
FALLBACK = ex.TASK_PHASE_FALLBACK
COMPENSATION = ex.TASK_PHASE_COMPENSATION


class MachineCore:
    def __init__(
        self, state: ExecutionState, now_ms: int, evaluator: Evaluator = DEFAULT_EVALUATOR
    ) -> None:
        """`evaluator`: how expressions too expensive to run inline are evaluated
        (executor/evaluation.py); the default waits for the sandbox, the engine's
        raises EvaluationPending instead."""
        self.state = state
        self.now_ms = now_ms
        self.evaluator = evaluator
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

    # -- expressions ----------------------------------------------------------------
    def evaluate(self, field: str, node: BindingNode, reads: Set[str]) -> JsonValue:
        """The value of a binding (`field` names it in errors: `tasks[2].when`);
        raises EvaluationError (ExpressionBudgetExceeded) or EvaluationPending."""
        if type(node) is StructBinding and not node.fields:  # no inputs: no context
            return {}
        where = Where(self.state.execution_id, field)
        return evaluate_binding(node, self.context(reads), self.evaluator, where)

    def context(self, reads: Set[str]) -> dict[str, JsonValue]:
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

    def _id(self, task: TaskRun) -> str:
        return self.state.plan.nodes[task.index].task_id

    if TYPE_CHECKING:
        # Defined by the concern mixins (see the module docstring).
        def _consider(self, task: TaskRun) -> None: ...

        def _queue(self, task: TaskRun, node: NodeView, phase: int, attempt: int) -> None: ...

        def _succeed(self, task: TaskRun, phase: int, output: JsonValue) -> None: ...

        def _fail_final(self, task: TaskRun, phase: int, error: dict[str, Any]) -> None: ...

        def _after_terminal(self, task: TaskRun) -> None: ...

        def _maybe_finish(self) -> None: ...

        def _next_compensation(self) -> None: ...

        def _finish(
            self, outcome: int, failed: TaskRun | None, error: dict[str, Any] | None = None
        ) -> None: ...


def _error(kind: str, message: str, retryable: bool = False) -> dict[str, Any]:
    return {"type": kind, "message": message, "retryable": retryable}


def _expression_error(kind: str, error: EvaluationError) -> dict[str, Any]:
    """`kind` for what the expression did wrong; ExpressionBudgetExceeded when it ran out
    of its budget. Neither is retryable: the same expression would fail the same way."""
    if isinstance(error, ExpressionBudgetExceeded):
        kind = BUDGET_EXCEEDED
    return _error(kind, str(error))


def _error_info(error: dict[str, Any]) -> ex.ErrorInfo:
    return ex.ErrorInfo(
        type=str(error.get("type", "")),
        message=str(error.get("message", "")),
        retryable=bool(error.get("retryable", False)),
    )


_MESSAGE = {
    field.name: field.message_type.name
    for field in ev.ExecutionEvent.DESCRIPTOR.oneofs_by_name["kind"].fields
    if field.message_type is not None
}
