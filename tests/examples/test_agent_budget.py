"""examples/agent_budget.yaml as its header tells a user to run it: `execplan run`,
`execplan usage`, `execplan budget` against a real `execplan serve` and the sample
worker (`execplan worker examples/workers.py`), all as processes."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.support import ROOT
    from tests.support.processes import CLI, serve_with_worker
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support import ROOT
    from support.processes import CLI, serve_with_worker

EXAMPLE = str(ROOT / "examples" / "agent_budget.yaml")


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("agent-budget") / "execplan.db"
    with serve_with_worker(db, "examples.workers", "--slots", "8") as addr:
        yield addr


def execplan(address: str, *args: str) -> str:
    env = {**os.environ, "EXECPLAN_ADDRESS": address}
    run = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )
    assert run.returncode == 0, f"execplan {' '.join(args)}: {run.stderr}"
    return run.stdout


def get(address: str, execution_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = json.loads(execplan(address, "get", execution_id, "--format", "json"))
    return shown


def until_state(address: str, execution_id: str, *states: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        shown = get(address, execution_id)
        if shown["state"].removeprefix("EXECUTION_STATE_") in states:
            return shown
        time.sleep(0.05)
    raise AssertionError(f"{execution_id} never reached {states}: {shown['state']}")


def by_task(address: str, execution_id: str) -> dict[str, dict[str, float]]:
    out = json.loads(
        execplan(address, "usage", "--execution", execution_id, "--by", "task", "--format", "json")
    )
    return {group["key"]: group["usage"] for group in out["groups"]}


def test_within_the_budget_it_succeeds_and_the_bill_adds_up(address: str) -> None:
    execution_id = execplan(address, "run", EXAMPLE, "--input", "question=tides").strip()
    shown = until_state(address, execution_id, "SUCCEEDED", "FAILED", "PAUSED")
    assert shown["state"].endswith("SUCCEEDED"), shown
    # plan 0.02 (usage beside its output) + 3 researchers x 0.10 + write 0.05
    total = json.loads(execplan(address, "usage", "--execution", execution_id, "--format", "json"))[
        "usage"
    ]
    assert total["cost"] == pytest.approx(0.37)
    assert total["tokens_in"] == 500 + 3 * 3000 + 1500
    assert total["tokens_out"] == 250 + 3 * 1000 + 500
    assert total["searches"] == 3
    tasks = by_task(address, execution_id)
    assert tasks["plan"]["cost"] == pytest.approx(0.02)
    assert tasks["research_mechanism"]["cost"] == pytest.approx(0.10)
    assert tasks["write"]["cost"] == pytest.approx(0.05)


def test_a_failed_attempts_spend_counts(address: str) -> None:
    execution_id = execplan(
        address, "run", EXAMPLE, "--input", "question=tides", "--input", "flaky=true"
    ).strip()
    shown = until_state(address, execution_id, "SUCCEEDED", "FAILED", "PAUSED")
    assert shown["state"].endswith("SUCCEEDED"), shown
    research = next(t for t in shown["tasks"] if t["task_id"] == "research_background")
    first, second = research["attempts"]
    assert first["error"]["type"] == "RateLimited"
    assert first["usage"]["counters"]["cost"] == pytest.approx(0.05)
    assert second["usage"]["counters"]["cost"] == pytest.approx(0.10)
    # 0.37 as above, plus half of each researcher's first (failed) attempt
    assert by_task(address, execution_id)["research_background"]["cost"] == pytest.approx(0.15)
    total = json.loads(execplan(address, "usage", "--execution", execution_id, "--format", "json"))[
        "usage"
    ]
    assert total["cost"] == pytest.approx(0.52)


def test_deeper_research_pauses_before_overspending_then_raise_and_resume(address: str) -> None:
    execution_id = execplan(
        address, "run", EXAMPLE, "--input", "question=tides", "--input", "depth=4"
    ).strip()
    shown = until_state(address, execution_id, "PAUSED", "SUCCEEDED", "FAILED")
    assert shown["state"].endswith("PAUSED"), shown
    # Two researchers (0.40 each) fit after the plan (0.02); a third would make 1.22.
    budget = json.loads(execplan(address, "budget", execution_id, "--format", "json"))
    until_running = time.monotonic() + 20
    while budget["reserved"] and time.monotonic() < until_running:  # let the two finish
        time.sleep(0.05)
        budget = json.loads(execplan(address, "budget", execution_id, "--format", "json"))
    assert budget["spent"]["cost"] == pytest.approx(0.82)
    text = execplan(address, "budget", execution_id)
    paused = next(line for line in text.splitlines() if line.startswith("paused: "))
    assert "+ 0.4 estimated for research_" in paused, text
    assert paused.endswith("would exceed the budget of 1"), text
    dispatched = [t for t in get(address, execution_id)["tasks"] if t.get("attempts")]
    assert len([t for t in dispatched if t["task_id"].startswith("research")]) == 2
    execplan(address, "budget", execution_id, "--cost", "2", "--resume")
    shown = until_state(address, execution_id, "SUCCEEDED", "FAILED", "PAUSED")
    assert shown["state"].endswith("SUCCEEDED"), shown
    total = json.loads(execplan(address, "usage", "--execution", execution_id, "--format", "json"))[
        "usage"
    ]
    assert total["cost"] == pytest.approx(0.02 + 3 * 0.40 + 0.05)
