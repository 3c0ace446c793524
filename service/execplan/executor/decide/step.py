"""One step of one execution: the events it decided and the effects they ask for.

Every rule of the core (`flow`, `attempts`, `control`, `builtins`) is a function of
a `Step`. `emit` stamps an event (execution id, next sequence, the step's time),
folds it into the state at once, so the next rule sees it, and records it; the
state is written nowhere else (`emit_folded` does the same for the events emitted
most, folding them from the values they were built from: folds.py). The
shell commits `events` and only then carries out `effects`; if the commit fails it
discards this state and rebuilds it from the log, so nothing uncommitted leaks.
Expressions are evaluated through the `evaluator` the step is given
(expressions/evaluation.py).
"""

from __future__ import annotations

from collections.abc import Callable, Set
from typing import Concatenate, ParamSpec

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
from execplan.executor.state import ExecutionState, Limits, Scope, TaskRun, task_state_name
from execplan.executor.values import JsonValue
from execplan.v1 import events_pb2 as ev
from google.protobuf.timestamp_pb2 import Timestamp

DEFAULT_LIMITS = Limits()
_UNSET: object = object()
P = ParamSpec("P")


class _Stamps:
    """A time as the Timestamp each event copies, kept for the steps after: the
    steps of one round share their time, and converting it costs more than the copy.
    (The pair is read and replaced whole; the Timestamp is only ever copied from.)"""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = (0, Timestamp())

    def of(self, now_ms: int) -> Timestamp:
        last = self._last
        if last[0] != now_ms:
            stamp = Timestamp()
            stamp.FromMilliseconds(now_ms)
            last = self._last = (now_ms, stamp)
        return last[1]


_STAMPS = _Stamps()


