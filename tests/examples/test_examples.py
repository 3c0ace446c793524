"""Every example compiles, and the quick ones run to SUCCEEDED on the sample worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from execplan.client import ExecutorClient, from_struct
from execplan.planner import compile_source
from execplan.v1 import execution_pb2

if TYPE_CHECKING:
    from tests.support import ROOT
    from tests.support.processes import serve_with_worker
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support import ROOT
    from support.processes import serve_with_worker

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_compiles(path: Path) -> None:
    result = compile_source(path.read_text(encoding="utf-8"))
    assert result.ok, [f"{d.path}: {d.message}" for d in result.diagnostics]


def test_there_are_enough_examples() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {"hello", "order_saga", "ml_pipeline", "incident_runbook", "etl"} <= names


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `execplan serve` and one sample worker for every run in this module."""
    db = tmp_path_factory.mktemp("examples") / "execplan.db"
    with serve_with_worker(db, "examples.workers", "--slots", "16") as addr:
        yield addr


@pytest.fixture
async def client(address: str) -> AsyncIterator[ExecutorClient]:
    async with ExecutorClient(address) as c:
        yield c


async def _run(client: ExecutorClient, name: str, inputs: dict[str, Any]) -> Any:
    source = (ROOT / "examples" / name).read_text(encoding="utf-8")
    started = await client.start(source=source, inputs=inputs)

    async def finish() -> None:
        async for event in client.watch(started.execution_id):
            if event.HasField("execution_completed"):
                return

    await asyncio.wait_for(finish(), timeout=15)
    return await client.get(started.execution_id)


@pytest.mark.parametrize(
    ("name", "inputs", "expected"),
    [
        ("hello.yaml", {"name": "Ada"}, {"greeting": "Hello, Ada!"}),
        ("order_saga.yaml", {"order_id": "o-7", "amount": 12.5}, {"gateway": "main"}),
        ("order_saga.yaml", {"order_id": "o-8", "card": "declined"}, {"gateway": "backup"}),
        ("etl.yaml", {"day": "2026-11-26", "refunds": 0}, {"orders_loaded": 120}),
        ("ml_pipeline.yaml", {}, {"best_model": "gradient_boosting", "accuracy": 0.9}),
        # No model is good enough: `register` is skipped, its output reads as null.
        ("ml_pipeline.yaml", {"min_accuracy": 0.95}, {"accuracy": 0.9, "version": None}),
    ],
    ids=["hello", "order_saga", "order_saga-fallback", "etl-skips", "ml", "ml-not-accepted"],
)
async def test_example_runs_to_succeeded(
    client: ExecutorClient, name: str, inputs: dict[str, Any], expected: dict[str, Any]
) -> None:
    execution = await _run(client, name, inputs)
    assert execution.state == execution_pb2.EXECUTION_STATE_SUCCEEDED, execution.error
    outputs = from_struct(execution.outputs)
    assert outputs.items() >= expected.items(), outputs


def test_the_raw_worker_example_runs_the_protocol(address: str) -> None:
    """examples/raw_worker.py: a worker from docs/worker-protocol.md with bare stubs;
    its transcript is the document's worked example."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "raw_worker.py"), address, "--demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    kinds = [line.split('"')[1] for line in lines if line.startswith((">> {", "<< {"))]
    order = ["register", "registered", "dispatches", "acks", "heartbeats", "results", "status"]
    assert [k for k in kinds if k in order] == order, run.stdout
    assert lines[-1].startswith("-- EXECUTION_STATE_SUCCEEDED"), run.stdout


async def test_llm_quota_runs_under_its_limits_and_answers_again_from_the_cache(
    client: ExecutorClient,
) -> None:
    """examples/llm_quota.yaml on the sample worker: it succeeds, a simulated 429 is
    retried after the provider's wait, and the same question again is answered from
    the cache without a call; `execplan limits` then shows its buckets."""
    question = {"question": "What keeps a quota?"}
    first = await _run(client, "llm_quota.yaml", question)
    assert first.state == execution_pb2.EXECUTION_STATE_SUCCEEDED, first.error
    outputs = from_struct(first.outputs)
    assert outputs["dimensions"] == 8 and outputs["answer"].startswith("[small-1]")
    again = await _run(client, "llm_quota.yaml", question)
    hits = [
        e.task_succeeded.task_id
        async for e in client.history(again.execution_id)
        if e.HasField("task_succeeded") and e.task_succeeded.HasField("cache_hit")
    ]
    assert hits == ["outline", "answer"]
    assert from_struct(again.outputs)["answer"] == outputs["answer"]
    throttled = await _run(client, "llm_quota.yaml", {"question": "Another?", "throttle": True})
    assert throttled.state == execution_pb2.EXECUTION_STATE_SUCCEEDED, throttled.error
    outline = next(t for t in throttled.tasks if t.task_id == "outline")
    assert outline.attempts[0].error.type == "RateLimited" and outline.attempt == 2
    limits = await client.list_limits()
    assert {r.name for r in limits.rate_limits} >= {"llm-rpm", "llm-tpm"}
