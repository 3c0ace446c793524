"""`execplan limits`, `limits set`, `limits delete` and `cache purge` as a user runs
them: a real `execplan serve` process, the CLI as subprocesses, and the state kept
in the server's SQLite file across a SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.support.processes import CLI, start_server, stop
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support.processes import CLI, start_server, stop


def execplan(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EXECPLAN_ADDRESS": address}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


def test_limits_set_list_delete_and_survive_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "execplan.db"
    server, address = start_server(db)
    try:
        assert (
            execplan(address, "limits").stdout.strip() == "no limits, rate limits or waiting tasks"
        )
        done = execplan(address, "limits", "set", "openai-rpm", "--rate", "60/m", "--burst", "10")
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "openai-rpm: 60/m, burst 10 (server)"
        execplan(address, "limits", "set", "tpm", "--rate", "5/30s")
        shown = execplan(address, "limits")
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines[0].split() == ["RATE", "LIMIT", "RATE", "BURST", "SOURCE", "KEY", "TOKENS",
                                    "PAUSED", "UNTIL", "WAITING"]  # fmt: skip
        assert lines[1].split()[:4] == ["openai-rpm", "60/m", "10", "server"]
        assert lines[2].split()[:4] == ["tpm", "5/30s", "5", "server"]
        as_json = json.loads(execplan(address, "limits", "--format", "json").stdout)
        assert [r["name"] for r in as_json["rateLimits"]] == ["openai-rpm", "tpm"]
        assert as_json["rateLimits"][0]["period"] == "60s"
        only = json.loads(execplan(address, "limits", "--name", "tpm", "--format", "json").stdout)
        assert [r["name"] for r in only["rateLimits"]] == ["tpm"]
        assert execplan(address, "limits", "delete", "tpm").stdout.strip() == "tpm: deleted"
        gone = execplan(address, "limits", "delete", "tpm")
        assert gone.returncode == 1
        assert gone.stderr.strip() == "execplan: no rate limit named tpm is registered"
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait()
    server, address = start_server(db)
    try:
        kept = json.loads(execplan(address, "limits", "--format", "json").stdout)
        assert [(r["name"], r["burst"]) for r in kept["rateLimits"]] == [("openai-rpm", "10")]
    finally:
        stop(server)


def test_bad_settings_are_one_line_errors(tmp_path: Path) -> None:
    server, address = start_server(tmp_path / "execplan.db")
    try:
        bad = execplan(address, "limits", "set", "x", "--rate", "60/fortnight")
        assert bad.returncode == 2
        assert bad.stderr.startswith("execplan: --rate/--burst: invalid period 'fortnight'")
        bad = execplan(address, "limits", "set", "Bad Name", "--rate", "1/s")
        assert bad.returncode == 1
        assert bad.stderr.splitlines()[0] == "execplan: INVALID_ARGUMENT: invalid rate limit"
        assert "name: must match [a-z0-9][a-z0-9._-]*" in bad.stderr
        bad = execplan(address, "cache", "purge", "--key", "k")
        assert bad.returncode == 2 and "--key needs --type" in bad.stderr
        purged = execplan(address, "cache", "purge", "--type", "llm.chat")
        assert purged.returncode == 0, purged.stderr
        assert purged.stdout.strip() == "purged 0 cache entries"
    finally:
        stop(server)
