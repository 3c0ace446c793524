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

from execplan.worker import NonRetryableError, Output, TaskContext, Worker

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

    @worker.task(PREFIX + "undo")
    async def undo(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        return {"undone": inputs.get("what"), "trace_id": trace_id(ctx)}

    return worker


if __name__ == "__main__":
    make_worker(sys.argv[1], sys.argv[2]).run()
