"""Why a task attempt failed: the typed `TaskError`, and the errors the executor
decides itself (timeouts, bindings, breakers, cancellation).

    TaskError("CardDeclined", "card 4242 declined", retryable=False)   # from a worker
    timeout_error(ev.TIMEOUT_KIND_HEARTBEAT)    # TaskError("Timeout", "heartbeat timeout", True)
    timeout_name(ev.TIMEOUT_KIND_START_TO_CLOSE)                        # "start_to_close"

On the wire and in events a TaskError is an `execplan.v1.ErrorInfo`; in checkpoints
and in CEL expressions (`tasks.x.error.type`) it is the mapping `as_dict()` gives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from execplan.executor.values import JsonValue, fill_struct, from_struct
from execplan.v1 import events_pb2 as ev
from execplan.v1 import execution_pb2 as ex

# Error types the executor produces itself.
BINDING_ERROR = "BindingError"  # a task's inputs (or a builtin's) did not evaluate
CONDITION_ERROR = "ConditionError"  # a `when` did not evaluate
OUTPUT_ERROR = "OutputError"  # the workflow's outputs did not evaluate
CIRCUIT_OPEN = "CircuitOpen"  # `on_open: fail_fast` while the task type's breaker is open
TIMEOUT = "Timeout"
PAYLOAD_TOO_LARGE = "PayloadTooLarge"  # a task output over the executor's limit
INVALID_OUTPUT = "InvalidOutput"  # a task output that is not JSON (NaN, an infinity)
CANCELLED = "Cancelled"
TERMINATED = "Terminated"
TASK_FAILED = "TaskFailed"  # an execution failed by a task whose error is unknown
EXPRESSION_BUDGET_EXCEEDED = "ExpressionBudgetExceeded"  # docs/expressions.md
# Plans that grow at runtime (docs/runtime-plans.md).
FOR_EACH_ERROR = "ForEachError"  # for_each did not evaluate to a list
UNTIL_ERROR = "UntilError"  # repeat.until did not evaluate
REPEAT_EXHAUSTED = "RepeatExhausted"  # max_iterations ran without `until` holding
LIMIT_EXCEEDED = "LimitExceeded"  # an expansion over the executor's limits
TOO_MANY_ITEMS = "TooManyItems"  # a for_each over the runaway cap (docs/usage.md)
PLAN_INVALID = "PlanInvalid"  # a dynamic task's sub-plan did not compile (retryable)
SUB_PLAN_FAILED = "SubPlanFailed"  # a task of a dynamic task's sub-plan failed for good
SUB_PLAN_NOT_ALLOWED = "SubPlanNotAllowed"  # a sub-plan from a task without dynamic: true
CHILD_FAILED = "ChildFailed"  # a child execution ended other than SUCCEEDED
WORKFLOW_NOT_FOUND = "WorkflowNotFound"  # builtin.workflow names no registered workflow


@dataclass(frozen=True, slots=True)
class TaskError:
    type: str
    message: str
    retryable: bool = False
    # Structured details (a worker's `ErrorInfo.details`; PlanInvalid's diagnostics).
    details: Mapping[str, JsonValue] | None = None
    # A provider's wait (ErrorInfo.retry_after): the retry comes no sooner, and the
    # attempt's rate-limit keys are paused as long (docs/flow-control.md).
    retry_after_ms: int = 0

    @classmethod
    def from_proto(cls, info: ex.ErrorInfo) -> TaskError:
        details = from_struct(info.details) if info.HasField("details") else None
        return cls(info.type, info.message, info.retryable, details, retry_after_of(info))

    def to_proto(self) -> ex.ErrorInfo:
        info = ex.ErrorInfo(type=self.type, message=self.message, retryable=self.retryable)
        if self.details is not None:
            fill_struct(info.details, self.details)
        if self.retry_after_ms:
            info.retry_after.FromMilliseconds(self.retry_after_ms)
        return info

    def fill(self, target: ex.ErrorInfo) -> None:
        target.type = self.type
        target.message = self.message
        target.retryable = self.retryable
        if self.details is not None:
            fill_struct(target.details, self.details)
        if self.retry_after_ms:
            target.retry_after.FromMilliseconds(self.retry_after_ms)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "message": self.message,
            "retryable": self.retryable,
        }
        if self.details is not None:
            out["details"] = dict(self.details)
        if self.retry_after_ms:
            out["retry_after_ms"] = self.retry_after_ms
        return out

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> TaskError:
        details = value.get("details")
        return cls(
            str(value.get("type", "")),
            str(value.get("message", "")),
            bool(value.get("retryable", False)),
            dict(details) if isinstance(details, Mapping) else None,
            int(value.get("retry_after_ms", 0)),
        )


MAX_RETRY_AFTER_MS = 3_600_000


def retry_after_of(info: ex.ErrorInfo) -> int:
    """ErrorInfo.retry_after in ms, within 0..1 hour (what a worker may ask for)."""
    if not info.HasField("retry_after"):
        return 0
    seconds, nanos = info.retry_after.seconds, info.retry_after.nanos
    if seconds < 0 or nanos < 0:
        return 0
    return min(seconds * 1000 + nanos // 1_000_000, MAX_RETRY_AFTER_MS)


def timeout_name(kind: int) -> str:
    """`start_to_close`, `heartbeat`, `schedule_to_start` or `schedule_to_close`."""
    name = ev.TimeoutKind.Name(cast(ev.TimeoutKind.ValueType, kind))
    return name.removeprefix("TIMEOUT_KIND_").lower()


def timeout_error(kind: int) -> TaskError:
    """The failure a timeout of `kind` records. schedule_to_close bounds the task as a
    whole (first queued -> final result), so no attempt may follow it."""
    return TaskError(
        TIMEOUT, f"{timeout_name(kind)} timeout", kind != ev.TIMEOUT_KIND_SCHEDULE_TO_CLOSE
    )
