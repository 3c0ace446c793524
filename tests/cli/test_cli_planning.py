"""`execplan plan|validate|serve` as a user runs them: a subprocess, exit codes, lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from execplan.v1 import planner_service_pb2, planner_service_pb2_grpc

VALID = """\
name: demo
tasks:
  - id: fetch
    type: http.get
  - id: parse
    type: json.parse
    depends_on: [fetch]
"""

INVALID = """\
name: demo
tasks:
  - id: a
    type: t.a
    depends_on: [b, a]
"""


def execplan(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "execplan.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def valid(tmp_path: Path) -> Path:
    path = tmp_path / "wf.yaml"
    path.write_text(VALID)
    return path


@pytest.mark.parametrize("fmt", ["text", "json", "dot", "mermaid"])
def test_plan_valid_exits_0(valid: Path, fmt: str) -> None:
    run = execplan("plan", str(valid), "--format", fmt)
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert "fetch" in run.stdout
    if fmt == "json":
        plan = json.loads(run.stdout)
        assert [n["task_id"] for n in plan["nodes"]] == ["fetch", "parse"]  # proto field names


def test_plan_reads_stdin() -> None:
    run = execplan("plan", "-", stdin=VALID)
    assert run.returncode == 0, run.stderr
    assert "parse" in run.stdout


def test_plan_invalid_exits_1_with_one_line_per_diagnostic() -> None:
    run = execplan("plan", "-", stdin=INVALID)
    assert run.returncode == 1
    assert run.stdout == ""
    lines = run.stderr.splitlines()
    assert lines[0] == "execplan: - is invalid (2 errors)"
    assert lines[1].startswith("tasks[0].depends_on[0]: ")
    assert lines[2].startswith("tasks[0].depends_on[1]: ")
    assert len(lines) == 3
    assert "Traceback" not in run.stderr


def test_validate(valid: Path) -> None:
    ok = execplan("validate", str(valid))
    assert (ok.returncode, ok.stdout) == (0, f"{valid}: valid\n")
    bad = execplan("validate", "-", stdin=INVALID)
    assert bad.returncode == 1
    assert bad.stderr.splitlines()[1].startswith("tasks[0].depends_on[0]: ")


def test_version_is_looked_up_only_when_asked_for() -> None:
    from importlib.metadata import version  # noqa: PLC0415

    run = execplan("--version")
    assert (run.returncode, run.stdout, run.stderr) == (0, f"execplan {version('execplan')}\n", "")
    # Other commands do without importlib.metadata (and without PyYAML for JSON).
    probe = (
        "import sys; from execplan.cli import main; code = main(['validate', '-']); "
        "assert 'importlib.metadata' not in sys.modules and 'yaml' not in sys.modules; "
        "assert 'asyncio' not in sys.modules; "
        "assert 'execplan.cli.executions' not in sys.modules; "  # the planning parser alone
        "sys.exit(code)"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe],
        input='{"name": "j", "tasks": [{"id": "a", "type": "t.a"}]}',
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (run.returncode, run.stderr) == (0, "")


def test_a_big_plan_is_written_whole_and_the_process_ends(tmp_path: Path) -> None:
    # From 10,000 nodes `plan` leaves the plan to the end of the process instead
    # of freeing it: the output must still be complete and the exit clean.
    from execplan.cli.planning import KEPT_NODES  # noqa: PLC0415
    from execplan.planner import compile_source  # noqa: PLC0415
    from execplan.planner.plan import PlanEdges  # noqa: PLC0415

    tasks = [{"id": "t0", "type": "t.x"}] + [
        {"id": f"t{i}", "type": "t.x", "depends_on": [f"t{i // 2}"], "inputs": {"i": i}}
        for i in range(1, KEPT_NODES)
    ]
    text = json.dumps({"name": "big", "tasks": tasks})
    path = tmp_path / "big.json"
    path.write_text(text)
    run = execplan("plan", str(path), "--format", "json")
    assert (run.returncode, run.stderr) == (0, "")
    plan = json.loads(run.stdout)
    compiled = compile_source(text).plan
    assert compiled is not None and isinstance(compiled.edges, PlanEdges)
    assert plan["plan_id"] == compiled.plan_id
    assert len(plan["nodes"]) == KEPT_NODES and len(plan["edges"]) == KEPT_NODES - 1


def test_unreadable_file_exits_2_with_one_line(tmp_path: Path) -> None:
    run = execplan("plan", str(tmp_path / "missing.yaml"))
    assert run.returncode == 2
    assert (
        run.stderr
        == f"execplan: cannot read {tmp_path / 'missing.yaml'}: No such file or directory\n"
    )


def test_a_file_over_the_size_limit_is_not_read_whole(tmp_path: Path) -> None:
    """64 MiB is the most a workflow may be: a bigger file is refused after reading
    one character more, in one line and exit 1, whether from a file or stdin."""
    path = tmp_path / "huge.yaml"
    limit = 64 * 1024 * 1024
    path.write_text("#" * (limit + 1))
    for args, stdin in (((str(path),), None), (("-",), path.read_text())):
        run = execplan("validate", *args, stdin=stdin)
        assert run.returncode == 1
        assert run.stderr == f"execplan: {args[0]} is longer than {limit:,} characters\n"
    path.write_text("#" * limit)  # at the limit: read, parsed, and only then judged
    assert "expected an object, got null" in execplan("validate", str(path)).stderr


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("bogus",),
        ("plan",),
        ("plan", "x.yaml", "--format", "png"),
        ("serve", "--listen", "x"),
        ("serve", "--expression-timeout", "0"),
    ],
)
def test_usage_errors_are_one_line(args: tuple[str, ...]) -> None:
    run = execplan(*args)
    assert run.returncode == 2
    assert len(run.stderr.splitlines()) == 1
    assert run.stderr.startswith("execplan: ")


def test_serve_prints_port_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "execplan.cli",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            str(tmp_path / "x.db"),
            "--grace",
            "1",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("execplan listening on 127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = planner_service_pb2_grpc.PlannerServiceStub(channel)
            reply = stub.CompilePlan(planner_service_pb2.CompilePlanRequest(source=VALID))
            assert [n.task_id for n in reply.plan.nodes] == ["fetch", "parse"]
        assert proc.stderr is not None
        metrics = next(ln for ln in proc.stderr if "metrics on http://" in ln)
        url = metrics.split("metrics on ", 1)[1].strip()
        with urllib.request.urlopen(url, timeout=10) as response:
            assert b"python_info" in response.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_on_a_busy_port_fails_in_one_line(tmp_path: Path) -> None:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        # Its own store: the default ./execplan.db is the checkout's, and one left there
        # by an older schema made this fail on the store instead of the port.
        db = str(tmp_path / "x.db")
        run = execplan("serve", "--listen", f"127.0.0.1:{port}", "--db", db)
    assert run.returncode == 1
    assert run.stderr == f"execplan: cannot listen on 127.0.0.1:{port}: Address already in use\n"
