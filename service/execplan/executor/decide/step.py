"""One step of one execution: the events it decided and the effects they ask for.

Every rule of the core (`flow`, `attempts`, `control`, `builtins`) is a function of
a `Step`. `emit` stamps an event (execution id, next sequence, the step's time),
folds it into the state at once, so the next rule sees it, and records it; the
state is written nowhere else. The shell commits `events` and only then carries
out `effects`; if the commit fails it discards this state and rebuilds it from the
log, so nothing uncommitted leaks. Expressions are evaluated through the `evaluator`
the step is given (expressions/evaluation.py).
"""

from __future__ import annotations

from collections.abc import Set

from execplan.executor.decide import effects as fx
from execplan.executor.decide import events
from execplan.executor.decide.evolve import evolve
from execplan.executor.expressions.bindings import BindingNode, StructBinding
from execplan.executor.expressions.evaluation import (
    DEFAULT_EVALUATOR,
    Evaluator,
    Where,
    evaluate_binding,
)
from execplan.executor.plan_view import NodeView
from execplan.executor.state import ExecutionState, TaskRun, task_state_name
from execplan.executor.values import JsonValue
from execplan.v1 import events_pb2 as ev


class Step:
    __slots__ = ("effects", "evaluator", "events", "now_ms", "state")

    def __init__(
        self, state: ExecutionState, now_ms: int, evaluator: Evaluator = DEFAULT_EVALUATOR
    ) -> None:
        self.state = state
        self.now_ms = now_ms
        self.evaluator = evaluator
        self.events: list[ev.ExecutionEvent] = []
        self.effects: list[fx.Effect] = []

    def emit(self, event: ev.ExecutionEvent) -> None:
        event.execution_id = self.state.execution_id
        event.sequence = self.state.last_sequence + 1
        event.recorded_at.FromMilliseconds(self.now_ms)
        evolve(self.state, event)
        self.events.append(event)

    def effect(self, effect: fx.Effect) -> None:
        self.effects.append(effect)

    def node(self, task: TaskRun) -> NodeView:
        return self.state.plan.nodes[task.index]

    def task_id(self, task: TaskRun) -> str:
        return self.state.plan.nodes[task.index].task_id

    def timer(self, task: TaskRun, purpose: int, delay_ms: int, suffix: str) -> None:
        """A durable timer of `task`: recorded, then armed once the event is committed."""
        task_id = self.task_id(task)
        timer_id = f"{task_id}/{suffix}"
        fire_at = self.now_ms + delay_ms
        self.emit(events.timer_scheduled(timer_id, task_id, purpose, fire_at))
        self.effect(fx.ArmTimer(timer_id, fire_at))

    def evaluate(self, field: str, node: BindingNode, reads: Set[str]) -> JsonValue:
        """The value of a binding (`field` names it in errors: `tasks[2].when`); raises
        EvaluationError (ExpressionBudgetExceeded) or, with the runtime's evaluator,
        EvaluationPending (expressions/evaluation.py)."""
        if type(node) is StructBinding and not node.fields:  # no inputs: no context
            return {}
        where = Where(self.state.execution_id, field)
        return evaluate_binding(node, self.context(reads), self.evaluator, where)

    def context(self, reads: Set[str]) -> dict[str, JsonValue]:
        """What an expression may read: the workflow, the execution, and the tasks in
        `reads` (only those, so a context stays small whatever the plan's size)."""
        tasks: dict[str, JsonValue] = {}
        for task_id in reads:
            run = self.state.task(task_id)
            tasks[task_id] = {
                "output": run.output,
                "status": task_state_name(run.state),
                "error": run.error.as_dict() if run.error is not None else None,
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
