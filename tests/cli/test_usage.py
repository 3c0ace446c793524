"""`execplan usage` as a user runs it, against a real `execplan serve` with nothing
recorded yet: a zero total (text and JSON), and one `execplan:` line for a bad time,
two scopes at once, an unknown execution or a range that ends before it starts.
Usage that executions record is covered with the executor (tests/executor)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.support.processes import CLI, start_server, stop
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support.processes import CLI, start_server, stop


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server, addr = start_server(tmp_path_factory.mktemp("usage") / "execplan.db")
    try:
        yield addr
    finally:
        stop(server)


def execplan(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXECPLAN_ADDRESS": address}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


def test_nothing_recorded_is_a_zero_total(address: str) -> None:
    done = execplan(address, "usage", "--workflow", "agents", "--since", "24h", "--format", "json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["workflow"] == "agents" and out["executions"] == 0 and out["usage"] == {}
    assert out["since"].endswith("Z") and out["until"] is None
    text = execplan(address, "usage", "--since", "7d", "--by", "workflow")
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[0].startswith("all executions since ")
    assert "0 executions with usage" in text.stdout and "(nothing recorded)" in text.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("--since", "yesterday"), 2, "--since 'yesterday' is neither a duration"),
        (("--workflow", "a", "--execution", "b"), 2, "not allowed with argument"),
        (("--execution", "nope"), 1, "NOT_FOUND: execution nope not found"),
        (
            ("--since", "2026-01-02T00:00:00Z", "--until", "2026-01-01T00:00:00Z"),
            1,
            "INVALID_ARGUMENT: since is after until",
        ),
        (
            ("--by", "tenant"),
            2,
            "argument --by: 'tenant' is not workflow, execution, task or attribute:NAME",
        ),
        (("--by", "attribute:"), 2, "argument --by: attribute:NAME needs a search attribute's"),
        (
            ("--by", "attribute:cust-omer"),
            2,
            "argument --by: 'cust-omer' is not a search attribute name: a name matches",
        ),
    ],
)
def test_bad_requests_are_one_line(
    address: str, args: tuple[str, ...], code: int, message: str
) -> None:
    done = execplan(address, "usage", *args)
    assert done.returncode == code, done
    first = done.stderr.splitlines()[0]
    assert first.startswith("execplan: ") and message in first, done.stderr


BUDGETED = """
name: cli-usage
budget: {cost: 0.75}
tasks:
  - {id: a, type: cli.spend}
  - {id: b, type: cli.spend, depends_on: [a], estimate: {cost: 0.5}}
"""


async def test_usage_get_and_budget_on_a_real_run(address: str, tmp_path: Path) -> None:
    from execplan.worker import TaskContext, Worker  # noqa: PLC0415

    async def spend(inputs: dict[str, object], ctx: TaskContext) -> dict[str, object]:
        ctx.usage(cost=0.5, tokens_in=10)
        return {}

    worker = Worker(address, worker_id="cli-usage-w")
    worker.task("cli.spend")(spend)
    serving = asyncio.create_task(worker.serve())
    source = tmp_path / "budgeted.yaml"
    source.write_text(BUDGETED)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return execplan(address, *args)

    try:
        started = await asyncio.to_thread(cli, "run", str(source))
        assert started.returncode == 0, started.stderr
        execution_id = started.stdout.strip()
        async with asyncio.timeout(15):
            while True:  # polling the CLI until the budget has paused it
                shown = (await asyncio.to_thread(cli, "get", execution_id)).stdout
                if "paused:" in shown:
                    break
                await asyncio.sleep(0.05)
        assert "budget (when exceeded: pause):" in shown
        assert "  cost  0.5 of 0.75" in shown
        assert (
            "paused: cost 0.5 spent + 0.5 estimated for b would exceed the budget of 0.75" in shown
        )
        state = json.loads(
            (await asyncio.to_thread(cli, "budget", execution_id, "--format", "json")).stdout
        )
        assert state["state"] == "PAUSED" and state["budget"] == {"cost": 0.75}
        assert state["spent"] == {"cost": 0.5} and state["usage"] == {"cost": 0.5, "tokens_in": 10}
        raised = await asyncio.to_thread(cli, "budget", execution_id, "--cost", "2", "--resume")
        assert raised.returncode == 0, raised.stderr
        assert "  cost  0.5 of 2" in raised.stdout or "  cost  1 of 2" in raised.stdout
        watched = await asyncio.to_thread(cli, "watch", execution_id)
        assert watched.returncode == 0, watched.stderr
        usage_lines = [line for line in watched.stdout.splitlines() if "task_usage" in line]
        assert len(usage_lines) == 2, watched.stdout
        assert all("usage=cost:0.5,tokens_in:10" in line for line in usage_lines)
        assert any(
            "task_dispatched" in line and "task_id=b" in line and "estimate=cost:0.5" in line
            for line in watched.stdout.splitlines()
        ), watched.stdout
        totals = await asyncio.to_thread(
            cli, "usage", "--workflow", "cli-usage", "--since", "1h", "--format", "json"
        )
        out = json.loads(totals.stdout)
        assert out["executions"] == 1 and out["usage"] == {"cost": 1, "tokens_in": 20}
        by_task = await asyncio.to_thread(cli, "usage", "--execution", execution_id, "--by", "task")
        lines = by_task.stdout.splitlines()
        assert lines[0] == f"execution {execution_id}: 1 execution with usage"
        assert "  cost       1" in lines and "  tokens_in  20" in lines
        assert any(line.split()[:2] == ["a", "1"] for line in lines)
    finally:
        await worker.stop()
        serving.cancel()


TASK_BUDGETED = """
name: cli-task-budget
tasks:
  - id: a
    type: cli.flaky
    budget: {cost: 0.5}
    retry: {max_attempts: 3, initial_interval: 10ms, jitter: 0}
