"""Checkpoints: an ExecutionState serialized so recovery replays only the log tail.

The plan is not part of a checkpoint (plans are stored once, by plan_id), so a
50,000-task execution checkpoints only its per-task runtime fields. Format: compact
JSON with one positional array per task; `FORMAT` is bumped when fields change,
and a checkpoint of another format is ignored (the full log is replayed instead).
"""

from __future__ import annotations

import json
from dataclasses import astuple
from typing import Any

from execplan.executor.plan_view import PlanView
from execplan.executor.state import (
    AttemptRecord,
    AttemptSpend,
    BudgetHold,
    ExecutionState,
    Spend,
    TaskRun,
    Timer,
)
from execplan.executor.task_errors import TaskError
from execplan.usage import Budget

# 2: the request ids of control calls (executor/decide/requests.py); 3: tasks record the
# principal that holds their lease; 4: usage, budget and caps (`spend`).
FORMAT = 4

_TASK_FIELDS = (
    "state",
    "phase",
    "attempt",
    "epoch",
    "worker_id",
    "output",
    "error",
    "first_queued_ms",
    "queued_ms",
    "started_ms",
    "finished_ms",
    "status_message",
    "upstream_pending",
    "upstream_succeeded",
    "upstream_failed",
    "upstream_other",
    "completed_order",
    "compensated",
    "principal",
)
_STATE_FIELDS = (
    "state",
    "inputs",
    "outputs",
    "error",
    "failed_task_id",
    "request_id",
    "fairness_key",
    "trace_context",
    "created_ms",
    "updated_ms",
    "finished_ms",
    "last_sequence",
    "paused",
    "cancel_requested",
    "compensation_queue",
    "mailbox",
    "requests",
    "consecutive_failures",
    "completions",
    "any_failed",
)
_ATTEMPT_FIELDS = (
    "attempt",
    "phase",
    "worker_id",
    "epoch",
    "dispatched_ms",
    "finished_ms",
    "error",
)


def encode_state(state: ExecutionState) -> bytes:
    document: dict[str, Any] = {"format": FORMAT, "plan_id": state.plan.plan_id}
    document.update({name: getattr(state, name) for name in _STATE_FIELDS})
    document["timers"] = [
        [t.timer_id, t.task_index, t.purpose, t.fire_at_ms] for t in state.timers.values()
    ]
    document["tasks"] = [
        [getattr(task, name) for name in _TASK_FIELDS]
        + [[[getattr(a, n) for n in _ATTEMPT_FIELDS] for a in task.attempts]]
        for task in state.tasks
    ]
    document["spend"] = _encode_spend(state.spend)
    return json.dumps(document, separators=(",", ":"), default=_encode).encode()


def _encode_spend(spend: Spend) -> dict[str, Any]:
    budget = spend.budget
    hold = spend.hold
    return {
        "budget": None if budget is None else [budget.limits, budget.on_exceeded],
        "caps": [spend.max_for_each_items, spend.max_attempts],
        "attempts": spend.attempts,
        "usage": spend.usage,
        "reserved": spend.reserved,
        "tasks": [[index, used] for index, used in spend.tasks.items()],
        "task_reserved": [[index, held] for index, held in spend.task_reserved.items()],
        "leases": [
            [*key, lease.worker_id, lease.usage, lease.reports, lease.reserved]
            for key, lease in spend.leases.items()
        ],
        "hold": None if hold is None else astuple(hold),
    }


def _decode_spend(value: dict[str, Any]) -> Spend:
    budget = value["budget"]
    spend = Spend(
        budget=None if budget is None else Budget(tuple(map(tuple, budget[0])), budget[1]),
        max_for_each_items=value["caps"][0],
        max_attempts=value["caps"][1],
        attempts=value["attempts"],
        usage=value["usage"],
        reserved=value["reserved"],
        tasks={index: used for index, used in value["tasks"]},
        task_reserved={index: held for index, held in value["task_reserved"]},
        hold=None if value["hold"] is None else BudgetHold(*value["hold"]),
    )
    for index, phase, attempt, epoch, worker_id, used, reports, held in value["leases"]:
        spend.leases[(index, phase, attempt, epoch)] = AttemptSpend(worker_id, used, reports, held)
    return spend


def _encode(value: object) -> object:
    # Errors are stored as the mappings they always were (type, message, retryable).
    if isinstance(value, TaskError):
        return value.as_dict()
    raise TypeError(f"cannot checkpoint a {type(value).__name__}")


def _error(value: Any) -> TaskError | None:
    return None if value is None else TaskError.from_dict(value)


def _attempt(values: list[Any]) -> AttemptRecord:
    record = AttemptRecord(*values)
    record.error = _error(record.error)
    return record


def decode_state(payload: bytes, execution_id: str, plan: PlanView) -> ExecutionState | None:
    """The state in a checkpoint, or None if it cannot be used for this plan."""
    document = json.loads(payload)
    if document.get("format") != FORMAT or document.get("plan_id") != plan.plan_id:
        return None
    if len(document["tasks"]) != len(plan.nodes):
        return None
    state = ExecutionState(execution_id=execution_id, plan=plan)
    for name in _STATE_FIELDS:
        setattr(state, name, document[name])
    state.error = _error(state.error)
    state.timers = {
        timer_id: Timer(timer_id, index, purpose, fire_at)
        for timer_id, index, purpose, fire_at in document["timers"]
    }
    tasks = []
    for index, row in enumerate(document["tasks"]):
        task = TaskRun(index=index)
        for name, value in zip(_TASK_FIELDS, row, strict=False):
            setattr(task, name, value)
        task.error = _error(task.error)
        task.attempts = [_attempt(values) for values in row[len(_TASK_FIELDS)]]
        tasks.append(task)
    state.tasks = tasks
    state.spend = _decode_spend(document["spend"])
    return state
