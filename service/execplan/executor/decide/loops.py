"""repeat: a task that runs again until its `until` holds (docs/runtime-plans.md).

    an iteration's attempt succeeds -> iteration_done: evaluate `until` (over
        `output`, `iteration`, `previous`), record iteration_completed, then
        true                    -> task_succeeded with this output
        false, iterations left  -> task_queued of the next iteration, attempt 1
        false, none left        -> RepeatExhausted (not retryable; a fallback runs)

Each iteration is an attempt series of its own: its retries, its schedule_to_close
(counted from the iteration's first queueing), its idempotency keys
(`.../main/i2.1`). A child-workflow task loops the same way, one child per
iteration (decide/children.py reports its success here).
"""

from __future__ import annotations

from execplan.executor.decide import events, flow
from execplan.executor.decide.step import Step
from execplan.executor.expressions.bindings import EvaluationError
from execplan.executor.expressions.evaluation import failure
from execplan.executor.state import TaskRun
from execplan.executor.task_errors import REPEAT_EXHAUSTED, UNTIL_ERROR, TaskError
from execplan.executor.values import JsonValue
from execplan.v1 import execution_pb2 as ex

MAIN = ex.TASK_PHASE_MAIN


def iteration_done(step: Step, task: TaskRun, output: JsonValue) -> None:
    """An attempt of the current iteration succeeded with `output`."""
    node = step.node(task)
    repeat = node.repeat
    assert repeat is not None
    extra = step.state.extras.get(task.index)
    iteration = extra.iteration if extra is not None else 0
    task_id = step.task_id(task)
    try:
        until = step.evaluate(
            step.field(task, ".repeat.until"), repeat.until, node.reads, task, output=output
        )
    except EvaluationError as error:
        flow.fail_task(step, task, failure(UNTIL_ERROR, error))
        return
    done = until is True
    step.emit(
        events.iteration_completed(task_id, iteration, task.attempt, task.epoch, output, done=done)
    )
    if done:
        flow.succeed(step, task, MAIN, output)
    elif iteration + 1 < repeat.max_iterations:
        flow.queue(step, task, node, MAIN, 1, iteration=iteration + 1)
    else:
        message = (
            f"until ({repeat.until.source}) did not hold after {repeat.max_iterations} "
            f"iteration{'s' if repeat.max_iterations != 1 else ''}"
        )
        flow.fail_task(step, task, TaskError(REPEAT_EXHAUSTED, message))