"""


async def test_raising_a_tasks_own_budget(address: str, tmp_path: Path) -> None:
    from execplan.worker import TaskContext, Worker  # noqa: PLC0415

    async def flaky(inputs: dict[str, object], ctx: TaskContext) -> dict[str, object]:
        ctx.usage(cost=0.5)
        if ctx.attempt == 1:
            raise RuntimeError("spent, then failed")
        return {}

    worker = Worker(address, worker_id="cli-task-budget-w")
    worker.task("cli.flaky")(flaky)
    serving = asyncio.create_task(worker.serve())
    source = tmp_path / "task_budget.yaml"
    source.write_text(TASK_BUDGETED)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return execplan(address, *args)

    try:
        execution_id = (await asyncio.to_thread(cli, "run", str(source))).stdout.strip()
        async with asyncio.timeout(15):
            while True:  # the retry is held back: the task's own budget is spent
                shown = (await asyncio.to_thread(cli, "budget", execution_id)).stdout
                if "paused:" in shown:
                    break
                await asyncio.sleep(0.05)
        assert "task a budget: cost 0.5 of 0.5" in shown, shown
        assert "paused: cost 0.5 spent has reached the budget of a of 0.5" in shown, shown
        refused = await asyncio.to_thread(cli, "budget", execution_id, "--task", "a")
        assert refused.returncode == 2
        assert refused.stderr.strip() == (
            "execplan: --task needs a limit to set (--cost, --tokens, --limit)"
        )
        missing = await asyncio.to_thread(cli, "budget", execution_id, "--task", "b", "--cost", "1")
        assert missing.returncode != 0 and "has no task 'b'" in missing.stderr
        raised = await asyncio.to_thread(
            cli, "budget", execution_id, "--task", "a", "--cost", "1", "--resume"
        )
        assert raised.returncode == 0, raised.stderr
        watched = await asyncio.to_thread(cli, "watch", execution_id)
        assert watched.returncode == 0, watched.stderr
        state = json.loads(
            (await asyncio.to_thread(cli, "budget", execution_id, "--format", "json")).stdout
        )
        assert state["state"] == "SUCCEEDED"
        assert state["task_budgets"] == {"a": {"cost": 1}}
        assert state["usage"] == {"cost": 1}
    finally:
        await worker.stop()
        serving.cancel()


SPENDING = """
name: cli-usage-filter
tasks:
  - {id: a, type: cli.spend2}
"""


async def test_usage_by_search_attribute(address: str, tmp_path: Path) -> None:
    from execplan.worker import TaskContext, Worker  # noqa: PLC0415

    async def spend(inputs: dict[str, object], ctx: TaskContext) -> dict[str, object]:
        ctx.usage(cost=0.25)
        return {}

    worker = Worker(address, worker_id="cli-usage-filter-w")
    worker.task("cli.spend2")(spend)
    serving = asyncio.create_task(worker.serve())
    source = tmp_path / "spending.yaml"
    source.write_text(SPENDING)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return execplan(address, *args)

    try:
        for customer in ("acme", "acme", "globex", ""):
            attr = ("--attr", f"customer={customer}") if customer else ()
            run = await asyncio.to_thread(cli, "run", str(source), *attr, "--wait")
            assert run.returncode == 0, run.stderr
        acme = await asyncio.to_thread(
            cli, "usage", "--filter", 'customer = "acme"', "--since", "1h", "--format", "json"
        )
        assert acme.returncode == 0, acme.stderr
        out = json.loads(acme.stdout)
        assert out["executions"] == 2 and out["usage"] == {"cost": 0.5}
        assert out["filter"] == 'customer = "acme"'
        text = await asyncio.to_thread(
            cli, "usage", "--workflow", "cli-usage-filter", "--filter", 'customer = "globex"'
        )
        assert text.stdout.splitlines()[0] == (
            'workflow cli-usage-filter where customer = "globex": 1 execution with usage'
        )
        # Split by the attribute's value (executions without one under "(none)").
        split = await asyncio.to_thread(
            cli, "usage", "--workflow", "cli-usage-filter", "--by", "attribute:customer"
        )
        assert split.returncode == 0, split.stderr
        assert split.stdout.splitlines() == [
            "workflow cli-usage-filter: 4 executions with usage",
            "  cost  1",
            "",
            "CUSTOMER  EXECUTIONS  cost",
            '"acme"    2           0.5',
            '"globex"  1           0.25',
            "(none)    1           0.25",
        ]
        split_json = await asyncio.to_thread(
            cli, "usage", "--by", "attribute:customer", "--filter", 'customer = "acme"',
            "--format", "json",
        )  # fmt: skip
        out = json.loads(split_json.stdout)
        assert out["by"] == "attribute:customer"
        assert out["groups"] == [
            {"key": '"acme"', "value": "acme", "executions": 2, "usage": {"cost": 0.5}}
        ]
        none = await asyncio.to_thread(
            cli, "usage", "--workflow", "cli-usage-filter", "--by", "attribute:region",
            "--format", "json",
        )  # fmt: skip
        assert json.loads(none.stdout)["groups"] == [
            {"key": "(none)", "value": None, "executions": 4, "usage": {"cost": 1}}
        ]
        bad = await asyncio.to_thread(cli, "usage", "--filter", "customer ==")
        assert bad.returncode != 0
        # As `ls --filter`: the status and the field it names, with the column.
        assert bad.stderr.splitlines() == [
            "execplan: INVALID_ARGUMENT: bad filter: expected a value, found the end (column 12)",
            "filter: column 12: expected a value, found the end",
        ]
    finally:
        await worker.stop()
        serving.cancel()
