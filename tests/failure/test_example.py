"""examples/failure_policies.yaml on the sample worker (examples/workers.py)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
from execplan.client import from_struct
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import executor_service_pb2 as pb

from .conftest import Env, task_kinds

ROOT = Path(__file__).resolve().parents[2]
SOURCE = (ROOT / "examples" / "failure_policies.yaml").read_text(encoding="utf-8")


@pytest.fixture
async def sample(env: Env, monkeypatch: pytest.MonkeyPatch) -> Env:
    """`env` with a worker running the fp.* handlers of examples/workers.py."""
    monkeypatch.syspath_prepend(str(ROOT))
    module = importlib.import_module("examples.workers")
    handlers = {
        "fp." + name.removeprefix("fp_"): fn
        for name, fn in vars(module).items()
        if name.startswith("fp_") and callable(fn)
    }
    env.worker(handlers)
    return env


@pytest.mark.parametrize(
    ("inputs", "state", "outputs"),
    [
        ({}, ex.EXECUTION_STATE_SUCCEEDED, {"attempts": 3, "source": "live", "shipped": True}),
        ({"enrich_down": True}, ex.EXECUTION_STATE_SUCCEEDED, {"source": "cache"}),
        ({"ship_fail": True}, ex.EXECUTION_STATE_COMPENSATED, {}),
        ({"fail_times": 5}, ex.EXECUTION_STATE_COMPENSATED, {}),
    ],
    ids=["retries", "fallback", "saga", "retries-exhausted"],
)
async def test_failure_policies_example(
    sample: Env, inputs: dict[str, Any], state: int, outputs: dict[str, Any]
) -> None:
    execution_id = await sample.start(SOURCE, inputs)
    done = await sample.finish(execution_id)
    assert done.state == state, done.error
    assert from_struct(done.outputs).items() >= outputs.items()
    events = await sample.history(execution_id)
    if state == ex.EXECUTION_STATE_COMPENSATED:
        assert task_kinds(events, "reserve")[-1] == "task_succeeded:compensation"


# The commands of the example's header, with the outcome each documents. Breakers are
# shared by every execution of a task type, so the commands must give these outcomes
# in any order on one server: the order below puts the run that fails fetch the
# most (fail_times=5: four failures) before each of the others, the worst case.
COMMANDS: dict[str, tuple[dict[str, Any], int, dict[str, Any]]] = {
    "default": ({}, ex.EXECUTION_STATE_SUCCEEDED, {"attempts": 3, "source": "live"}),
    "fail_times=5": ({"fail_times": 5}, ex.EXECUTION_STATE_COMPENSATED, {}),
    "enrich_down": ({"enrich_down": True}, ex.EXECUTION_STATE_SUCCEEDED, {"source": "cache"}),
    "ship_fail": ({"ship_fail": True}, ex.EXECUTION_STATE_COMPENSATED, {}),
    "slow_ms": (
        {"fail_times": 0, "slow_ms": 1500},
        ex.EXECUTION_STATE_SUCCEEDED,
        {"attempts": 2, "source": "live"},
    ),
}
WORST_ORDER = [
    "fail_times=5", "default",
    "fail_times=5", "enrich_down",
    "fail_times=5", "ship_fail",
    "fail_times=5", "slow_ms",
]  # fmt: skip


async def test_the_header_commands_give_their_outcomes_in_any_order(sample: Env) -> None:
    header = SOURCE.split("name:")[0]
    for name in COMMANDS:  # every documented command is in the header
        assert name.split("=")[0] in header or name == "default", name
    for name in WORST_ORDER:
        inputs, state, outputs = COMMANDS[name]
        done = await sample.finish(await sample.start(SOURCE, inputs), within=30)
        assert done.state == state, (name, done.error)
        assert from_struct(done.outputs).items() >= outputs.items(), name
        events = await sample.history(done.execution_id)
        assert "task_parked" not in [e.WhichOneof("kind") for e in events], name
    # As the header says: fail_times=5 twice in a row opens fetch's breaker.
    for _ in range(2):
        await sample.finish(await sample.start(SOURCE, {"fail_times": 5}), within=30)
    (fetch,) = await sample.client.list_circuit_breakers(["fp.fetch"])
    assert fetch.state == pb.BREAKER_STATE_OPEN
