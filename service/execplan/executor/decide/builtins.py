"""Task kinds that run inside the executor instead of on a worker.

Each kind decides what happens when one of its tasks is queued (`start`) and when
its timer fires (`on_timer`). They return an `Outcome` (the task succeeded or failed
at once) or None (it waits, in state WAITING, for its timer or an event);
`flow.queue` and `Machine.timer_fired` apply outcomes, so this module is a leaf.

    sleep            {duration}: succeeds with {slept_ms} when its timer fires
    wait_for_event   {event, timeout}: succeeds with {event, data} when the named
                     external event arrives (or had arrived: events latch), fails
                     with Timeout when its timer fires first

A new builtin is a `start` (and `on_timer`, if it arms one) in the table below; one
that does I/O (an HTTP call, a child workflow) would also emit an effect for a
runner in the runtime, whose answer comes back as an input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from execplan.executor.decide import events
from execplan.executor.decide.step import Step
from execplan.executor.expressions.bindings import EvaluationError
from execplan.executor.expressions.evaluation import failure
from execplan.executor.plan_view import BUILTIN_SLEEP, BUILTIN_WAIT, NodeView
from execplan.executor.state import TaskRun, Timer
from execplan.executor.task_errors import BINDING_ERROR, TIMEOUT, TaskError
from execplan.executor.values import JsonValue
from execplan.planner.durations import parse_duration
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex


@dataclass(frozen=True, slots=True)
class Succeed:
    output: JsonValue


@dataclass(frozen=True, slots=True)
class Fail:
    error: TaskError


Outcome = Succeed | Fail


def is_builtin(node: NodeView) -> bool:
    return node.builtin in _START


def start(step: Step, task: TaskRun, node: NodeView) -> Outcome | None:
    """A builtin task was just queued (main phase)."""
    return _START[node.builtin](step, task, node)


def on_timer(task: TaskRun, timer: Timer) -> Outcome | None:
    """A builtin's timer fired (already recorded); None when it changes nothing."""
    if task.state != ex.TASK_STATE_WAITING:
        return None
    if timer.purpose == ev.TIMER_PURPOSE_SLEEP:
        return Succeed({"slept_ms": timer.fire_at_ms - task.started_ms})
    if timer.purpose == ev.TIMER_PURPOSE_EVENT_TIMEOUT:
        return Fail(TaskError(TIMEOUT, "no event before the timeout"))
    return None


def awaited_event(step: Step, task: TaskRun, node: NodeView) -> str:
    """The event name a waiting `wait_for_event` task waits for ("" if unknown)."""
    try:
        inputs = step.evaluate(step.field(task, ".inputs"), node.inputs, node.reads, task)
    except EvaluationError:
        return ""
    return str(inputs.get("event", "")) if isinstance(inputs, dict) else ""


def waiting_for(step: Step, name: str) -> TaskRun | None:
    """The first task waiting for the external event `name`, if any."""
    for task in step.state.tasks:
        node = step.state.node(task.index)
        if (
            task.state == ex.TASK_STATE_WAITING
            and node.builtin == BUILTIN_WAIT
            and awaited_event(step, task, node) == name
        ):
            return task
    return None


# -- the kinds ---------------------------------------------------------------------


def _sleep(step: Step, task: TaskRun, node: NodeView) -> Outcome | None:
    inputs = _inputs(step, task, node)
    if isinstance(inputs, Fail):
        return inputs
    delay = duration_ms(inputs.get("duration", 0))
    if delay is None:
        return _bad_duration("duration", inputs.get("duration"))
    step.timer(task, ev.TIMER_PURPOSE_SLEEP, delay, "sleep")
    return None


def _wait(step: Step, task: TaskRun, node: NodeView) -> Outcome | None:
    inputs = _inputs(step, task, node)
    if isinstance(inputs, Fail):
        return inputs
    name = str(inputs.get("event", ""))
    if name in step.state.mailbox:
        return Succeed({"event": name, "data": step.state.mailbox[name][-1]})
    timeout = inputs.get("timeout")
    delay = duration_ms(timeout) if timeout else 0
    if delay is None:
        return _bad_duration("timeout", timeout)
    if delay:
        step.timer(task, ev.TIMER_PURPOSE_EVENT_TIMEOUT, delay, f"wait:{name}")
    else:  # no timeout: recorded as a timer that never fires, so the task is WAITING
        step.emit(events.timer_scheduled("", node.task_id, ev.TIMER_PURPOSE_EVENT_TIMEOUT, None))
    return None


_START: dict[int, Callable[[Step, TaskRun, NodeView], Outcome | None]] = {
    BUILTIN_SLEEP: _sleep,
    BUILTIN_WAIT: _wait,
}


def _inputs(step: Step, task: TaskRun, node: NodeView) -> dict[str, JsonValue] | Fail:
    try:
        value = step.evaluate(step.field(task, ".inputs"), node.inputs, node.reads, task)
    except EvaluationError as error:
        return Fail(failure(BINDING_ERROR, error))
    return value if isinstance(value, dict) else {}


def _bad_duration(name: str, value: JsonValue) -> Fail:
    return Fail(TaskError(BINDING_ERROR, f"input {name!r} is not a duration: {value!r}"))


def duration_ms(value: JsonValue) -> int | None:
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
