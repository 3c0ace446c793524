"""NaN and infinities are not JSON: wherever a value comes in (a client's inputs or
event data, a worker's output, an expression's result) one holding such a number is
refused, so every execution stays readable (`execplan get` printed "internal error:
Fail to serialize NaN for Value.number_value" for one) and every dispatch decodable
by an SDK (the Python SDK failed to decode such inputs, three attempts in a row)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import executor_service_pb2 as pb
from execplan.v1 import worker_service_pb2 as ws
from google.protobuf import json_format, struct_pb2

if TYPE_CHECKING:
    from tests.support.raw_worker import RawWorker
    from tests.support.server import Env
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support.raw_worker import RawWorker
    from support.server import Env

ONE = """
name: one
inputs:
  n: {type: number, default: 1}
tasks:
  - {id: a, type: nf.work, retry: {max_attempts: 3, initial_interval: 10ms}}
outputs: {v: "${{ tasks.a.output }}"}
"""
WAITER = """
name: waiter
tasks:
  - {id: a, type: builtin.wait_for_event, inputs: {event: go, timeout: 1m}}
"""


def _readable(execution: ex.Execution) -> None:
    json_format.MessageToJson(execution)  # raised SerializeToJsonError before


async def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize("number", [math.nan, math.inf, -math.inf])
async def test_a_request_with_a_non_finite_number_is_invalid(env: Env, number: float) -> None:
    inputs = struct_pb2.Struct()
    inputs.fields["n"].number_value = number
    start = pb.StartExecutionRequest(source=ONE, inputs=inputs)
    assert await _code(env.stub.StartExecution(start)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs.n is not a JSON number",
    )
    waiting = await env.start(WAITER)
    data = struct_pb2.Value()
    data.list_value.values.add().number_value = number
    event = pb.SendEventRequest(execution_id=waiting, name="go", data=data)
    assert await _code(env.stub.SendEvent(event)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "data[0] is not a JSON number",
    )


async def test_a_non_finite_output_fails_the_attempt_for_good(env: Env) -> None:
    execution_id = await env.start(ONE)
    registration = ws.WorkerRegistration(worker_id="w-nan", task_types=["nf.work"], slots=1)
    async with RawWorker.open(env.channel, registration) as raw:
        (dispatch,) = await raw.dispatches(1)
        result = ws.TaskResult(attempt=dispatch.attempt)
        result.output.struct_value.fields["x"].list_value.values.add().number_value = math.nan
        raw.send(ws.ConnectRequest(acks=[ws.AssignmentAck(attempt=dispatch.attempt)]))
        raw.send(ws.ConnectRequest(results=[result]))
        done = await env.finish(execution_id)
    assert done.state == ex.EXECUTION_STATE_FAILED
    (task,) = done.tasks
    assert (task.error.type, task.error.message) == (
        "InvalidOutput",
        "output.x[0] is not a JSON number (NaN or an infinity)",
    )
    assert len(task.attempts) == 1  # not retried: the same output would come back
    _readable(done)


@pytest.mark.parametrize(
    ("where", "expression", "error_type"),
    [
        ("input", "${{ 1.0 / 0.0 }}", "BindingError"),
        ("input", "${{ [1.0].map(x, x / 0.0) }}", "BindingError"),  # in the sandbox
        ("output", "${{ [0.0 / 0.0] }}", "OutputError"),
    ],
)
async def test_an_expression_that_yields_a_non_finite_number_fails(
    env: Env, where: str, expression: str, error_type: str
) -> None:
    env.worker({"nf.work": lambda inputs: {"ok": True}})
    if where == "input":
        source = f'name: e\ntasks:\n  - {{id: a, type: nf.work, inputs: {{x: "{expression}"}}}}\n'
    else:
        source = f'name: e\ntasks:\n  - {{id: a, type: nf.work}}\noutputs: {{v: "{expression}"}}\n'
    done = await env.finish(await env.start(source))
    assert done.state == ex.EXECUTION_STATE_FAILED
    assert done.error.type == error_type, done.error
    assert "is not a JSON number" in done.error.message, done.error
    _readable(done)


async def test_the_python_sdk_refuses_to_send_a_non_finite_output(env: Env) -> None:
    env.worker({"nf.work": lambda inputs: {"score": math.nan}})
    done = await env.finish(await env.start(ONE))
    assert done.state == ex.EXECUTION_STATE_FAILED
    (task,) = done.tasks
    assert task.error.type == "OutputEncodingError"
    assert "not a JSON number at .score: nan" in task.error.message
    assert len(task.attempts) == 1
    with pytest.raises(TypeError, match=r"not a JSON number at \.n: inf"):
        await env.start(ONE, {"n": math.inf})
