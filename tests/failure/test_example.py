"""examples/failure_policies.yaml on the sample worker (examples/workers.py)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
from execplan.client import from_struct
from execplan.v1 import execution_pb2 as ex

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
