"""`execplan breakers` against a live server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from execplan.cli import main
from execplan.v1 import executor_service_pb2 as pb

from .conftest import Env

OPEN = pb.BREAKER_STATE_OPEN

FLOW = """
name: cli-breaker
tasks:
  - id: a
    type: c.dep
    circuit_breaker: {failure_threshold: 1, open_for: 1m}
"""


async def test_breakers_command_lists_an_open_breaker(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    async def down(inputs: dict[str, Any]) -> None:
        raise RuntimeError("backend down")

    env.worker({"c.dep": down})
    await env.start(FLOW)  # fails once: the breaker opens and parks the retry
    async with asyncio.timeout(10):
        while [b.state for b in await env.client.list_circuit_breakers()] != [OPEN]:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert await asyncio.to_thread(main, ["breakers", "--address", env.address]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "TYPE", "STATE", "FAILURES", "WINDOW", "OPENED", "HALF-OPEN", "PARKED", "ERROR"
    ]  # fmt: skip
    assert lines[1].split()[:3] == ["c.dep", "open", "1"]
    assert "RuntimeError: backend down" in lines[1]
    code = await asyncio.to_thread(
        main, ["breakers", "--address", env.address, "--format", "json", "--type", "c.dep"]
    )
    assert code == 0
    (status,) = json.loads(capsys.readouterr().out)
    assert status["taskType"] == "c.dep" and status["state"] == "BREAKER_STATE_OPEN"
