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
    tasks = by_task(address, execution_id)  # the instances are filed under `research`
    assert set(tasks) == {"plan", "research", "write"}
    assert tasks["plan"]["cost"] == pytest.approx(0.02)
    assert tasks["research"]["cost"] == pytest.approx(0.30)
    assert tasks["write"]["cost"] == pytest.approx(0.05)
    runs = {t["task_id"]: t for t in shown["tasks"]}
    assert runs["research"]["usage"]["counters"]["cost"] == pytest.approx(0.30)
    assert runs["research[1]"]["usage"]["counters"]["cost"] == pytest.approx(0.10)


def test_a_failed_attempts_spend_counts(address: str) -> None:
    execution_id = execplan(
        address, "run", EXAMPLE, "--input", "question=tides", "--input", "flaky=true"
    ).strip()
    shown = until_state(address, execution_id, "SUCCEEDED", "FAILED", "PAUSED")
    assert shown["state"].endswith("SUCCEEDED"), shown
    research = next(t for t in shown["tasks"] if t["task_id"] == "research[0]")
    first, second = research["attempts"]
    assert first["error"]["type"] == "RateLimited"
    assert first["usage"]["counters"]["cost"] == pytest.approx(0.05)
    assert second["usage"]["counters"]["cost"] == pytest.approx(0.10)
    # 0.37 as above, plus half of each researcher's first (failed) attempt
    assert by_task(address, execution_id)["research"]["cost"] == pytest.approx(0.45)
    total = json.loads(execplan(address, "usage", "--execution", execution_id, "--format", "json"))[
        "usage"
    ]
    assert total["cost"] == pytest.approx(0.52)


def test_too_many_deep_researchers_are_refused_before_any_starts(address: str) -> None:
    run = subprocess.run(
        [*CLI, "run", EXAMPLE, "--input", "question=tides", "--input", "depth=4", "--wait"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "EXECPLAN_ADDRESS": address},
    )
    assert run.returncode != 0
    assert run.stderr.splitlines()[-1].endswith(
        "ended FAILED: BudgetExceeded: task research: for_each research: 3 items x cost "
        "0.4 = 1.2 exceeds what is left of the budget: 0.98 of cost 1 (0.02 spent, "
        "0 reserved)"
    ), run.stderr


def test_the_writer_waits_for_a_raise_then_it_goes_on(address: str) -> None:
    execution_id = execplan(
        address,
        "run",
        EXAMPLE,
        "--input",
        "question=tides",
        "--input",
        "depth=4",
        "--input",
        "researchers=2",
    ).strip()
    shown = until_state(address, execution_id, "PAUSED", "SUCCEEDED", "FAILED")
    assert shown["state"].endswith("PAUSED"), shown
    text = execplan(address, "budget", execution_id)
    paused = next(line for line in text.splitlines() if line.startswith("paused: "))
    assert paused == (
        "paused: cost 0.82 spent + 0.2 estimated for write would exceed the budget of 1"
    ), text
    write = next(t for t in get(address, execution_id)["tasks"] if t["task_id"] == "write")
    assert not write.get("attempts")  # held back, not dispatched
    execplan(address, "budget", execution_id, "--cost", "2", "--resume")
    shown = until_state(address, execution_id, "SUCCEEDED", "FAILED", "PAUSED")
    assert shown["state"].endswith("SUCCEEDED"), shown
    total = json.loads(execplan(address, "usage", "--execution", execution_id, "--format", "json"))[
        "usage"
    ]
    assert total["cost"] == pytest.approx(0.02 + 2 * 0.40 + 0.05)
