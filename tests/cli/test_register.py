"""`execplan register FILE` as a user runs it: a real `execplan serve` process on port
0 and the CLI as subprocesses. One line on success, JSON with --format json, every
planner problem on a bad file, one `execplan:` line when a version is taken."""

from __future__ import annotations

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

CHILD = """\
name: summarize
version: "{version}"
tasks:
  - id: sum
    type: {type}
"""


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server, addr = start_server(tmp_path_factory.mktemp("register") / "execplan.db")
    try:
        yield addr
    finally:
        stop(server)


def execplan(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXECPLAN_ADDRESS": address}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


def child(tmp_path: Path, version: str, task_type: str = "t.sum") -> Path:
    path = tmp_path / f"summarize-{version}-{task_type}.yaml"
    path.write_text(CHILD.format(version=version, type=task_type))
    return path


def test_register_prints_one_line_and_is_idempotent(address: str, tmp_path: Path) -> None:
    first = execplan(address, "register", str(child(tmp_path, "1")))
    assert first.returncode == 0, first.stderr
    words = first.stdout.split()
    assert words[:2] == ["registered", "summarize@1"] and words[2].startswith("sha256:")
    assert len(first.stdout.splitlines()) == 1 and first.stderr == ""
    again = execplan(address, "register", str(child(tmp_path, "1")))
    assert again.stdout == first.stdout.replace("registered", "already registered", 1)


def test_register_json(address: str, tmp_path: Path) -> None:
    done = execplan(address, "register", str(child(tmp_path, "2")), "--format", "json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["workflowName"] == "summarize" and answer["workflowVersion"] == "2"
    assert answer["created"] is True and answer["planId"].startswith("sha256:")
    listed = execplan(address, "plans", "--workflow", "summarize", "--format", "json")
    assert answer["planId"] in {p["planId"] for p in json.loads(listed.stdout)}


def test_a_taken_version_is_one_error_line(address: str, tmp_path: Path) -> None:
    assert execplan(address, "register", str(child(tmp_path, "3"))).returncode == 0
    taken = execplan(address, "register", str(child(tmp_path, "3", "t.other")))
    assert taken.returncode == 1
    assert taken.stderr.startswith("execplan: ALREADY_EXISTS: workflow summarize@3 is registered")
    assert len(taken.stderr.splitlines()) == 1


def test_an_invalid_file_lists_every_problem_without_a_server(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\ntasks:\n  - {id: a, type: builtin.workflow}\n"
        "  - {id: b, type: t, max_parallel: 2}\n"
    )
    done = execplan("127.0.0.1:1", "register", str(path))
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0] == "execplan: " + f"{path} is invalid (2 errors)"
    assert lines[1].startswith("tasks[0].workflow: builtin.workflow needs workflow")
    assert lines[2].startswith("tasks[1].max_parallel: max_parallel on a task bounds")
