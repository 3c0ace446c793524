"""The Python conformance worker: the scenario task types under the `py.` prefix.

    python tests/conformance/py_worker.py ADDRESS WORKER_ID

node_worker.mjs implements the same types under `node.`, identically: every output
is a function of the inputs and the attempt, so any mix of the two gives the same
result. Each output carries `trace_id` (from the dispatch's traceparent) so the
runner can check that one trace covers every task, whichever language ran it.
"""

from __future__ import annotations

import sys
from typing import Any

from execplan.worker import NonRetryableError, Output, SubPlan, TaskContext, Worker

PREFIX = "py."


def trace_id(ctx: TaskContext) -> str:
    parts = ctx.trace_context.get("traceparent", "").split("-")
    return parts[1] if len(parts) == 4 else ""


def error_class(name: str, retryable: bool) -> type[Exception]:
    # The class name is what the executor sees as ErrorInfo.type.
    base: type[Exception] = Exception if retryable else NonRetryableError
    return type(name, (base,), {})


def make_worker(address: str, worker_id: str) -> Worker:
    worker = Worker(address, worker_id=worker_id, slots=8, labels={"lang": "python"})

    @worker.task(PREFIX + "step")
    async def step(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        value = inputs.get("value", 0) * inputs.get("mul", 1) + inputs.get("add", 0)
        path = [*inputs.get("path", []), inputs.get("tag", ctx.task_id)]
        return {"value": value, "path": path, "trace_id": trace_id(ctx)}

    @worker.task(PREFIX + "sum")
    async def total(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        return {"value": sum(inputs.get("values", [])), "trace_id": trace_id(ctx)}

    @worker.task(PREFIX + "fail")
    async def fail(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        cls = error_class(inputs.get("error", "Boom"), inputs.get("retryable", True))
        raise cls(inputs.get("message", "failed on purpose"))

    @worker.task(PREFIX + "flaky")
    async def flaky(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        ctx.heartbeat({"attempt": ctx.attempt})
        if ctx.attempt < inputs.get("succeed_on", 2):
            raise error_class("Transient", True)(f"attempt {ctx.attempt}")
        return {"value": inputs.get("value"), "attempt": ctx.attempt, "trace_id": trace_id(ctx)}

    @worker.task(PREFIX + "spend")
    async def spend(inputs: dict[str, Any], ctx: TaskContext) -> Any:
        ctx.usage(
            tokens_in=inputs.get("tokens_in"),
            tokens_out=inputs.get("tokens_out"),
            cost=inputs.get("cost"),
        )
        if ctx.attempt <= inputs.get("fail_attempts", 0):
            raise error_class("Transient", True)(f"attempt {ctx.attempt}")
        output = {"attempt": ctx.attempt, "trace_id": trace_id(ctx)}
        extra = inputs.get("output_cost", 0)
        return Output(output, usage={"cost": extra}) if extra else output

    @worker.task(PREFIX + "plan")
    async def plan(inputs: dict[str, Any], ctx: TaskContext) -> SubPlan:
        # A dynamic task: a chain of `steps` steps of this language, each adding 1; with
        # broken_first, the first answer depends on a step that is not there.
        previous = ctx.previous_error
        tasks: list[dict[str, Any]] = []
        for i in range(int(inputs.get("steps", 1))):
            value = (
                "${{ workflow.inputs.start }}"
                if i == 0
                else f"${{{{ tasks.s{i - 1}.output.value }}}}"
            )
            task: dict[str, Any] = {
                "id": f"s{i}",
                "type": PREFIX + "step",
                "inputs": {"value": value, "add": 1},
            }
            if i:
                task["depends_on"] = [f"s{i - 1}"]
            tasks.append(task)
        if inputs.get("broken_first") and previous is None:
            tasks[0]["depends_on"] = ["missing"]
        last = len(tasks) - 1
        doc = {
            "name": "conf-sub",
            "inputs": {"start": {"type": "integer", "required": True}},
            "tasks": tasks,
            "outputs": {
                "value": f"${{{{ tasks.s{last}.output.value }}}}",
                "repaired": previous.type if previous is not None else "",
            },
        }
        return SubPlan(doc, inputs={"start": inputs.get("start", 0)})

    @worker.task(PREFIX + "undo")
    async def undo(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        return {"undone": inputs.get("what"), "trace_id": trace_id(ctx)}

    return worker


if __name__ == "__main__":
    make_worker(sys.argv[1], sys.argv[2]).run()
