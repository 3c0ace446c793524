"""Calls from outside an execution: pause, resume, cancel, terminate, external events.

Pause stops new dispatches (running attempts finish); resume queues what waited.
Cancel compensates when the workflow says `on_failure: compensate` (then ends
CANCELLED), otherwise ends CANCELLED at once; terminate ends TERMINATED at once. An
external event latches in the mailbox and completes a task waiting for it. Every
call is idempotent on its request_id (`requests.py`): a repeat changes nothing and
gets the first answer.
"""

from __future__ import annotations

from execplan.errors import FailedPrecondition
from execplan.executor.decide import builtins, children, events, flow, requests
from execplan.executor.decide import effects as fx
from execplan.executor.decide.step import Step
from execplan.executor.state import execution_state_name
from execplan.executor.task_errors import CANCELLED, TERMINATED, TaskError
from execplan.executor.values import JsonValue
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import workflow_pb2 as wf


def external_event(step: Step, name: str, data: JsonValue, request_id: str) -> str:
    """Records the event; returns the id of the task it completed ("" if none)."""
    params = requests.digest(name, data)
    answer = requests.repeated(step.state, request_id, "send_event", params)
    if answer is not None:
        return answer
    waiting = builtins.waiting_for(step, name)
    task_id = step.task_id(waiting) if waiting is not None else ""
    step.emit(events.external_event_received(name, data, request_id, task_id))
    if waiting is not None:
        flow.succeed(step, waiting, flow.MAIN, {"event": name, "data": data})
    return task_id


def pause(step: Step, reason: str, request_id: str) -> None:
    if requests.repeated(step.state, request_id, "pause", requests.digest(reason)) is not None:
        return
    require_live(step, "pause")
    if not step.state.paused:
        step.emit(events.execution_paused(reason, request_id))


def resume(step: Step, request_id: str) -> None:
    if requests.repeated(step.state, request_id, "resume", requests.digest()) is not None:
        return
    require_live(step, "resume")
    if step.state.paused:
        step.emit(events.execution_resumed(request_id))
        for task in step.state.tasks:
            if task.state == ex.TASK_STATE_QUEUED and not children.waits_for_child(step, task):
                step.effect(fx.TaskReady(task.index))
        children.restart(step)  # the child starts held while paused


def cancel(step: Step, reason: str, request_id: str, terminate: bool) -> None:
    kind = "terminate" if terminate else "cancel"
    if requests.repeated(step.state, request_id, kind, requests.digest(reason)) is not None:
        return
    require_live(step, kind)
    state = step.state
    step.emit(events.execution_cancel_requested(reason, request_id, terminate))
    error = TaskError(TERMINATED if terminate else CANCELLED, reason or "requested")
    if terminate:
        flow.finish(step, ex.EXECUTION_STATE_TERMINATED, None, error)
    elif (
        state.plan.on_failure == wf.ON_FAILURE_COMPENSATE
        and state.state != ex.EXECUTION_STATE_COMPENSATING
    ):
        flow.cancel_active(step, "execution cancelled")
        flow.start_compensation(step, "execution cancelled")
    elif state.state != ex.EXECUTION_STATE_COMPENSATING:
        flow.finish(step, ex.EXECUTION_STATE_CANCELLED, None, error)


def require_live(step: Step, action: str) -> None:
    if step.state.terminal:
        state = execution_state_name(step.state.state)
        raise FailedPrecondition(f"cannot {action} execution in state {state}")
