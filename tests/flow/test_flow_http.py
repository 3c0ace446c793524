"""builtin.http run by the executor (`execplan serve` as a real process) against a
local HTTP server: retries on 503, a secret header sent and never kept, the response
size cap, caching and the operator's allow-list."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from execplan.client import ExecutorClient, from_struct
from execplan.v1 import execution_pb2 as ex

if TYPE_CHECKING:
    from tests.support.flow_rig import FlowRig
    from tests.support.http_server import TestHttpServer
else:
    from support.flow_rig import FlowRig
    from support.http_server import TestHttpServer

SECRET = "s3cr3t-canary-7f1d"

FLOW = """
name: http-flow
inputs:
  path: {type: string, default: "json"}
tasks:
  - id: call
    type: builtin.http
    secrets: [api_key]
    inputs:
      method: POST
      url: "ORIGIN/${{ workflow.inputs.path }}"
      headers: {Authorization: "Bearer ${{ secrets.api_key }}"}
      body: {hello: "${{ workflow.inputs.path }}"}
      max_response_bytes: 1048576
    retry: {max_attempts: 4, initial_interval: 50ms}
    timeouts: {start_to_close: 10s}
    cache: {key: "inputs.body", ttl: 1h}
outputs:
  status: "${{ tasks.call.output.status }}"
  body: "${{ tasks.call.output.body }}"
"""


@pytest.fixture
def web() -> Iterator[TestHttpServer]:
    with TestHttpServer() as server:
        yield server


async def run(client: ExecutorClient, source: str, path: str) -> ex.Execution:
    execution_id = (await client.start(source=source, inputs={"path": path})).execution_id
    async with asyncio.timeout(60):
        async for event in client.watch(execution_id):
            if event.HasField("execution_completed"):
                break
    return await client.get(execution_id)


async def test_builtin_http_retries_keeps_secrets_and_caps_responses(
    rig: FlowRig, web: TestHttpServer
) -> None:
    rig.start_server(env={"EXECPLAN_SECRET_API_KEY": SECRET})
    source = FLOW.replace("ORIGIN", web.origin)
    async with ExecutorClient(rig.address) as client:
        flaky = await run(client, source, "flaky/2")
        assert flaky.state == ex.EXECUTION_STATE_SUCCEEDED, flaky.error
        (task,) = flaky.tasks
        assert task.attempt == 3
        assert [a.error.type for a in task.attempts][:2] == ["HttpStatus", "HttpStatus"]
        assert "503" in task.attempts[0].error.message
        assert from_struct(flaky.outputs)["body"] == {"ok": True, "after": 2}
        assert task.worker_id == "builtin.http"
        assert {r.headers["Authorization"] for r in web.requests} == {f"Bearer {SECRET}"}

        echoed = await run(client, source, "echo-auth")
        assert from_struct(echoed.outputs)["body"] == {"auth": "Bearer [secret:api_key]"}

        big = await run(client, source, f"big/{2 << 20}")
        assert big.state == ex.EXECUTION_STATE_FAILED
        assert big.tasks[0].error.type == "ResponseTooLarge"
        assert big.tasks[0].attempt == 1  # not retried

        calls = len(web.requests)
        again = await run(client, source, "echo-auth")  # the same body: a cache hit
        assert again.state == ex.EXECUTION_STATE_SUCCEEDED
        assert len(web.requests) == calls
    rig.close()
    stored = b"".join(p.read_bytes() for p in rig.dir.parent.glob("execplan.db*"))
    assert SECRET.encode() not in stored
    assert SECRET not in (rig.dir / "server.log").read_text()


async def test_the_allow_list_refuses_other_origins(rig: FlowRig, web: TestHttpServer) -> None:
    rig.start_server("--http-allow", "https://api.example.com")
    source = FLOW.replace("ORIGIN", web.origin)
    async with ExecutorClient(rig.address) as client:
        refused = await run(client, source, "json")
        assert refused.state == ex.EXECUTION_STATE_FAILED
        assert refused.tasks[0].error.type == "HttpOriginNotAllowed"
    assert web.requests == []


METERED = """
name: http-metered
inputs:
  path: {type: string, default: "json"}
tasks:
  - id: ask
    type: builtin.http
    inputs:
      method: POST
      url: "ORIGIN/${{ workflow.inputs.path }}"
      body: {usage: {prompt_tokens: 1200, completion_tokens: 300}}
      usage:
        tokens_in: body.body.usage.prompt_tokens
        tokens_out: body.body.usage.completion_tokens
        cost:
          - {from: body.body.usage.prompt_tokens, times: 0.000002}
          - {from: body.body.usage.completion_tokens, times: 0.000008}
        requests: 1
    retry: {max_attempts: 2, initial_interval: 10ms}
"""


async def test_the_usage_input_counts_what_the_response_says(
    rig: FlowRig, web: TestHttpServer
) -> None:
    rig.start_server()
    source = METERED.replace("ORIGIN", web.origin)
    async with ExecutorClient(rig.address) as client:
        paid = await run(client, source, "json")
        assert paid.state == ex.EXECUTION_STATE_SUCCEEDED, paid.error
        expected = {"tokens_in": 1200, "tokens_out": 300, "cost": 0.0048, "requests": 1}
        assert dict(paid.tasks[0].attempts[0].usage.counters) == pytest.approx(expected)
        assert dict(paid.usage.counters) == pytest.approx(expected)

        # A response without the mapped number fails for good, naming what is missing.
        unmeasured = await run(client, source, "echo-auth")
        assert unmeasured.state == ex.EXECUTION_STATE_FAILED
        (task,) = unmeasured.tasks
        assert task.attempt == 1 and task.error.type == "UsageMappingError"
        # (the first counter by name that cannot be read: inputs are a Struct)
        assert task.error.message == "usage.cost: the response has no body.body.usage.prompt_tokens"
        assert not unmeasured.usage.counters

        # A status the task does not expect fails as before and is not measured.
        refused = await run(client, source, "status/503")
        assert refused.state == ex.EXECUTION_STATE_FAILED
        assert [a.error.type for a in refused.tasks[0].attempts] == ["HttpStatus"] * 2
        assert not refused.usage.counters
