"""Progress, live output, search attributes, purge and JSON output as a user gets them:
`execplan serve` and `execplan worker tests/ops/ops_worker.py` as processes, the CLI
as subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.support.processes import CLI, serve_with_worker
else:
    from support.processes import CLI, serve_with_worker

HERE = Path(__file__).resolve().parent

TALK = """\
name: talk
tasks:
  - id: gate
    type: builtin.wait_for_event
    inputs: {event: go, timeout: 1m}
  - id: talk
    type: ops.talk
    depends_on: [gate]
    inputs: {words: ["hello ", "streaming ", "world"]}
outputs:
  text: "${{ tasks.talk.output.text }}"
"""

PROGRESS = """\
name: progress
tasks:
  - id: crunch
    type: ops.progress
    inputs: {steps: 200, seconds: 2}
"""

TAG = """\
name: tag
inputs:
  attributes: {type: object}
tasks:
  - id: tag
    type: ops.tag
    inputs: {attributes: "${{ workflow.inputs.attributes }}"}
"""

QUICK = """\
name: quick
tasks:
  - id: nap
    type: builtin.sleep
    inputs: {duration: 1ms}
"""


@pytest.fixture(scope="module")
def address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("ops") / "execplan.db"
    with serve_with_worker(db, str(HERE / "ops_worker.py"), quiet=True) as addr:
        yield addr


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("workflows")
    paths = {}
    for name, text in (("talk", TALK), ("progress", PROGRESS), ("tag", TAG), ("quick", QUICK)):
        paths[name] = directory / f"{name}.yaml"
        paths[name].write_text(text)
    return paths


def execplan(address: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXECPLAN_ADDRESS": address}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


def ok(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 0, run.stderr
    return run.stdout


def history_json(address: str, execution_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = json.loads(
        ok(execplan(address, "history", execution_id, "--format", "json"))
    )
    return events


def test_progress_is_coalesced_durable_and_shown(address: str, files: dict[str, Path]) -> None:
    run = execplan(address, "run", str(files["progress"]), "--wait")
    assert run.returncode == 0, run.stderr
    assert "crunch progress" in run.stderr  # run --wait shows it live (not a TTY: lines)
    execution_id = run.stderr.splitlines()[0].split()[-1]
    events = history_json(address, execution_id)
    progress = [e["task_progress"]["progress"] for e in events if "task_progress" in e]
    # 200 reports over 2 s, at most one event per task per second (plus the edges).
    assert 2 <= len(progress) <= 5, progress
    assert progress[-1] == {"step": 200, "of": 200}
    steps = [p["step"] for p in progress]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    got = json.loads(ok(execplan(address, "get", execution_id, "--format", "json")))
    (task,) = got["tasks"]
    assert task["progress"] == {"step": 200, "of": 200}
    assert task["progress_at"]
    watched = ok(execplan(address, "watch", execution_id))
    assert "task_progress" in watched


def test_watch_stream_prints_chunks_live_and_stores_none(
    address: str, files: dict[str, Path]
) -> None:
    execution_id = ok(execplan(address, "run", str(files["talk"]))).strip()
    env = {**os.environ, "EXECPLAN_ADDRESS": address}
    watch = subprocess.Popen(
        [*CLI, "watch", execution_id, "--stream"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert watch.stdout is not None
        first = watch.stdout.readline()  # subscribed: the history is coming
        assert "execution_started" in first
        ok(execplan(address, "send-event", execution_id, "go"))
        out, err = watch.communicate(timeout=30)
    finally:
        watch.kill()
    assert watch.returncode == 0, err
    # Chunks continue a `[talk] ` line; an event line between them (task_started may
    # be committed after the first chunks arrive) makes the next one start a new one.
    lines = out.splitlines()
    talked = "".join(line.removeprefix("[talk] ") for line in lines if line.startswith("[talk] "))
    assert talked == 'hello streaming world{"done": true}', out
    done_at = next(i for i, line in enumerate(lines) if "task_succeeded" in line and "talk" in line)
    assert lines.index(next(line for line in lines if line.startswith("[talk] "))) < done_at
    assert out.rstrip().splitlines()[-1].split()[2] == "execution_completed"
    # Not one chunk in the history: the result is the durable output.
    events = history_json(address, execution_id)
    assert not any("chunk" in json.dumps(e) for e in events)
    got = json.loads(ok(execplan(address, "get", execution_id, "--format", "json")))
    assert got["outputs"] == {"text": "hello streaming world"}


def test_watch_stream_json_lines(address: str, files: dict[str, Path]) -> None:
    execution_id = ok(execplan(address, "run", str(files["talk"]))).strip()
    env = {**os.environ, "EXECPLAN_ADDRESS": address}
    watch = subprocess.Popen(
        [*CLI, "watch", execution_id, "--stream", "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert watch.stdout is not None
        assert "execution_started" in watch.stdout.readline()
        ok(execplan(address, "send-event", execution_id, "go"))
        out, _err = watch.communicate(timeout=30)
    finally:
        watch.kill()
    lines = [json.loads(line) for line in out.splitlines()]
    chunks = [line["chunk"] for line in lines if "chunk" in line]
    assert [c.get("text") for c in chunks[:3]] == ["hello ", "streaming ", "world"]
    assert [c["index"] for c in chunks] == [str(i) for i in range(1, len(chunks) + 1)]
    assert {c["task_id"] for c in chunks} == {"talk"}


def test_search_attributes_at_start_and_from_a_task(address: str, files: dict[str, Path]) -> None:
    tag = f"t{time.time_ns()}"
    started = ok(
        execplan(
            address,
            "run",
            str(files["quick"]),
            "--wait",
            "--attr",
            f"batch={tag}",
            "--attr",
            "customer=acme",
            "--attr",
            "priority=3",
            "--attr",
            "vip=true",
            "--attr",
            "due=2026-01-31T00:00:00Z",
        )
    )
    del started
    other = ok(
        execplan(
            address,
            "run",
            str(files["quick"]),
            "--wait",
            "--attr",
            f"batch={tag}",
            "--attr",
            "customer=globex",
            "--attr",
            "priority=7.5",
        )
    )
    del other
    tagged = ok(
        execplan(
            address,
            "run",
            str(files["tag"]),
            "--wait",
            "--attr",
            f"batch={tag}",
            "--inputs-json",
            json.dumps({"attributes": {"stage": "done", "score": 9}}),
        )
    )
    del tagged

    def ls(*args: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = json.loads(
            ok(execplan(address, "ls", "--attr", f"batch={tag}", "--format", "json", *args))
        )
        return found

    assert len(ls()) == 3
    (acme,) = ls("--attr", "customer=acme")
    assert acme["search_attributes"]["priority"] == {"int_value": "3"}
    assert acme["search_attributes"]["vip"] == {"bool_value": True}
    assert acme["search_attributes"]["due"] == {"time_value": "2026-01-31T00:00:00Z"}
    assert len(ls("--filter", "priority > 2")) == 2
    assert len(ls("--filter", "priority > 5 AND customer = globex")) == 1
    assert len(ls("--filter", "due < 2026-02-01 AND vip = true")) == 1
    (done,) = ls("--filter", 'stage = "done" AND score >= 9')
    assert done["workflow_name"] == "tag"
    assert len(ls("--filter", "state = succeeded", "--since", "1h")) == 3
    assert ls("--until", "1h") == []
    text = ok(execplan(address, "ls", "--attr", f"batch={tag}", "--attr", "customer=acme"))
    assert "customer=acme" in text and "ATTRIBUTES" in text
    # The task's update is an event of the history.
    events = history_json(address, done["execution_id"])
    (update,) = [e for e in events if "search_attributes_updated" in e]
    assert update["search_attributes_updated"]["task_id"] == "tag"


def test_bad_filters_and_attributes_name_the_field(address: str, files: dict[str, Path]) -> None:
    bad = execplan(address, "ls", "--filter", "state = sleeping")
    assert bad.returncode == 1
    first, *rest = bad.stderr.splitlines()
    assert first.startswith("execplan: INVALID_ARGUMENT"), first
    assert rest and rest[0].startswith("filter: column 9: unknown state 'sleeping'"), rest
    worse = execplan(address, "run", str(files["quick"]), "--attr", "bad-name=1")
    assert worse.returncode == 1
    assert 'search_attributes["bad-name"]: a name matches' in worse.stderr


def test_purge_by_filter(address: str, files: dict[str, Path]) -> None:
    tag = f"p{time.time_ns()}"
    ids = [
        ok(execplan(address, "run", str(files["quick"]), "--attr", f"purge={tag}")).strip()
        for _ in range(3)
    ]
    for execution_id in ids:
        ok(execplan(address, "watch", execution_id))
    refused = execplan(address, "purge", "--filter", f'purge = "{tag}"')
    assert refused.returncode == 2 and "--yes" in refused.stderr
    dry = json.loads(
        ok(
            execplan(
                address, "purge", "--filter", f'purge = "{tag}"', "--dry-run", "--format", "json"
            )
        )
    )
    assert sorted(dry["execution_ids"]) == sorted(ids) and dry["dry_run"]
    done = ok(execplan(address, "purge", "--filter", f'purge = "{tag}"', "--yes"))
    assert sorted(done.split()) == sorted(ids)
    gone = execplan(address, "get", ids[0])
    assert gone.returncode == 1 and "NOT_FOUND" in gone.stderr
    assert (
        json.loads(ok(execplan(address, "ls", "--attr", f"purge={tag}", "--format", "json"))) == []
    )


def test_every_read_command_takes_format_json(address: str, files: dict[str, Path]) -> None:
    done = json.loads(ok(execplan(address, "run", str(files["quick"]), "--wait")))
    assert done == {}  # the outputs of a workflow without outputs
    execution_id = json.loads(ok(execplan(address, "ls", "--format", "json")))[0]["execution_id"]
    for command in (
        ["ls"],
        ["get", execution_id],
        ["history", execution_id],
        ["breakers"],
        ["limits"],
        ["schedule", "list"],
        ["plans"],
        ["workers"],
        ["usage", "--execution", execution_id],
        ["budget", execution_id],
    ):
        out = ok(execplan(address, *command, "--format", "json"))
        json.loads(out)
    replay = json.loads(ok(execplan(address, "replay", execution_id, "--format", "json")))
    assert replay["deterministic"] is True and replay["divergence"] is None
    assert replay["events"] > 0
    checked = execplan(
        address, "replay", execution_id, "--plan", str(files["talk"]), "--format", "json"
    )
    against = json.loads(checked.stdout)
    assert checked.returncode == 1 and against["compatible"] is False, checked.stderr
    assert against["incompatibilities"] and against["candidate_plan_id"]
    valid = json.loads(ok(execplan(address, "validate", str(files["quick"]), "--format", "json")))
    assert valid == {"file": str(files["quick"]), "valid": True, "diagnostics": []}
    broken = files["quick"].with_name("broken.yaml")
    broken.write_text("name: broken\ntasks:\n  - id: a\n    type: t\n    depends_on: [zz]\n")
    invalid = execplan(address, "validate", str(broken), "--format", "json")
    assert invalid.returncode == 1 and invalid.stderr == ""
    answer = json.loads(invalid.stdout)
    assert not answer["valid"]
    assert [(d["severity"], d["path"]) for d in answer["diagnostics"]] == [
        ("error", "tasks[0].depends_on[0]")
    ]
