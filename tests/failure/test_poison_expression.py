"""A poison expression and SIGKILL: a server process on real SQLite, an SDK worker process.

A `when` of nested `.all()` over a long list used to freeze the executor and, because
the execution is stored, freeze it again after every restart (three nested ones over
1,000 elements are now refused when compiled; two over 10,000 elements pass the
planner and are as bad: 10^8 steps). Now it runs in a sandbox process within its
budget: the server is SIGKILLed while it runs (the sandbox process dies with it),
comes back answering at once, fails the task with ExpressionBudgetExceeded, and after
a further restart never evaluates it again. The same for an input building 10^8
values, and through `execplan serve`'s own options.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from execplan.client import ExecutorClient, UnavailableError
from execplan.v1 import execution_pb2 as ex

if TYPE_CHECKING:
    from tests.integration.harness import Cluster
    from tests.support.processes import CLI, LISTENING, serve_args, stop
    from tests.support.server import history
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from integration.harness import Cluster
    from support.processes import CLI, LISTENING, serve_args, stop
    from support.server import history

ALL_SQUARED = "workflow.inputs.xs.all(i, workflow.inputs.xs.all(j, i + j >= 0))"
POISON = f"""
name: poison-restart
inputs: {{x: {{type: integer, required: true}}, xs: {{type: array, required: true}}}}
tasks:
  - {{id: a, type: t.a, inputs: {{x: "${{{{ workflow.inputs.x }}}}"}}}}
  - id: b
    type: t.b
    depends_on: [a]
    when: "{ALL_SQUARED}"
    inputs: {{v: "${{{{ tasks.a.output.v }}}}"}}
"""
MAP_2 = "workflow.inputs.xs.map(i, workflow.inputs.xs.map(j, i))"
POISON_INPUT = f"""
name: poison-input-restart
inputs: {{x: {{type: integer, required: true}}, xs: {{type: array, required: true}}}}
tasks:
  - id: a
    type: t.a
    inputs: {{x: "${{{{ workflow.inputs.x }}}}", big: "${{{{ {MAP_2} }}}}"}}
"""
CASES = {
    # (workflow, length of the list input, failing task, message prefix)
    "when of two nested all() over 10,000": (POISON, 10_000, "b", "tasks[1].when: "),
    "input building 10^8 values": (POISON_INPUT, 10_000, "a", "tasks[0].inputs.big: "),
}
SANDBOX = b"execplan.executor.expressions.sandbox_child"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        c.start_server()
        c.start_worker("w-1")
        yield c
    finally:
        c.close()


def sandboxes(parent: int) -> list[int]:
    """Live sandbox processes whose parent is `parent` (0: any parent)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if SANDBOX in cmdline and state != "Z" and (not parent or int(ppid) == parent):
            found.append(int(entry))
    return found


def server_pid(cluster: Cluster) -> int:
    assert cluster.server is not None
    return cluster.server.popen.pid


async def connect(cluster: Cluster) -> ExecutorClient:
    client = ExecutorClient(cluster.address)
    async with asyncio.timeout(10):
        while True:  # the first call on a new channel may race the listener
            try:
                await client.list_circuit_breakers()
                return client
            except UnavailableError:
                await asyncio.sleep(0.05)


async def until_sandbox(cluster: Cluster, within: float = 15) -> list[int]:
    async with asyncio.timeout(within):
        while not (found := sandboxes(server_pid(cluster))):  # noqa: ASYNC110 - /proc
            await asyncio.sleep(0.02)
    return found


async def answered_until_done(client: ExecutorClient, execution_id: str) -> float:
    """Other RPCs while the execution runs; the slowest answer in seconds."""
    slowest = 0.0
    async with asyncio.timeout(30):
        while True:
            began = time.monotonic()
            state = (await client.get(execution_id)).state
            await client.list_circuit_breakers()
            assert [e async for e in client.list(page_size=5)]
            slowest = max(slowest, time.monotonic() - began)
            if state != ex.EXECUTION_STATE_RUNNING:
                return slowest
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("case", list(CASES))
async def test_sigkill_during_a_poison_evaluation_then_the_restart_answers_and_fails_it(
    cluster: Cluster, case: str
) -> None:
    source, length, failing, field = CASES[case]
    client = await connect(cluster)
    inputs = {"x": 1, "xs": list(range(length))}
    execution_id = (await client.start(source=source, inputs=inputs)).execution_id

    running = await until_sandbox(cluster)  # the `when` is being evaluated
    began = time.monotonic()
    await client.get(execution_id)
    assert time.monotonic() - began < 1.0  # the server answers meanwhile
    cluster.kill_server()  # SIGKILL, mid-evaluation
    await client.close()
    async with asyncio.timeout(5):  # the sandbox process dies with its server
        while any(pid in sandboxes(0) for pid in running):  # noqa: ASYNC110 - /proc
            await asyncio.sleep(0.02)

    await asyncio.to_thread(cluster.start_server)
    client = await connect(cluster)
    slowest = await answered_until_done(client, execution_id)
    assert slowest < 1.0, f"an RPC took {slowest:.2f} s after the restart"

    done = await client.get(execution_id)
    assert done.state == ex.EXECUTION_STATE_FAILED
    task = next(t for t in done.tasks if t.task_id == failing)
    assert task.state == ex.TASK_STATE_FAILED
    assert task.error.type == "ExpressionBudgetExceeded"
    assert task.error.message.startswith(f"{field}evaluation took longer than its budget")
    assert not task.error.retryable
    events = await history(client, execution_id)
    await client.close()

    # Recorded: another restart folds the failure and evaluates nothing.
    cluster.kill_server()
    await asyncio.to_thread(cluster.start_server)
    client = await connect(cluster)
    try:
        await asyncio.sleep(2.0)
        assert sandboxes(server_pid(cluster)) == []
        assert (await client.get(execution_id)).state == ex.EXECUTION_STATE_FAILED
        assert await history(client, execution_id) == events
        assert (await client.replay(execution_id)).deterministic
    finally:
        await client.close()


ROOT_POISON = f"""
name: root-poison
inputs: {{xs: {{type: array, required: true}}}}
tasks:
  - id: a
    type: t.never
    when: "{ALL_SQUARED}"
"""


def test_execplan_serve_takes_the_budget_from_its_options(tmp_path: Path) -> None:
    """`execplan serve --expression-timeout 300`; `execplan run --wait` of a workflow
    whose first task has the poison `when` (decided while StartExecution runs, so no
    worker is needed) ends FAILED, the error on the last line."""
    workflow = tmp_path / "poison.yaml"
    workflow.write_text(ROOT_POISON)
    server = subprocess.Popen(
        [*serve_args(tmp_path / "execplan.db"), "--expression-timeout", "300"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith(LISTENING), line
        inputs = json.dumps({"xs": list(range(10_000))})
        run = subprocess.run(
            [*CLI, "run", str(workflow), "--inputs-json", inputs, "--wait"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "EXECPLAN_ADDRESS": line.split()[-1]},
        )
    finally:
        stop(server)
    assert run.returncode == 1
    *progress, message = run.stderr.splitlines()  # progress lines, then the verdict
    assert any(" a FAILED (ExpressionBudgetExceeded: tasks[0].when: " in p for p in progress)
    assert message.startswith("execplan: execution ")
    assert message.endswith(
        " ended FAILED: ExpressionBudgetExceeded: task a: tasks[0].when: "
        "evaluation took longer than its budget of 300 ms "
        "(workflow.inputs.xs.all(i, workflow.inputs.xs.all(j, i + j >= 0)))"
    )
