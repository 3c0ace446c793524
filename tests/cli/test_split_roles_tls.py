"""`execplan planner` with TLS, mutual TLS and `--auth-tokens`, and `execplan
executor --planner` reaching it: `--planner-ca` for trust, the executor's own
`--tls-cert`/`--tls-key` as client certificate, the token from
$EXECPLAN_PLANNER_TOKEN or `--planner-token`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from execplan.client import ExecutorClient
from execplan.v1 import execution_pb2 as ex

if TYPE_CHECKING:
    from tests.security.conftest import TOKENS, Pki, _issue, pki, token_file
    from tests.support.processes import CLI, LISTENING, stop
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from security.conftest import TOKENS, Pki, _issue, pki, token_file
    from support.processes import CLI, LISTENING, stop

__all__ = ["pki", "token_file"]

WAITING = "name: waiting\ntasks:\n  - {id: a, type: split.never}\n"


def _start(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [*CLI, *args, "--listen", "127.0.0.1:0", "--grace", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(LISTENING):
        stop(proc)
    assert line.startswith(LISTENING), line
    return proc, line.split()[-1]


@pytest.fixture(scope="module")
def node_cert(pki: Pki) -> str:
    """A certificate usable as server and as client certificate."""
    if not (pki.root / "node.pem").exists():
        _issue(
            pki.root,
            "node",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
    return "node"


@pytest.mark.parametrize("token_from", ["env", "flag"])
async def test_executor_compiles_through_a_tls_planner(
    tmp_path: Path, pki: Pki, token_file: str, node_cert: str, token_from: str
) -> None:
    tls = ["--tls-cert", pki.cert(node_cert), "--tls-key", pki.key(node_cert)]
    planner, planner_address = _start(
        "planner", *tls, "--tls-client-ca", pki.ca, "--auth-tokens", token_file
    )
    token = ["--planner-token", TOKENS["client"]] if token_from == "flag" else []
    env = {"EXECPLAN_PLANNER_TOKEN": TOKENS["client"]} if token_from == "env" else {}
    executor = None
    try:
        executor, executor_address = _start(
            "executor",
            "--planner",
            planner_address,
            "--planner-ca",
            pki.ca,
            *token,
            *tls,
            "--db",
            str(tmp_path / "x.db"),
            env=env,
        )
        async with ExecutorClient(executor_address, tls_ca=pki.ca) as client:
            started = await client.start(source=WAITING)
            assert (await client.get(started.execution_id)).state == ex.EXECUTION_STATE_RUNNING
    finally:
        if executor is not None:
            stop(executor)
        stop(planner)
