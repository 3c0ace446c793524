"""A dynamic task's answer, compiled: the runtime side of decide/subplans.py.

A worker answers a `dynamic: true` task with a sub-workflow (`TaskResult.sub_plan`:
YAML/JSON text or a Workflow message, plus its inputs). Before the Machine sees it,
it is compiled by the planner, through the same `Compiler` StartExecution uses (in
this process, or the PlanService when the executor runs with `--planner`): the
rules of any workflow, every problem at once. What comes back:

    a compiled plan           -> `Machine.sub_plan` records and starts it
    diagnostics, a bad source -> a `PlanInvalid` failure (retryable) whose message
                                 lists them and whose details hold them as
                                 {"diagnostics": [{code, path, message}]}

The compile runs off the pump (a remote planner is a network call; a big local
document compiles on a thread), so the result is reported once it is ready, through
the same lease check as any result.
"""

from __future__ import annotations

from typing import Protocol

from execplan.errors import ExecplanError, FieldViolation
from execplan.executor.task_errors import PLAN_INVALID, TaskError
from execplan.executor.values import JsonValue
from execplan.v1 import plan_pb2
from execplan.v1 import planner_service_pb2 as planner_pb
from execplan.v1 import worker_service_pb2 as ws

# Diagnostics repeated in a PlanInvalid error (the planner reports at most 100).
MAX_DIAGNOSTICS = 50


class Compiler(Protocol):
    """The planner, as the executor reaches it (wire/executor_servicer.py has the
    in-process and the remote one). Raises WorkflowInvalid (with the diagnostics as
    field violations) or LimitExceeded for a workflow that does not compile."""

    async def compile(self, request: planner_pb.CompilePlanRequest) -> plan_pb2.ExecutionPlan: ...


async def compile_sub_plan(
    compiler: Compiler | None, answer: ws.SubPlan, max_bytes: int
) -> plan_pb2.ExecutionPlan | TaskError:
    """The compiled sub-plan, or the PlanInvalid failure that says why not."""
    size = answer.ByteSize()
    if size > max_bytes:
        return TaskError(
            PLAN_INVALID,
            f"the sub-plan is {size:,} bytes; at most {max_bytes:,} are accepted",
            True,
        )
    if compiler is None:
        return TaskError(PLAN_INVALID, "this executor has no planner to compile sub-plans with")
    kind = answer.WhichOneof("definition")
    if kind == "workflow":
        request = planner_pb.CompilePlanRequest(workflow=answer.workflow)
    elif kind == "source":
        request = planner_pb.CompilePlanRequest(source=answer.source, format=answer.format)
    else:
        return TaskError(PLAN_INVALID, "the sub-plan has neither source nor workflow", True)
    try:
        return await compiler.compile(request)
    except ExecplanError as error:
        return invalid(error)


def invalid(error: ExecplanError) -> TaskError:
    """A PlanInvalid failure from the planner's answer (its violations, if any)."""
    violations: tuple[FieldViolation, ...] = getattr(error, "violations", ())
    shown = violations[:MAX_DIAGNOSTICS]
    diagnostics: list[JsonValue] = [
        {"code": v.code, "path": v.field, "message": v.description} for v in shown
    ]
    lines = "; ".join(f"{v.field or '<document>'}: {v.description}" for v in shown)
    more = f" (and {len(violations) - len(shown)} more)" if len(violations) > len(shown) else ""
    message = f"the sub-plan does not compile: {lines or error}{more}"
    details = {"diagnostics": diagnostics} if diagnostics else None
    return TaskError(PLAN_INVALID, message, True, details)


def inputs_of(answer: ws.SubPlan) -> dict[str, JsonValue]:
    from execplan.executor.values import from_struct  # noqa: PLC0415

    return from_struct(answer.inputs)
