"""`execplan serve` with TLS, tokens and a secrets file, and the CLI connecting to
it; the plaintext-on-the-network warning; option errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import TOKENS, Pki

CLI = [sys.executable, "-m", "execplan.cli"]


def execplan(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EXECPLAN_")}
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=60, check=False, env=clean | env
    )


class Serving:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*CLI, "serve", "--grace", "0.5", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("execplan listening on "), self.stop()
        self.address = line.split()[-1]

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=20)
        return err


@pytest.fixture
def secured_cli(tmp_path: Path, pki: Pki, token_file: str) -> Iterator[Serving]:
    secrets = tmp_path / "secrets.json"
    secrets.write_text('{"canary": "v"}')
    secrets.chmod(0o600)
    server = Serving(
        "--listen", "127.0.0.1:0", "--db", str(tmp_path / "x.db"),
        "--tls-cert", pki.cert("server"), "--tls-key", pki.key("server"),
        "--auth-tokens", token_file, "--secrets-file", str(secrets),
        "--max-worker-streams", "4", "--start-rate", "5", "--start-burst", "20",
    )  # fmt: skip
    yield server
    server.stop()


def test_cli_connects_with_tls_and_token(secured_cli: Serving, pki: Pki) -> None:
    ok = execplan(
        "ls", "--address", secured_cli.address, "--tls-ca", pki.ca,
        EXECPLAN_TOKEN=TOKENS["client"],
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    ok = execplan(
        "ls", "--address", secured_cli.address, "--tls-ca", pki.ca,
        "--token", TOKENS["admin"],
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    denied = execplan("ls", "--address", secured_cli.address, "--tls-ca", pki.ca)
    assert denied.returncode == 1
    assert "UNAUTHENTICATED" in denied.stderr
    assert TOKENS["client"] not in denied.stderr
    env_only = execplan(
        "ls", EXECPLAN_ADDRESS=secured_cli.address, EXECPLAN_TLS_CA=pki.ca,
        EXECPLAN_TOKEN=TOKENS["worker"],
    )  # fmt: skip
    assert env_only.returncode == 1 and "PERMISSION_DENIED" in env_only.stderr


def test_plaintext_on_a_network_address_warns(tmp_path: Path) -> None:
    server = Serving("--listen", "0.0.0.0:0", "--db", str(tmp_path / "x.db"))
    err = server.stop()
    warnings = [line for line in err.splitlines() if line.startswith("WARNING: serving plaintext")]
    assert len(warnings) == 1, err
    quiet = Serving("--listen", "127.0.0.1:0", "--db", str(tmp_path / "y.db"))
    assert "plaintext" not in quiet.stop()


@pytest.mark.parametrize(
    "args",
    [
        ("--tls-cert", "c.pem"),
        ("--tls-key", "k.pem"),
        ("--tls-client-ca", "ca.pem"),
        ("--start-rate", "-1"),
        ("--max-worker-streams", "-2"),
        ("--max-watch-streams", "0"),
    ],
)
def test_security_option_errors_are_one_line(args: tuple[str, ...]) -> None:
    run = execplan("serve", "--listen", "127.0.0.1:0", *args)
    assert run.returncode == 2
    assert len(run.stderr.splitlines()) == 1, run.stderr


def test_bad_files_fail_in_one_line(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("ci client my-plaintext-token\n")
    run = execplan("serve", "--listen", "127.0.0.1:0", "--auth-tokens", str(tokens),
                   "--db", str(tmp_path / "x.db"))  # fmt: skip
    assert run.returncode == 1 and "tokens.txt:1" in run.stderr, run.stderr
    assert "my-plaintext-token" not in run.stderr
    run = execplan("serve", "--listen", "127.0.0.1:0", "--tls-cert", "nope.pem",
                   "--tls-key", "nope.key", "--db", str(tmp_path / "x.db"))  # fmt: skip
    assert run.returncode == 1 and "cannot read TLS file" in run.stderr, run.stderr