class Step:
    __slots__ = (
        "_limits",
        "_stamp",
        "effects",
        "evaluator",
        "events",
        "expanding",
        "kinds",
        "now_ms",
        "state",
    )

    def __init__(
        self,
        state: ExecutionState,
        now_ms: int,
        evaluator: Evaluator = DEFAULT_EVALUATOR,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.state = state
        self.now_ms = now_ms
        self.evaluator = evaluator
        self._limits = limits
        self.events: list[ev.ExecutionEvent] = []
        # Each event's kind (`kinds[i]` is that of `events[i]`): known here, so the
        # commit and the observers need not ask the message (a protobuf call) again.
        self.kinds: list[str] = []
        self.effects: list[fx.Effect] = []
        # for_each tasks whose instances are being started (decide/expand.py): an
        # instance that ends at once must not start the next one from inside.
        self.expanding: set[int] = set()
        # `now_ms` as a Timestamp, copied into each event (cheaper than converting).
        self._stamp: Timestamp | None = None

    @property
    def limits(self) -> Limits:
        """What may grow at run time: as recorded when the execution started (so a
        restart with other settings, and replay, decide the same), else the
        engine's (an execution recorded before they were)."""
        return self.state.limits or self._limits

    def emit(self, event: ev.ExecutionEvent) -> None:
        event.execution_id = self.state.execution_id
        event.sequence = self.state.last_sequence + 1
        stamp = self._stamp
        if stamp is None:
            stamp = self._stamp = _STAMPS.of(self.now_ms)
        event.recorded_at.CopyFrom(stamp)
        self.kinds.append(evolve(self.state, event, self.now_ms))
        self.events.append(event)

    def emit_folded(
        self,
        event: ev.ExecutionEvent,
        kind: str,
        fold: Callable[Concatenate[ExecutionState, int, P], None],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> None:
        """`emit`, for the events emitted most (decide/folds.py): `fold` gets the
        values `event` (of `kind`) was built from (`args`, `kwargs`), the ones `evolve`
        would read back from it, so the fold does not re-read the message it was just
        given."""
        state = self.state
        now_ms = self.now_ms
        sequence = state.last_sequence + 1
        event.execution_id = state.execution_id
        event.sequence = sequence
        stamp = self._stamp
        if stamp is None:
            stamp = self._stamp = _STAMPS.of(now_ms)
        event.recorded_at.CopyFrom(stamp)
        fold(state, now_ms, *args, **kwargs)
        state.last_sequence = sequence
        state.updated_ms = now_ms
        self.kinds.append(kind)
        self.events.append(event)

    def effect(self, effect: fx.Effect) -> None:
        self.effects.append(effect)

    def node(self, task: TaskRun) -> NodeView:
        return self.state.node(task.index)

    def task_id(self, task: TaskRun) -> str:
        return self.state.task_id(task.index)

    def field(self, task: TaskRun, suffix: str) -> str:
        """How errors name a field of a task's node: `tasks[2].when`; in a sub-plan
        `agent/tasks[0].inputs` (an instance names its for_each task's field)."""
        scope = self.state.scope_of(task.index)
        index = self.state.node(task.index).index
        return f"{scope.prefix if scope else ''}tasks[{index}]{suffix}"

    def timer(self, task: TaskRun, purpose: int, delay_ms: int, suffix: str) -> None:
        """A durable timer of `task`: recorded, then armed once the event is committed."""
        task_id = self.task_id(task)
        timer_id = f"{task_id}/{suffix}"
        fire_at = self.now_ms + delay_ms
        self.emit(events.timer_scheduled(timer_id, task_id, purpose, fire_at))
        self.effect(fx.ArmTimer(timer_id, fire_at))

    def evaluate(
        self,
        field: str,
        node: BindingNode,
        reads: Set[str],
        task: TaskRun | None = None,
        *,
        output: JsonValue = _UNSET,
        scope: Scope | None = None,
    ) -> JsonValue:
        """The value of a binding (`field` names it in errors: `tasks[2].when`); raises
        EvaluationError (ExpressionBudgetExceeded) or, with the runtime's evaluator,
        EvaluationPending (expressions/evaluation.py). With `task`, its runtime
        variables (`item`, `iteration`...) and its sub-plan's names are in scope;
        `output` is that of `repeat.until`."""
        if type(node) is StructBinding and not node.fields:  # no inputs: no context
            return {}
        where = Where(self.state.execution_id, field)
        context = self.context(reads, task, scope)
        if output is not _UNSET:
            context["output"] = output
        return evaluate_binding(node, context, self.evaluator, where)

    def context(
        self, reads: Set[str], task: TaskRun | None = None, scope: Scope | None = None
    ) -> dict[str, JsonValue]:
        """What an expression may read: the workflow, the execution, and the tasks in
        `reads` (only those, so a context stays small whatever the plan's size). For a
        task of a sub-plan, `workflow` and `tasks.ID` are the sub-plan's; for an
        instance or a repeat, its variables are added (docs/runtime-plans.md)."""
        state = self.state
        if scope is None and task is not None:
            scope = state.scope_of(task.index)
        prefix = scope.prefix if scope is not None else ""
        tasks: dict[str, JsonValue] = {}
        for task_id in reads:
            run = state.task(prefix + task_id)
            tasks[task_id] = {
                "output": run.output,
                "status": task_state_name(run.state),
                "error": run.error.as_dict() if run.error is not None else None,
                "attempts": run.attempt,
            }
        if scope is None:
            workflow: JsonValue = {"inputs": state.inputs, "name": state.plan.workflow_name}
        else:
            workflow = {"inputs": scope.inputs, "name": scope.plan.workflow_name}
        context: dict[str, JsonValue] = {
            "workflow": workflow,
            "tasks": tasks,
            "execution": {
                "id": state.execution_id,
                "plan_id": state.plan.plan_id,
                "fairness_key": state.fairness_key,
            },
        }
        if task is not None:
            context.update(variables(state, task))
        return context


def variables(state: ExecutionState, task: TaskRun) -> dict[str, JsonValue]:
    """The runtime variables of a task: `item`/`index` (an instance), `iteration` and
    `previous` (a repeat task). Only a task's own expressions may read them (the
    planner checks where), so a task without them gets none."""
    found: dict[str, JsonValue] = {}
    grown = state.grown_of(task.index)
    if grown is not None and grown.item_index >= 0:
        found["item"] = grown.item
        found["index"] = grown.item_index
    if state.node(task.index).repeat is not None:
        extra = state.extras.get(task.index)
        found["iteration"] = extra.iteration if extra is not None else 0
        found["previous"] = extra.previous if extra is not None else None
    return found
