"""Executor replicas as child processes on one PostgreSQL database, for failover tests.

Each replica is `execplan serve` as `build_components` makes it, but with leases and
engine graces short enough for a test (the CLI has --lease, not the engine graces).
Workers are the SDK worker of tests/integration/harness.py, connected to every
replica through a comma list of addresses.
"""

from __future__ import annotations

import socket
import sys
import textwrap
from pathlib import Path

from integration.harness import DIAMOND, WORKER_SCRIPT, Proc, expected_total  # type: ignore[import-not-found]

__all__ = ["DIAMOND", "ReplicaCluster", "expected_total"]

# Shorter than the defaults (lease 5 s, renew 1 s, recovery grace 5 s) to keep the
# suite fast; the bound these give is LEASE_S + RENEW_S + GRACE_S.
LEASE_S = 2.0
RENEW_S = 0.5
GRACE_S = 1.0

REPLICA_SCRIPT = f"""
import asyncio, logging, sys
from execplan.config import ServerConfig
from execplan.server import ExecutorComponent
from execplan.executor.runtime.engine import EngineConfig
from execplan.executor.runtime.replicas import ReplicaConfig
from execplan.server import PlannerComponent, serve

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
listen, dsn, replica_id = sys.argv[1], sys.argv[2], sys.argv[3]
config = ServerConfig(listen=listen, db_path=dsn, grace_seconds=2)
engine = EngineConfig(
    ack_deadline_ms=1500, reconnect_grace_ms=1000, recovery_grace_ms={int(GRACE_S * 1000)}
)
replica = ReplicaConfig(
    replica_id, listen, lease_ms={int(LEASE_S * 1000)}, renew_ms={int(RENEW_S * 1000)}
)
executor = ExecutorComponent(dsn, config=engine, silence_ms=3000, replica=replica)
asyncio.run(serve(config, [executor, PlannerComponent(config)]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ReplicaCluster:
    def __init__(self, root: Path, dsn: str, replicas: int) -> None:
        self.root = root
        self.dsn = dsn
        (root / "replica.py").write_text(textwrap.dedent(REPLICA_SCRIPT))
        (root / "worker.py").write_text(textwrap.dedent(WORKER_SCRIPT))
        self.addresses = [f"127.0.0.1:{free_port()}" for _ in range(replicas)]
        self.replicas: list[Proc | None] = [None] * replicas
        self.workers: list[Proc] = []

    def start_replicas(self) -> None:
        for i, address in enumerate(self.addresses):
            args = [sys.executable, str(self.root / "replica.py"), address, self.dsn, f"r{i}"]
            self.replicas[i] = Proc(args, self.root / f"replica-{i}.log")
        for proc in self.replicas:
            assert proc is not None
            proc.wait_line("execplan listening on ", within=30)

    def start_worker(self, name: str, slots: int, delay: float, starts: Path) -> None:
        args = [sys.executable, str(self.root / "worker.py"), ",".join(self.addresses), name]
        args += [str(slots), str(delay), str(starts)]
        proc = Proc(args, self.root / f"worker-{name}.log")
        proc.wait_line("worker ready")
        self.workers.append(proc)

    def kill(self, index: int) -> None:
        proc = self.replicas[index]
        assert proc is not None
        proc.kill()  # SIGKILL

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        for proc in self.replicas:
            if proc is not None:
                proc.close()
