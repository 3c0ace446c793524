"""Replicas under TLS, mutual TLS and `--auth-tokens`: a control call made on a
replica that does not own the execution is forwarded to the owner over TLS,
carrying the original caller's bearer token (docs/security.md "Replicas")."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from execplan.cli.common import CliError
from execplan.cli.serve import config_from_args, register
from execplan.client import ExecutorClient, UnauthenticatedError
from execplan.config import ServerConfig
from execplan.server import ExecplanServer
from execplan.v1 import execution_pb2 as ex
from store.pg import pg_dsn, pg_server  # type: ignore[import-not-found]

from .conftest import TOKENS, Pki, _issue, sha

__all__ = ["pg_dsn", "pg_server"]

WAITING = """
name: waiting
tasks:
  - {id: a, type: sec.never}
"""


def _free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def replica_cert(pki: Pki) -> str:
    """A replica's certificate, usable both as server and as client certificate."""
    if not (pki.root / "replica.pem").exists():
        _issue(
            pki.root,
            "replica",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
    return "replica"


@asynccontextmanager
async def _replica(dsn: str, replica_id: str, **options: Any) -> AsyncIterator[ExecplanServer]:
    listen = f"127.0.0.1:{_free_port()}"
    config = ServerConfig(
        listen=listen, db_path=dsn, grace_seconds=0.5, replica_id=replica_id, **options
    )
    async with ExecplanServer(config) as server:
        yield server


def _client(pki: Pki, address: str, role: str, cert: str | None = None) -> ExecutorClient:
    return ExecutorClient(
        address,
        tls_ca=pki.ca,
        tls_cert=pki.cert(cert) if cert else None,
        tls_key=pki.key(cert) if cert else None,
        token=TOKENS[role] if role else None,
    )


@pytest.mark.parametrize("mtls", [False, True], ids=["tls", "mtls"])
async def test_control_forwarded_to_the_owner_under_tls_and_tokens(
    pg_dsn: str, pki: Pki, token_file: str, replica_cert: str, mtls: bool
) -> None:
    options: dict[str, Any] = {
        "tls_cert": pki.cert(replica_cert),
        "tls_key": pki.key(replica_cert),
        "auth_tokens": token_file,
    }
    if mtls:
        options["tls_client_ca"] = pki.ca
    else:
        options["peer_ca"] = pki.ca
    cert = "ci-client" if mtls else None
    async with _replica(pg_dsn, "a", **options) as a, _replica(pg_dsn, "b", **options) as b:
        owner, other = (
            _client(pki, a.address, "client", cert),
            _client(pki, b.address, "client", cert),
        )
        try:
            eid = (await owner.start(source=WAITING)).execution_id
            assert await other.pause(eid, "via b") == ex.EXECUTION_STATE_PAUSED
            assert (await owner.get(eid)).state == ex.EXECUTION_STATE_PAUSED
            assert await other.resume(eid) == ex.EXECUTION_STATE_RUNNING
            assert await other.terminate(eid, "done") != ex.EXECUTION_STATE_RUNNING
        finally:
            await owner.close()
            await other.close()


async def test_owner_authorizes_the_original_caller(
    pg_dsn: str, pki: Pki, tmp_path: Path, replica_cert: str
) -> None:
    """The owner sees the caller's token, not the peer: a principal the forwarding
    replica admits but the owner's token file does not list is refused by the owner."""
    shared = f"ci-bot client sha256:{sha(TOKENS['client'])}\n"
    only_b = tmp_path / "b.txt"
    only_b.write_text(shared + f"ops admin sha256:{sha(TOKENS['admin'])}\n")
    only_a = tmp_path / "a.txt"
    only_a.write_text(shared)
    tls = {"tls_cert": pki.cert(replica_cert), "tls_key": pki.key(replica_cert), "peer_ca": pki.ca}
    async with (
        _replica(pg_dsn, "a", auth_tokens=str(only_a), **tls) as a,
        _replica(pg_dsn, "b", auth_tokens=str(only_b), **tls) as b,
    ):
        owner, other = _client(pki, a.address, "client"), _client(pki, b.address, "admin")
        try:
            eid = (await owner.start(source=WAITING)).execution_id
            with pytest.raises(UnauthenticatedError):
                await other.pause(eid)
            assert (await owner.get(eid)).state == ex.EXECUTION_STATE_RUNNING
        finally:
            await owner.close()
            await other.close()


def test_peer_ca_option(pki: Pki) -> None:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    tls = ["--tls-cert", pki.cert("server"), "--tls-key", pki.key("server")]
    config = config_from_args(parser.parse_args(["serve", *tls, "--peer-ca", pki.ca]))
    assert config.peer_ca == pki.ca
    with pytest.raises(CliError):
        config_from_args(parser.parse_args(["serve", "--peer-ca", pki.ca]))
