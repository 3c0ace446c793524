"""`execplan usage` as a user runs it, against a real `execplan serve` with nothing
recorded yet: a zero total (text and JSON), and one `execplan:` line for a bad time,
two scopes at once, an unknown execution or a range that ends before it starts.
Usage that executions record is covered with the executor (tests/executor)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
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
        (("--by", "tenant"), 2, "invalid choice: 'tenant'"),
    ],
)
def test_bad_requests_are_one_line(
    address: str, args: tuple[str, ...], code: int, message: str
) -> None:
    done = execplan(address, "usage", *args)
    assert done.returncode == code, done
    first = done.stderr.splitlines()[0]
    assert first.startswith("execplan: ") and message in first, done.stderr
