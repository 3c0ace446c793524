"""Plans that grow at runtime through the CLI, as a user runs them: a real `execplan
serve`, the sample worker (`execplan worker examples/workers.py`) and the examples
that use for_each, repeat, a child workflow and an agent-written sub-plan."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.support import EXAMPLES
    from tests.support.processes import CLI, serve_with_worker
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support import EXAMPLES
    from support.processes import CLI, serve_with_worker


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("runtime-cli") / "execplan.db"
    with serve_with_worker(db, str(EXAMPLES / "workers.py"), "--slots", "8", quiet=True) as addr:
        yield addr


def execplan(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXECPLAN_ADDRESS": address}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


def test_research_agents_fan_out_loop_and_children(address: str) -> None:
    registered = execplan(address, "register", str(EXAMPLES / "research_review.yaml"))
    assert registered.returncode == 0, registered.stderr
    run = execplan(
        address,
        "run",
        str(EXAMPLES / "research_agents.yaml"),
        "--input",
        "question=Why is the sky blue?",
        "--input",
        "parts=5",
        "--input",
        "strictness=3",
        "--wait",
    )
    assert run.returncode == 0, run.stderr
    outputs = json.loads(run.stdout)
    assert outputs["researchers"] == 5 and outputs["rounds"] == 3
    assert "more detail" in outputs["report"]  # the last round read the review's notes
    execution_id = execplan(address, "ls", "--workflow", "research-agents").stdout.split()[6]
    children = execplan(address, "ls", "--parent", execution_id)
    rows = children.stdout.splitlines()[1:]
    assert len(rows) == 3  # one child per round
    assert all(row.split()[1] == "research-review" and execution_id in row for row in rows)
    got = execplan(address, "get", execution_id)
    assert "research[4]" in got.stdout and "RUNNING" not in got.stdout
    mermaid = execplan(address, "get", execution_id, "--format", "mermaid")
    assert mermaid.returncode == 0, mermaid.stderr
    assert 'subgraph gn1 ["research: for each tasks.plan.output.subquestions' in mermaid.stdout
    assert "iteration 2 (max 4)" in mermaid.stdout
    history = execplan(address, "history", execution_id).stdout
    for kind in ("task_expanded", "iteration_completed", "child_execution_started"):
        assert kind in history, kind
    replay = execplan(address, "replay", execution_id)
    assert replay.returncode == 0, replay.stderr


def test_an_agent_repairs_its_own_sub_plan(address: str) -> None:
    run = execplan(
        address,
        "run",
        str(EXAMPLES / "agent_subplan.yaml"),
        "--input",
        "goal=ship",
        "--input",
        "steps=3",
        "--input",
        "broken_first=true",
        "--wait",
    )
    assert run.returncode == 0, run.stderr
    outputs = json.loads(run.stdout)
    assert outputs["done"].startswith("improvise/step_2 after improvise/step_1")
    execution_id = execplan(address, "ls", "--workflow", "agent-subplan").stdout.split()[6]
    got = json.loads(execplan(address, "get", execution_id, "--format", "json").stdout)
    improvise = next(t for t in got["tasks"] if t["task_id"] == "improvise")
    assert improvise["attempt"] == 2
    assert improvise["attempts"][0]["error"]["type"] == "PlanInvalid"
    assert len(got["plan_revisions"]) == 1
    dot = execplan(address, "get", execution_id, "--format", "dot").stdout
    assert "subgraph cluster_gn0" in dot and "improvise/step_1" in dot


def test_the_for_each_item_cap_set_on_the_server(tmp_path: Path) -> None:
    # A runaway guard: `execplan serve --max-for-each-items 3` and a planner that
    # answers 5 subquestions. The for_each fails before any researcher runs.
    with serve_with_worker(
        tmp_path / "execplan.db",
        str(EXAMPLES / "workers.py"),
        quiet=True,
        serve_options=("--max-for-each-items", "3"),
    ) as addr:
        assert execplan(addr, "register", str(EXAMPLES / "research_review.yaml")).returncode == 0
        source = str(EXAMPLES / "research_agents.yaml")
        run = execplan(addr, "run", source, "--input", "question=q", "--input", "parts=5", "--wait")
        assert run.returncode != 0
        last = run.stderr.splitlines()[-1]
        assert last.startswith("execplan: execution "), run.stderr
        assert last.endswith(
            "ended FAILED: TooManyItems: task research: for_each research gave 5 items; "
            "this server allows at most 3 per task (execplan serve --max-for-each-items)"
        ), last
        execution_id = run.stderr.split()[1]
        got = execplan(addr, "get", execution_id, "--format", "json")
        tasks = {t["task_id"]: t for t in json.loads(got.stdout)["tasks"]}
        assert tasks["research"]["state"] == "TASK_STATE_FAILED"
        assert not any(task_id.startswith("research[") for task_id in tasks)
        inputs = ("--input", "question=q", "--input", "parts=3")
        within = execplan(addr, "run", source, *inputs, "--wait")
        assert within.returncode == 0, within.stderr
        assert json.loads(within.stdout)["researchers"] == 3
