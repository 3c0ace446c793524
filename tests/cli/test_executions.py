"""The client commands as a user runs them: a real `execplan serve` process on port 0,
a real `execplan worker examples/workers.py` process, and the CLI as subprocesses."""

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

WAITER = """\
name: waiter
inputs:
  x: {type: integer, default: 1}
tasks:
  - id: approval
    type: builtin.wait_for_event
    inputs: {event: approved, timeout: 1m}
outputs:
  by: "${{ tasks.approval.output.data.by }}"
"""


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server and one sample worker for the whole module; yields HOST:PORT."""
    db = tmp_path_factory.mktemp("cli") / "execplan.db"
    with serve_with_worker(db, str(EXAMPLES / "workers.py"), quiet=True) as addr:
        yield addr


def execplan(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXECPLAN_ADDRESS": address}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


@pytest.fixture
def waiter(tmp_path: Path) -> Path:
    path = tmp_path / "waiter.yaml"
    path.write_text(WAITER)
    return path


def test_run_wait_prints_outputs_and_exits_0(address: str) -> None:
    run = execplan(address, "run", str(EXAMPLES / "hello.yaml"), "--input", "name=Ada", "--wait")
    assert run.returncode == 0, run.stderr
    outputs = json.loads(run.stdout)
    assert outputs["greeting"] == "Hello, Ada!"
    assert outputs["combined"].startswith("HELLO, ADA! | !adA ,olleH")
    # not a TTY: one line per task state change on stderr
    assert "summary SUCCEEDED (attempt 1)" in run.stderr


def test_run_without_wait_prints_only_the_id(address: str) -> None:
    run = execplan(address, "run", str(EXAMPLES / "hello.yaml"))
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    lines = run.stdout.splitlines()
    assert len(lines) == 1 and lines[0].strip() == lines[0] and lines[0]


def test_get_json_after_watch_is_succeeded(address: str) -> None:
    execution_id = execplan(address, "run", str(EXAMPLES / "hello.yaml")).stdout.strip()
    watch = execplan(address, "watch", execution_id)
    assert watch.returncode == 0, watch.stderr
    assert "execution_completed" in watch.stdout.splitlines()[-1]
    get = execplan(address, "get", execution_id, "--format", "json")
    assert get.returncode == 0, get.stderr
    execution = json.loads(get.stdout)
    assert execution["state"] == "EXECUTION_STATE_SUCCEEDED"
    assert execution["execution_id"] == execution_id
    text = execplan(address, "get", execution_id)
    assert "SUCCEEDED" in text.stdout and "hello.combine" in text.stdout
    history = execplan(address, "history", execution_id)
    assert history.stdout.splitlines()[0].split()[0] == "1"
    assert "execution_started" in history.stdout.splitlines()[0]
    last = execution["last_sequence"]
    past = execplan(address, "get", execution_id, "--at", "9999")
    assert past.returncode == 1, past.stdout
    first, *violations = past.stderr.splitlines()
    assert first.startswith("execplan: OUT_OF_RANGE: at_sequence 9999 is past the end"), first
    assert first.endswith(f"its last event is {last}"), first
    assert violations == [f"at_sequence: at most {last}, the last sequence"]
    at_end = execplan(address, "get", execution_id, "--at", str(last), "--format", "json")
    assert at_end.returncode == 0 and json.loads(at_end.stdout)["state"].endswith("SUCCEEDED")


def test_unknown_id_is_one_line_and_exit_1(address: str) -> None:
    for command in ("get", "history", "cancel"):
        run = execplan(address, command, "no-such-execution")
        assert run.returncode == 1
        assert run.stderr.count("\n") == 1, run.stderr
        assert run.stderr.startswith("execplan: NOT_FOUND"), run.stderr


def test_bad_input_type_names_the_field(address: str, waiter: Path) -> None:
    run = execplan(address, "run", str(waiter), "--input", "x=abc")
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert any(line.startswith("inputs.x: ") for line in run.stderr.splitlines()), run.stderr


def test_send_event_completes_a_waiting_execution(address: str, waiter: Path) -> None:
    execution_id = execplan(address, "run", str(waiter), "--input", "x=3").stdout.strip()
    sent = execplan(address, "send-event", execution_id, "approved", "--data", '{"by": "ada"}')
    assert sent.returncode == 0, sent.stderr
    watch = execplan(address, "watch", execution_id)
    assert watch.returncode == 0, watch.stderr
    get = execplan(address, "get", execution_id, "--format", "json")
    assert json.loads(get.stdout)["outputs"] == {"by": "ada"}


def test_failed_execution_exits_1_with_one_line(address: str) -> None:
    run = execplan(
        address,
        "run",
        str(EXAMPLES / "order_saga.yaml"),
        "--inputs-json",
        '{"order_id": "o-1", "ship_fail": true}',
        "--wait",
    )
    assert run.returncode == 1
    last = run.stderr.splitlines()[-1]
    assert last.startswith("execplan: execution ") and " ended COMPENSATED: RuntimeError: " in last


def test_pause_resume_cancel_and_ls(address: str, waiter: Path) -> None:
    execution_id = execplan(address, "run", str(waiter)).stdout.strip()
    assert execplan(address, "pause", execution_id).stdout.split() == [execution_id, "PAUSED"]
    assert execplan(address, "resume", execution_id).stdout.split() == [execution_id, "RUNNING"]
    listed = execplan(address, "ls", "--state", "running", "--workflow", "waiter")
    assert execution_id in listed.stdout
    cancel = execplan(address, "cancel", execution_id, "--reason", "test")
    assert cancel.stdout.split() == [execution_id, "CANCELLED"]
    watch = execplan(address, "watch", execution_id)
    assert watch.returncode == 1
    assert f"execution {execution_id} ended CANCELLED" in watch.stderr


def test_usage_errors_exit_2(address: str) -> None:
    assert execplan(address, "run", "missing.yaml").returncode == 2
    assert execplan(address, "send-event", "x", "e", "--data", "{bad").returncode == 2
    assert execplan(address, "ls", "--state", "bogus").returncode == 2
    worker = execplan(address, "worker", "no_such_module_here")
    assert worker.returncode == 2 and worker.stderr.startswith("execplan: cannot import")


def test_a_refused_worker_registration_is_one_line_not_an_internal_error(
    address: str, tmp_path: Path
) -> None:
    module = tmp_path / "long_id_worker.py"
    module.write_text(
        "from execplan.worker import Worker\n"
        "worker = Worker(worker_id='w' * 300)\n"
        "@worker.task('t.a')\n"
        "async def a(inputs):\n"
        "    return 1\n"
    )
    run = execplan(address, "worker", str(module))
    assert run.returncode == 1, run.stderr
    assert "internal error" not in run.stderr and "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("execplan: ")]
    assert errors == ["execplan: INVALID_ARGUMENT: register.worker_id: at most 256 characters"]
