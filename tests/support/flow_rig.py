"""Real processes for the flow-control tests: `execplan serve` and `execplan worker
tests/support/flow_worker.py` children sharing one results directory.

    rig = FlowRig(tmp_path)          # or FlowRig(tmp_path, db=postgres_dsn)
    rig.start_server(); rig.worker("gpu-1", "--capacity", "gpu=1")
    rig.lines("concurrency.log")     # what the workers wrote
    rig.metric("execplan_cache_hits_total")   # with start_server("--metrics-listen", "127.0.0.1:0")
    rig.close()
"""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from . import ROOT
from .processes import CLI, LISTENING, serve_args, stop

WORKER = str(ROOT / "tests" / "support" / "flow_worker.py")


class FlowRig:
    """A server and workers as child processes, sharing one results directory."""

    def __init__(self, tmp: Path, db: str | None = None) -> None:
        self.dir = tmp / "flow"
        self.dir.mkdir()
        self.db = db or str(tmp / "execplan.db")
        self.server: subprocess.Popen[str] | None = None
        self.servers: list[subprocess.Popen[str]] = []
        self.address = ""
        self.workers: dict[str, subprocess.Popen[bytes]] = {}

    def start_server(
        self, *extra: str, listen: str = "127.0.0.1:0", env: dict[str, str] | None = None
    ) -> str:
        log = (self.dir / "server.log").open("a")
        proc = subprocess.Popen(
            [*serve_args(self.db, listen=listen), "--no-ui", *extra],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, **(env or {})},
        )
        log.close()
        self.servers.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(LISTENING), line
        self.server = proc
        self.address = line.split()[-1]
        return self.address

    def kill_server(self) -> None:
        assert self.server is not None
        self.server.send_signal(signal.SIGKILL)
        self.server.wait()

    def worker(self, name: str, *options: str, address: str | None = None) -> None:
        env = {**os.environ, "FLOW_DIR": str(self.dir), "FLOW_WORKER": name}
        self.workers[name] = subprocess.Popen(
            [*CLI, "worker", WORKER, "--address", address or self.address,
             "--worker-id", name, *options],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )  # fmt: skip

    def lines(self, name: str) -> list[str]:
        path = self.dir / name
        return path.read_text().splitlines() if path.exists() else []

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the current server's /metrics (0 when it is not there)."""
        log = (self.dir / "server.log").read_text()
        url = log.rsplit("metrics on ", 1)[1].split()[0]
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return 0.0

    def close(self) -> None:
        for proc in self.workers.values():
            stop(proc)
        for server in self.servers:
            stop(server)
