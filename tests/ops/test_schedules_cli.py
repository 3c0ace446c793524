"""Schedules as a user runs them: create, runs appearing, pause/resume, backfill,
delete; and `kill -9` of the server across slots: every slot fires exactly once."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.support.processes import CLI, LISTENING, serve_args, stop
else:
    from support.processes import CLI, LISTENING, serve_args, stop

QUICK = """\
name: tick
tasks:
  - id: nap
    type: builtin.sleep
    inputs: {duration: 1ms}
"""


def execplan(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXECPLAN_ADDRESS": address}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


def ok(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 0, run.stderr
    return run.stdout


def serve(db: Path) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [*serve_args(db), "--no-ui"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    assert line.startswith(LISTENING), line
    return server, line.split()[-1]


@pytest.fixture
def workflow(tmp_path: Path) -> Path:
    path = tmp_path / "tick.yaml"
    path.write_text(QUICK)
    return path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    proc, address = serve(tmp_path / "execplan.db")
    try:
        yield address
    finally:
        stop(proc)


def slots(address: str, name: str) -> list[int]:
    runs: list[dict[str, Any]] = json.loads(
        ok(
            execplan(
                address,
                "ls",
                "--attr",
                f"execplan_schedule={name}",
                "--limit",
                "1000",
                "--format",
                "json",
            )
        )
    )
    found = []
    for run in runs:
        stamp = run["search_attributes"]["execplan_scheduled_at"]["time_value"]
        found.append(int(_ms(stamp)))
    return sorted(found)


def _ms(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000


def test_schedule_lifecycle(server: str, workflow: Path) -> None:
    created = ok(
        execplan(
            server,
            "schedule",
            "create",
            "ticker",
            "--every",
            "1s",
            str(workflow),
            "--overlap",
            "allow",
            "--attr",
            "team=ops",
        )
    )
    assert created.startswith("schedule ticker created; next run "), created
    again = ok(
        execplan(
            server,
            "schedule",
            "create",
            "ticker",
            "--every",
            "1s",
            str(workflow),
            "--overlap",
            "allow",
            "--attr",
            "team=ops",
        )
    )
    assert "exists (unchanged)" in again
    other = execplan(server, "schedule", "create", "ticker", "--every", "2s", str(workflow))
    assert other.returncode == 1 and "ALREADY_EXISTS" in other.stderr
    time.sleep(3.5)
    fired = slots(server, "ticker")
    assert len(fired) >= 2
    assert all(b - a == 1000 for a, b in itertools.pairwise(fired)), fired
    listed = json.loads(ok(execplan(server, "schedule", "list", "--format", "json")))
    (entry,) = [s for s in listed if s["name"] == "ticker"]
    assert int(entry["info"]["runs"]) >= 2 and entry["action"]["workflow_name"] == "tick"
    assert "team" in entry["action"]["search_attributes"]
    one = json.loads(ok(execplan(server, "schedule", "get", "ticker", "--format", "json")))
    assert one["spec"]["interval"] == "1s"
    text = ok(execplan(server, "schedule", "list"))
    assert "ticker" in text and "every 1s" in text

    ok(execplan(server, "schedule", "pause", "ticker", "--reason", "maintenance"))
    time.sleep(0.5)
    paused_at = len(slots(server, "ticker"))
    time.sleep(2.2)
    assert len(slots(server, "ticker")) == paused_at
    assert "paused" in ok(execplan(server, "schedule", "get", "ticker"))
    resumed = ok(execplan(server, "schedule", "resume", "ticker"))
    assert "next run" in resumed
    time.sleep(2.2)
    assert len(slots(server, "ticker")) > paused_at

    first = slots(server, "ticker")[0]
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(first / 1000 - 5))
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(first / 1000 - 1))
    report = ok(execplan(server, "schedule", "backfill", "ticker", "--start", start, "--end", end))
    assert report.splitlines()[-1] == "5 slots: 5 started, 0 had run, 0 skipped, 0 buffered"
    repeat = ok(execplan(server, "schedule", "backfill", "ticker", "--start", start, "--end", end))
    assert repeat.splitlines()[-1] == "5 slots: 0 started, 5 had run, 0 skipped, 0 buffered"

    assert ok(execplan(server, "schedule", "delete", "ticker")).strip() == "schedule ticker deleted"
    gone = execplan(server, "schedule", "get", "ticker")
    assert gone.returncode == 1 and "NOT_FOUND" in gone.stderr


def test_bad_schedules_name_the_field(server: str, workflow: Path) -> None:
    for args, field in (
        (["--cron", "61 * * * *"], "spec.cron"),
        (["--cron", "* * * * *", "--timezone", "Mars/Olympus"], "spec.time_zone"),
        (["--every", "1s", "--jitter", "1m"], "spec.jitter"),
    ):
        run = execplan(server, "schedule", "create", "bad", *args, str(workflow))
        assert run.returncode == 1, run.stdout
        assert any(line.startswith(f"{field}: ") for line in run.stderr.splitlines()), run.stderr
    run = execplan(server, "schedule", "create", "Bad Name", "--every", "1s", str(workflow))
    assert run.returncode == 1 and "name: " in run.stderr


def test_sigkill_across_slots_fires_each_slot_exactly_once(tmp_path: Path, workflow: Path) -> None:
    db = tmp_path / "execplan.db"
    proc, address = serve(db)
    try:
        ok(
            execplan(
                address,
                "schedule",
                "create",
                "steady",
                "--every",
                "1s",
                str(workflow),
                "--overlap",
                "allow",
            )
        )
        rng = random.Random(7)
        for _ in range(3):
            time.sleep(rng.uniform(0.3, 2.0))
            proc.send_signal(signal.SIGKILL)  # mid-slot, mid-commit, anywhere
            proc.wait()
            time.sleep(1.6)  # at least one slot falls while nothing runs
            proc, address = serve(db)
        restarted = time.time() * 1000
        time.sleep(2.5)
        fired = slots(address, "steady")
    finally:
        stop(proc)
    assert len(fired) == len(set(fired)), "a slot fired twice"
    gaps = [b - a for a, b in itertools.pairwise(fired)]
    assert set(gaps) == {1000}, f"a slot never fired: {fired}"
    assert fired[-1] >= restarted, "the slots missed while down were not caught up"
