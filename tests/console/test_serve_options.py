"""`execplan serve`'s console options as a user runs them: the default address
beside the gRPC port, `--ui-listen`, `--no-ui`, and a taken port."""

from __future__ import annotations

import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.support.processes import CLI, LISTENING, stop
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support.processes import CLI, LISTENING, stop

CONSOLE = "execplan console on "


@pytest.fixture
def taken() -> Iterator[int]:
    """A loopback port something else listens on, whose port - 1000 is free."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            sock.listen(1)
            port = sock.getsockname()[1]
            if port - 1000 >= 1024 and _free(port - 1000):
                yield port
                return
    pytest.fail("no port pair found")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def serve(tmp_path: Path, *options: str) -> subprocess.Popen[str]:
    command = [*CLI, "serve", "--db", str(tmp_path / "db"), "--grace", "1", *options]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def lines_until_listening(proc: subprocess.Popen[str]) -> list[str]:
    assert proc.stdout is not None
    lines = [proc.stdout.readline()]
    assert lines[0].startswith(LISTENING), lines
    return lines


def test_default_console_beside_a_free_grpc_port(tmp_path: Path) -> None:
    proc = serve(tmp_path, "--listen", "127.0.0.1:0")
    try:
        lines_until_listening(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(CONSOLE + "http://127.0.0.1:"), line
        url = line[len(CONSOLE) :].strip()
        with urllib.request.urlopen(url, timeout=5) as page:
            assert b'<div id="app">' in page.read()
    finally:
        stop(proc)


def test_no_ui(tmp_path: Path) -> None:
    proc = serve(tmp_path, "--listen", "127.0.0.1:0", "--no-ui")
    try:
        lines_until_listening(proc)
    finally:
        stop(proc)
    assert proc.stdout is not None
    assert CONSOLE not in proc.stdout.read()


def test_a_taken_ui_port_stops_the_start_only_when_asked_for(tmp_path: Path, taken: int) -> None:
    proc = serve(tmp_path, "--listen", "127.0.0.1:0", "--ui-listen", f"127.0.0.1:{taken}")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert f"execplan: cannot listen on 127.0.0.1:{taken} (--ui-listen)" in err

    # The default (gRPC port + 1000) taken: the server runs without a console.
    proc = serve(tmp_path, "--listen", f"127.0.0.1:{taken - 1000}")
    try:
        lines_until_listening(proc)
    finally:
        stop(proc)
    assert proc.stdout is not None and proc.stderr is not None
    assert CONSOLE not in proc.stdout.read()
    assert "web console not started" in proc.stderr.read()
