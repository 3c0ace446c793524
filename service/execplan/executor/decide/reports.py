"""What a running attempt tells besides its result: progress and search attributes.

    reports.progress(step, task, {"step": 3})             # task_progress, if it changed
    reports.search_attributes(step, "tag", {"customer": SearchValue.of("acme")})

Both are inputs from a worker, applied only for the attempt's current lease (the
shell checks the fencing token first). How often progress is recorded is the
shell's business (`runtime/progress.py` coalesces heartbeats); here a value equal to
the last one recorded is dropped, so a heartbeat that repeats it writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from execplan.executor.decide import events
from execplan.executor.decide.step import Step
from execplan.executor.state import TaskRun
from execplan.executor.values import JsonValue
from execplan.search import SearchValue, merge


def progress(step: Step, task: TaskRun, value: JsonValue) -> bool:
    """Records `value` as the task's progress; False when it is the one it has."""
    if task.progress_ms and task.progress == value:
        return False
    step.emit(events.task_progress(step.task_id(task), task.attempt, task.epoch, value))
    return True


def search_attributes(step: Step, task_id: str, updates: Mapping[str, SearchValue | None]) -> bool:
    """Sets (None: removes) search attributes of the execution; False when nothing
    changes. InvalidArgument, before anything is emitted, when the execution would
    hold more than the bound (names and values are checked by the caller)."""
    current = step.state.search_attributes
    merge(current, updates, "search_attributes")
    changed = {name: value for name, value in updates.items() if current.get(name) != value}
    if not changed:
        return False
    step.emit(events.search_attributes_updated(task_id, changed))
    return True
