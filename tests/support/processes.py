"""`execplan serve` and `execplan worker` as child processes, the way a user runs them.

    with serve_with_worker(tmp / "execplan.db", "examples.workers") as address: ...

`serve_args` is the command line alone, for harnesses that manage the process
themselves (tests/integration/harness.py restarts and kills it).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import ROOT

CLI = [sys.executable, "-m", "execplan.cli"]
LISTENING = "execplan listening on "


def serve_args(db: str | Path, listen: str = "127.0.0.1:0", grace: int = 1) -> list[str]:
    return [*CLI, "serve", "--listen", listen, "--db", str(db), "--grace", str(grace)]


def start_server(db: str | Path, *options: str) -> tuple[subprocess.Popen[str], str]:
    """`execplan serve [OPTIONS]` on 127.0.0.1:0; returns once it listens, with its
    HOST:PORT."""
    server = subprocess.Popen(
        [*serve_args(db), *options], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert server.stdout is not None
    line = server.stdout.readline()
    assert line.startswith(LISTENING), line
    return server, line.split()[-1]


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM (a graceful drain), then SIGKILL if it takes more than 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def serve_with_worker(
    db: str | Path,
    target: str,
    *options: str,
    quiet: bool = False,
    serve_options: tuple[str, ...] = (),
) -> Iterator[str]:
    """A server (`execplan serve SERVE_OPTIONS`) and one `execplan worker TARGET
    OPTIONS` (run from the repository root) on it; yields the server's HOST:PORT,
    stops the worker, then the server."""
    server, address = start_server(db, *serve_options)
    output = subprocess.DEVNULL if quiet else None
    worker = subprocess.Popen(
        [*CLI, "worker", target, "--address", address, *options],
        stdout=output,
        stderr=output,
        cwd=ROOT,
    )
    try:
        yield address
    finally:
        stop(worker)
        stop(server)
