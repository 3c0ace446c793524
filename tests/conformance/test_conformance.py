"""Cross-language conformance: every scenario (`*.yaml` here) against a real server,
run three ways with the same expectations:

* `python`: every task on the Python worker (py_worker.py, task types `py.*`);
* `node`:   every task on the Node worker (node_worker.mjs, task types `node.*`);
* `mixed`:  the task types alternate in document order (py, node, py, ...), so one
  execution hands data back and forth between the two languages.

A scenario file holds `workflow` (task types written `conf.<op>`), `inputs`,
optional `send_events`, and `expect`: final `state`, `outputs`, per-task checks and
`events`, the sequence of event kinds (task_progress excluded, it depends on
timing; `event_order: unordered` compares them as a multiset for parallel
branches). The runner also checks that each task ran on a worker of the language
its type names, and that every task saw the trace the execution was started in.

Node needs `node` on PATH and the built package (`scripts/test` builds it when
`clients/node/dist` is missing or older than its sources); without them the node and
mixed runs FAIL: a skipped conformance run is not a pass.
Regenerate expected events after an intended change with
`CONFORMANCE_PRINT_EVENTS=1 scripts/test tests/conformance -k python -s`.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from execplan.client.values import from_struct, from_value, to_struct, to_value
from execplan.v1 import (
    events_pb2,
    execution_pb2,
    executor_service_pb2,
    executor_service_pb2_grpc,
)

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
NODE_PACKAGE = Path(os.environ.get("EXECPLAN_NODE_PACKAGE", ROOT / "clients" / "node"))
SCENARIOS = sorted(HERE.glob("*.yaml"))
MODES = ("python", "node", "mixed")
PREFIX = {"python": "py.", "node": "node."}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
TIMEOUT_S = 30.0


@dataclass
class Stack:
    address: str
    node_error: str | None  # why Node workers are unavailable, if they are


def _node_problem() -> str | None:
    if shutil.which("node") is None:
        return "node is not on PATH"
    if not (NODE_PACKAGE / "dist" / "index.js").is_file():
        return (
            f"{NODE_PACKAGE}/dist is missing: run scripts/test (it builds the Node client), "
            "or npm ci --prefix clients/node && npm run build --prefix clients/node"
        )
    return None


def _start_server(db: Path) -> tuple[subprocess.Popen[str], str]:
    bin_ = os.environ.get("EXECPLAN_BIN", str(Path(sys.executable).parent / "execplan"))
    proc = subprocess.Popen(
        [bin_, "serve", "--listen", "127.0.0.1:0", "--db", str(db), "--grace", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"execplan listening on (\S+)", line)
    if match is None:
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, match.group(1)


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    server, address = _start_server(tmp_path_factory.mktemp("conformance") / "execplan.db")
    procs: list[subprocess.Popen[Any]] = [server]
    try:
        procs.append(
            subprocess.Popen(
                [sys.executable, str(HERE / "py_worker.py"), address, f"py-conf-{os.getpid()}"]
            )
        )
        node_error = _node_problem()
        if node_error is None:
            procs.append(
                subprocess.Popen(
                    ["node", str(HERE / "node_worker.mjs"), address, f"node-conf-{os.getpid()}"],
                    env={**os.environ, "EXECPLAN_NODE_PACKAGE": str(NODE_PACKAGE)},
                )
            )
        yield Stack(address, node_error)
    finally:
        for proc in reversed(procs):
            _stop(proc)


def assign_types(workflow: dict[str, Any], mode: str) -> dict[str, Any]:
    """Replace `conf.<op>` task types by the mode's language prefix(es)."""
    counter = iter(range(10_000))

    def prefix() -> str:
        if mode == "mixed":
            return ("py.", "node.")[next(counter) % 2]
        return PREFIX[mode]

    def visit(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key == "type" and isinstance(value, str) and value.startswith("conf."):
                    out[key] = prefix() + value.removeprefix("conf.")
                else:
                    out[key] = visit(value)
            return out
        if isinstance(node, list):
            return [visit(item) for item in node]
        return node

    result: dict[str, Any] = visit(workflow)
    return result


def kind(event: events_pb2.ExecutionEvent) -> str:
    return event.WhichOneof("kind") or ""


async def send_events_when_waiting(
    stub: executor_service_pb2_grpc.ExecutorServiceAsyncStub,
    execution_id: str,
    events: list[dict[str, Any]],
) -> None:
    for spec in events:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            response = await stub.GetExecution(
                executor_service_pb2.GetExecutionRequest(execution_id=execution_id)
            )
            if any(t.state == execution_pb2.TASK_STATE_WAITING for t in response.execution.tasks):
                break
            assert time.monotonic() < deadline, "no task started waiting for the event"
            await asyncio.sleep(0.05)
        await stub.SendEvent(
            executor_service_pb2.SendEventRequest(
                execution_id=execution_id,
                name=spec["name"],
                data=to_value(spec.get("data")),
                request_id=f"{execution_id}-{spec['name']}",
            )
        )


async def run_scenario(
    address: str, scenario: dict[str, Any], mode: str
) -> tuple[execution_pb2.Execution, list[str]]:
    source = yaml.safe_dump(assign_types(scenario["workflow"], mode), sort_keys=False)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = executor_service_pb2_grpc.ExecutorServiceStub(channel)
        started = await stub.StartExecution(
            executor_service_pb2.StartExecutionRequest(
                source=source, inputs=to_struct(scenario.get("inputs") or {})
            ),
            metadata=(("traceparent", TRACEPARENT),),
        )
        execution_id = started.execution_id
        sender = asyncio.create_task(
            send_events_when_waiting(stub, execution_id, scenario.get("send_events") or [])
        )
        kinds: list[str] = []

        async def watch() -> None:
            request = executor_service_pb2.WatchExecutionRequest(execution_id=execution_id)
            async for response in stub.WatchExecution(request):
                kinds.append(kind(response.event))
                if kinds[-1] == "execution_completed":
                    return

        try:
            await asyncio.wait_for(watch(), TIMEOUT_S)
            await sender
        finally:
            sender.cancel()
        final = await stub.GetExecution(
            executor_service_pb2.GetExecutionRequest(execution_id=execution_id)
        )
    return final.execution, [k for k in kinds if k != "task_progress"]


def check_tasks(execution: execution_pb2.Execution, expected: dict[str, Any]) -> None:
    tasks = {t.task_id: t for t in execution.tasks}
    for task_id, want in expected.items():
        task = tasks[task_id]
        if "state" in want:
            got = execution_pb2.TaskState.Name(task.state).removeprefix("TASK_STATE_")
            assert got == want["state"], f"{task_id}: {got}"
        if "attempt" in want:
            assert task.attempt == want["attempt"], f"{task_id}: attempt {task.attempt}"
        if "error_type" in want:
            assert task.error.type == want["error_type"], f"{task_id}: {task.error}"
        if "retryable" in want:
            assert task.error.retryable is want["retryable"], f"{task_id}: {task.error}"
        if "attempt_errors" in want:
            got_errors = [a.error.type for a in task.attempts if a.error.type]
            assert got_errors == want["attempt_errors"], f"{task_id}: {got_errors}"
        if "usage" in want:
            assert dict(task.usage.counters) == want["usage"], f"{task_id}: {task.usage}"


def check_workers_and_trace(execution: execution_pb2.Execution) -> None:
    for task in execution.tasks:
        # TaskRun.type is the main phase's type (fallback and compensation have their
        # own), so check the main phase's attempts.
        lang = task.type.split(".")[0]
        for attempt in task.attempts:
            if lang in ("py", "node") and attempt.phase == execution_pb2.TASK_PHASE_MAIN:
                assert attempt.worker_id.startswith(f"{lang}-conf-"), (task.task_id, attempt)
        if task.HasField("output") and task.output.HasField("struct_value"):
            output = from_value(task.output)
            if "trace_id" in output:
                assert output["trace_id"] == TRACE_ID, (task.task_id, output)


def load(path: Path) -> dict[str, Any]:
    scenario: dict[str, Any] = yaml.safe_load(path.read_text())
    return scenario


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
async def test_scenario(stack: Stack, path: Path, mode: str) -> None:
    if mode != "python" and stack.node_error is not None:
        pytest.fail(f"Node workers unavailable: {stack.node_error}")
    scenario = load(path)
    expect = scenario["expect"]
    execution, kinds = await run_scenario(stack.address, scenario, mode)
    if os.environ.get("CONFORMANCE_PRINT_EVENTS"):
        print(f"\n{path.name} [{mode}]: {kinds}")

    state = execution_pb2.ExecutionState.Name(execution.state).removeprefix("EXECUTION_STATE_")
    assert state == expect["state"], f"{state}: {execution.error}"
    if "outputs" in expect:
        assert from_struct(execution.outputs) == expect["outputs"]
    if "usage" in expect:
        assert dict(execution.usage.counters) == expect["usage"], execution.usage
    check_tasks(execution, expect.get("tasks") or {})
    check_workers_and_trace(execution)
    if "events" in expect:
        if expect.get("event_order") == "unordered":
            assert collections.Counter(kinds) == collections.Counter(expect["events"])
            assert kinds[0] == expect["events"][0] and kinds[-1] == expect["events"][-1]
        else:
            assert kinds == expect["events"]


def test_every_scenario_names_its_expectations() -> None:
    assert SCENARIOS, "no scenarios found"
    for path in SCENARIOS:
        scenario = load(path)
        assert {"workflow", "expect"} <= scenario.keys(), path.name
        assert {"state", "events"} <= scenario["expect"].keys(), path.name
