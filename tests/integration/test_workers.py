"""Worker failures and server shutdown, with real processes."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from pathlib import Path

from execplan.client import ExecutorClient
from execplan.v1 import events_pb2
from execplan.v1 import execution_pb2 as ex

from .harness import DIAMOND, Cluster, expected_total
from .test_crash import check_dispatches


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def _wait_lines(path: Path, count: int, within: float = 15.0) -> list[str]:
    async with asyncio.timeout(within):
        while True:
            lines = await asyncio.to_thread(_lines, path)
            if len(lines) >= count:
                return lines
            await asyncio.sleep(0.02)


async def _finish(client: ExecutorClient, execution_id: str) -> ex.Execution:
    async with asyncio.timeout(30):
        async for event in client.watch(execution_id):
            if event.HasField("execution_completed"):
                break
    return await client.get(execution_id)


async def _history(client: ExecutorClient, execution_id: str) -> list[events_pb2.ExecutionEvent]:
    return [e async for e in client.history(execution_id)]


async def test_killed_worker_attempts_are_re_leased_to_another(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start_server()
    slow_log = tmp_path / "slow.log"
    slow = cluster.start_worker("slow", slots=4, delay=30.0, starts=slow_log)
    async with ExecutorClient(cluster.address) as client:
        ids = [(await client.start(source=DIAMOND, inputs={"x": x})).execution_id for x in range(3)]
        await _wait_lines(slow_log, 3)  # every `a` is running on the slow worker
        cluster.start_worker("fast", slots=4, delay=0.005)
        slow.kill()  # SIGKILL mid-task
        for x, execution_id in enumerate(ids):
            done = await _finish(client, execution_id)
            assert done.state == ex.EXECUTION_STATE_SUCCEEDED, done.error
            assert done.outputs["total"] == expected_total(x)
            events = await _history(client, execution_id)
            assert check_dispatches(events) >= 1
            requeued = [e.task_requeued for e in events if e.HasField("task_requeued")]
            assert [r.task_id for r in requeued] == ["a"]
            assert requeued[0].reason
            dispatched = [e.task_dispatched for e in events if e.HasField("task_dispatched")]
            a = [d for d in dispatched if d.task_id == "a"]
            assert [d.worker_id for d in a] == ["slow", "fast"]
            assert a[1].token.attempt == a[0].token.attempt  # a re-lease, not a retry
            assert a[1].token.lease_epoch > a[0].token.lease_epoch


class CuttableProxy:
    """A TCP proxy whose live connections the test can cut, like a network blip."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    def cut(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


async def test_dropped_stream_reconnects_and_each_task_completes_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.start_server()
    proxy = CuttableProxy(cluster.port)
    await proxy.start()
    server_port = cluster.port
    cluster.port = proxy.port  # the worker connects through the proxy
    runs_log = tmp_path / "runs.log"
    cluster.start_worker("blip", slots=8, delay=0.8, starts=runs_log)
    cluster.port = server_port
    try:
        async with ExecutorClient(cluster.address) as client:
            ids = [
                (await client.start(source=DIAMOND, inputs={"x": x})).execution_id for x in range(4)
            ]
            await _wait_lines(runs_log, 4)
            await asyncio.sleep(0.2)
            before = proxy.connections
            releases = 0
            proxy.cut()  # mid-task: every `a` is running
            for x, execution_id in enumerate(ids):
                done = await _finish(client, execution_id)
                assert done.state == ex.EXECUTION_STATE_SUCCEEDED, done.error
                assert done.outputs["total"] == expected_total(x)
                events = await _history(client, execution_id)
                releases += check_dispatches(events)  # any re-dispatch: a recorded re-lease
                succeeded = Counter(
                    e.task_succeeded.task_id for e in events if e.HasField("task_succeeded")
                )
                assert succeeded == dict.fromkeys("abcd", 1)  # exactly once
            assert proxy.connections > before  # the worker did reconnect
            print(f"\nstream drop: {releases} of {len(ids)} running attempts re-leased")
            runs = Counter(tuple(line.split()[1:3]) for line in runs_log.read_text().splitlines())
            assert max(runs.values()) == 1
    finally:
        await proxy.close()


async def test_sigterm_drains_workers_who_come_back_to_the_next_server(
    cluster: Cluster, tmp_path: Path
) -> None:
    """SIGTERM of the server: it tells its workers to drain, finishes within its
    grace and exits 0. A server shutting down does not end its workers: they finish
    what runs, then reconnect, and serve the restarted server (same port and db).
    The worker's own SIGTERM is what drains it and makes it exit 0."""
    server = cluster.start_server(cli=True)  # the real `execplan serve`
    runs_log = tmp_path / "runs.log"
    worker = cluster.start_worker("w", slots=2, delay=0.5, starts=runs_log)
    async with ExecutorClient(cluster.address) as client:
        execution_id = (await client.start(source=DIAMOND, inputs={"x": 1})).execution_id
        await _wait_lines(runs_log, 1)
        began = time.monotonic()
        server.popen.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(server.popen.wait, 10)
        elapsed = time.monotonic() - began
    assert code == 0
    assert elapsed < 3 + 1.5, elapsed  # within the grace (--grace 3) plus start-up slack
    assert worker.popen.poll() is None, "the server's drain ended the worker"
    # The execution is durable and finishes on the restarted server, on the same worker.
    cluster.start_server(cli=True)
    async with ExecutorClient(cluster.address) as client:
        done = await _finish(client, execution_id)
    assert done.state == ex.EXECUTION_STATE_SUCCEEDED
    assert done.outputs["total"] == expected_total(1)
    worker.popen.send_signal(signal.SIGTERM)
    line = await asyncio.to_thread(worker.wait_line, "worker drained", 10)
    assert line == "worker drained"
    assert await asyncio.to_thread(worker.popen.wait, 10) == 0
