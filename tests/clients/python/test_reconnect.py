"""The worker SDK against a real `execplan serve` that restarts (same port, same
database), and a worker whose replica list names a dead server.

The executor keeps a disconnected worker's leases for a 5 s grace (and gives
workers 5 s after its own restart to reclaim their attempts): a worker must be
registered again well within it, whether the server was killed or stopped
gracefully. The server's log line `worker ID connected` marks the registration.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from execplan.client import ExecutorClient
from execplan.v1 import execution_pb2 as ex
from execplan.worker import Worker

if TYPE_CHECKING:
    from tests.support.processes import LISTENING, serve_args
else:
    from support.processes import LISTENING, serve_args

GRACE_S = 5.0  # the executor's reconnect and recovery grace (EngineConfig defaults)

SLOW = """
name: slow
tasks:
  - {id: a, type: r.slow}
outputs: {v: "${{ tasks.a.output.v }}"}
"""


class ServerProcess:
    """`execplan serve` on a fixed port and database; restartable; its log is read
    on a thread, each line stamped with time.monotonic()."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.up_at = 0.0
        self.lines: list[tuple[float, str]] = []
        self._changed = threading.Condition()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [*serve_args(self.db, f"127.0.0.1:{self.port}"), "--log-level", "info"]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        assert line.startswith(LISTENING), line
        self.up_at = time.monotonic()
        self.port = int(line.rsplit(":", 1)[1])
        self.proc = proc
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            with self._changed:
                self.lines.append((time.monotonic(), line))
                self._changed.notify_all()

    def stop(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(15)

    async def registered_at(self, worker_id: str, since: float, within: float = 30.0) -> float:
        """When the server logged `worker_id` connecting after `since`."""
        return await asyncio.to_thread(self._registered_at, worker_id, since, within)

    def _registered_at(self, worker_id: str, since: float, within: float) -> float:
        needle = f"worker {worker_id} connected"
        deadline = time.monotonic() + within
        with self._changed:
            while True:
                for at, line in self.lines:
                    if at >= since and needle in line:
                        return at
                left = deadline - time.monotonic()
                assert left > 0, f"{worker_id} did not register:\n" + "".join(
                    line for _, line in self.lines[-20:]
                )
                self._changed.wait(left)


@contextlib.contextmanager
def server_process(db: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(db)
    server.start()
    try:
        yield server
    finally:
        server.stop(signal.SIGKILL)


async def until(probe: Any, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not probe():  # noqa: ASYNC110 - a flag set by another thread
            await asyncio.sleep(0.02)


async def test_worker_is_back_within_the_grace_after_kill_and_graceful_restarts(
    tmp_path: Path,
) -> None:
    with server_process(tmp_path / "execplan.db") as server:
        running = threading.Event()
        worker = Worker(server.address, worker_id="comes-back", slots=2)

        @worker.task("r.slow")
        async def slow(inputs: dict[str, Any]) -> dict[str, Any]:
            running.set()
            await asyncio.sleep(2.0)
            return {"v": 1}

        serving = asyncio.create_task(worker.serve())
        try:
            await server.registered_at("comes-back", since=0)
            # An attempt in flight across a SIGKILL: the worker must be back in time
            # to reclaim it, so it finishes once and is never dispatched again.
            async with ExecutorClient(server.address) as client:
                execution_id = (await client.start(source=SLOW)).execution_id
            await until(running.is_set)
            back: list[float] = []
            for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGKILL, signal.SIGTERM):
                server.stop(sig)
                server.start()  # same port, same database
                at = await server.registered_at("comes-back", since=server.up_at)
                back.append(round(at - server.up_at, 2))
            # Generous for a loaded box; unloaded it is well under a second.
            assert max(back) < GRACE_S, f"re-registered after {back} s"
            async with ExecutorClient(server.address) as client:
                async with asyncio.timeout(30):
                    async for _ in client.watch(execution_id):
                        pass
                done = await client.get(execution_id)
                events = [e async for e in client.history(execution_id)]
            assert done.state == ex.EXECUTION_STATE_SUCCEEDED
            dispatches = [e for e in events if e.HasField("task_dispatched")]
            assert len(dispatches) == 1, "the attempt was re-dispatched: the worker came back late"
        finally:
            await worker.stop()
            serving.cancel()
            with contextlib.suppress(BaseException):
                await serving


_REPLICA_WORKER = """
import sys
from execplan.worker import Worker

worker = Worker(sys.argv[1], worker_id="two-replicas")

@worker.task("r.noop")
async def noop(inputs):
    return {}

print("serving", flush=True)
worker.run()
print("run returned", flush=True)
"""


@contextlib.contextmanager
def hung_server() -> Iterator[str]:
    """An address that accepts TCP connections and never answers (a hung or
    SIGSTOPped server): a connection attempt to it waits for gRPC's connect timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def closed_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


async def test_sigterm_with_a_dead_replica_stops_within_a_second(tmp_path: Path) -> None:
    """A replica that never answers must not hold the drain of a worker that has
    nothing left to deliver to it: SIGTERM ends the process within about a second."""
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(_REPLICA_WORKER))
    with server_process(tmp_path / "execplan.db") as live, hung_server() as hung:
        for dead in (hung, closed_port()):
            since = time.monotonic()
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                str(script),
                f"{live.address},{dead}",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            try:
                await live.registered_at("two-replicas", since=since)
                await asyncio.sleep(1.0)  # well into a connection attempt to the dead one
                sent = time.monotonic()
                child.send_signal(signal.SIGTERM)
                stdout, _ = await asyncio.wait_for(child.communicate(), 20)
                took = time.monotonic() - sent
            finally:
                if child.returncode is None:
                    child.kill()
                    await child.wait()
            out = stdout.decode()
            assert child.returncode == 0 and "run returned" in out, out
            assert took < 1.5, f"SIGTERM took {took:.2f} s with dead replica {dead}"
