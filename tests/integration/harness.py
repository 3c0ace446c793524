"""Real processes for integration tests: `execplan serve`, a server launcher with
short engine graces, and SDK worker processes, each a child the test can kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from execplan.v1 import executor_service_pb2_grpc

if TYPE_CHECKING:
    from tests.support.processes import LISTENING, serve_args
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support.processes import LISTENING, serve_args

# A server like `execplan serve`, but with engine graces short enough for tests
# (the CLI does not expose them).
# ACK_FLUSH_ENV (ms) holds assignment acks back for that long unless another round
# commits (to kill a server while an ack is not yet durable).
ACK_FLUSH_ENV = "EXECPLAN_TEST_ACK_FLUSH_MS"
SERVER_SCRIPT = """
import asyncio, os, sys
from execplan.config import ServerConfig
from execplan.server import ExecutorComponent
from execplan.executor.runtime.engine import EngineConfig
from execplan.server import PlannerComponent, serve

listen, db = sys.argv[1], sys.argv[2]
config = ServerConfig(listen=listen, db_path=db, grace_seconds=2)
engine = EngineConfig(
    ack_deadline_ms=1500, reconnect_grace_ms=1000, recovery_grace_ms=1000,
    ack_flush_ms=int(os.environ.get("EXECPLAN_TEST_ACK_FLUSH_MS", "20")),
)
executor = ExecutorComponent(db, config=engine, silence_ms=3000)
asyncio.run(serve(config, [executor, PlannerComponent(config)]))
"""

# Handlers derive outputs from inputs so a test can compute every result itself.
WORKER_SCRIPT = """
import asyncio, os, sys, time
from execplan.worker import Worker

address, worker_id, slots, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
log = open(sys.argv[5], "a", buffering=1) if len(sys.argv) > 5 else None
worker = Worker(address, worker_id=worker_id, slots=slots)

async def pause(ctx):
    if log is not None:
        log.write(f"start {ctx.idempotency_key} {ctx.lease_epoch} {os.getpid()}\\n")
    await asyncio.sleep(delay)

@worker.task("t.a")
async def a(inputs, ctx):
    await pause(ctx)
    return {"v": inputs["x"] + 1}

@worker.task("t.b")
async def b(inputs, ctx):
    await pause(ctx)
    return {"v": inputs["v"] * 2}

@worker.task("t.c")
async def c(inputs, ctx):
    await pause(ctx)
    return {"v": inputs["v"] + 3}

@worker.task("t.d")
async def d(inputs, ctx):
    await pause(ctx)
    return {"v": inputs["b"] + inputs["c"], "n": ctx.attempt}

print("worker ready", flush=True)
worker.run()
print("worker drained", flush=True)
"""

DIAMOND = """
name: diamond
inputs: {x: {type: integer, required: true}}
tasks:
  - {id: a, type: t.a, inputs: {x: "${{ workflow.inputs.x }}"}}
  - {id: b, type: t.b, depends_on: [a], inputs: {v: "${{ tasks.a.output.v }}"}}
  - {id: c, type: t.c, depends_on: [a], inputs: {v: "${{ tasks.a.output.v }}"}}
  - id: d
    type: t.d
    depends_on: [b, c]
    inputs: {b: "${{ tasks.b.output.v }}", c: "${{ tasks.c.output.v }}"}
outputs: {total: "${{ tasks.d.output.v }}"}
"""


def expected_total(x: int) -> int:
    return (x + 1) * 2 + (x + 1 + 3)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Proc:
    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._out = log.open("ab")
        self.popen = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=self._out, env=_env(), start_new_session=True
        )

    def wait_line(self, prefix: str, within: float = 20.0) -> str:
        assert self.popen.stdout is not None
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            line = self.popen.stdout.readline().decode()
            if not line:
                raise AssertionError(f"process exited before {prefix!r}: {self.log.read_text()}")
            if line.startswith(prefix):
                return line.strip()
        raise AssertionError(f"no {prefix!r} within {within}s")

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def terminate(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def close(self) -> None:
        self.kill()
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._out.close()


class Cluster:
    """Server and workers as child processes in `root`; the db survives restarts."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = str(root / "execplan.db")
        (root / "server.py").write_text(textwrap.dedent(SERVER_SCRIPT))
        (root / "worker.py").write_text(textwrap.dedent(WORKER_SCRIPT))
        self.server: Proc | None = None
        self.workers: list[Proc] = []
        self.port = 0
        self.starts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start_server(self, cli: bool = False) -> Proc:
        self.starts += 1
        log = self.root / f"server-{self.starts}.log"
        listen = f"127.0.0.1:{self.port}"
        if cli:
            args = serve_args(self.db, listen, grace=3)
        else:
            args = [sys.executable, str(self.root / "server.py"), listen, self.db]
        deadline = time.monotonic() + 15
        while True:  # the old port may linger for a moment after a kill
            proc = Proc(args, log)
            try:
                line = proc.wait_line(LISTENING)
                break
            except AssertionError:
                proc.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.port = int(line.rsplit(":", 1)[1])
        self.server = proc
        return proc

    def kill_server(self) -> None:
        assert self.server is not None
        self.server.close()
        self.server = None

    def start_worker(
        self, worker_id: str, slots: int = 8, delay: float = 0.005, starts: Path | None = None
    ) -> Proc:
        args = [sys.executable, str(self.root / "worker.py"), self.address, worker_id]
        args += [str(slots), str(delay)]
        if starts is not None:
            args.append(str(starts))
        proc = Proc(args, self.root / f"worker-{worker_id}-{len(self.workers)}.log")
        proc.wait_line("worker ready")
        self.workers.append(proc)
        return proc

    def channel(self) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(self.address)

    def stub(self, channel: grpc.aio.Channel) -> executor_service_pb2_grpc.ExecutorServiceAsyncStub:
        return executor_service_pb2_grpc.ExecutorServiceStub(channel)

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        if self.server is not None:
            self.server.close()
