"""`execplan planner` and `execplan executor` as separate processes: the executor
compiles workflow source through the remote PlannerService, and the planner's
INVALID_ARGUMENT (with its BadRequest field paths) reaches the caller unchanged."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from execplan.client import ExecplanClientError, ExecutorClient, InvalidArgumentError
from execplan.v1 import execution_pb2 as ex

if TYPE_CHECKING:
    from tests.support import EXAMPLES, ROOT
    from tests.support.processes import CLI, LISTENING, stop
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support import EXAMPLES, ROOT
    from support.processes import CLI, LISTENING, stop


def _start(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [*CLI, *args, "--listen", "127.0.0.1:0", "--grace", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith(LISTENING), line
    return proc, line.split()[-1]


@pytest.fixture
def split(tmp_path: Path) -> Iterator[tuple[str, str]]:
    planner, planner_address = _start("planner")
    executor, executor_address = _start(
        "executor", "--planner", planner_address, "--db", str(tmp_path / "x.db")
    )
    worker = subprocess.Popen(
        [*CLI, "worker", "examples.workers", "--address", executor_address],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        yield planner_address, executor_address
    finally:
        stop(worker)
        stop(executor)
        stop(planner)


async def test_executor_compiles_through_the_remote_planner(split: tuple[str, str]) -> None:
    planner_address, executor_address = split
    async with ExecutorClient(executor_address) as client:
        started = await client.start(
            source=(EXAMPLES / "hello.yaml").read_text(), inputs={"name": "split"}
        )
        async for _ in client.watch(started.execution_id):
            pass
        done = await client.get(started.execution_id)
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED
    assert done.outputs.fields["greeting"].string_value == "Hello, split!"

    # The planner alone serves no executor, and the executor alone serves no planner.
    async with ExecutorClient(planner_address) as planner_only:
        with pytest.raises(ExecplanClientError) as missing:
            await planner_only.get("nope")
    assert missing.value.code == grpc.StatusCode.UNIMPLEMENTED


async def test_invalid_source_is_reported_with_field_paths(split: tuple[str, str]) -> None:
    _, executor_address = split
    bad = "name: bad\ntasks:\n  - {id: a, type: t, depnds_on: [b]}\n"
    async with ExecutorClient(executor_address) as client:
        with pytest.raises(InvalidArgumentError) as error:
            await client.start(source=bad)
    fields = [v.field for v in error.value.violations]
    assert "tasks[0].depnds_on" in fields
