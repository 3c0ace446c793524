"""Security fixtures: a throw-away PKI (openssl CLI), a token file, secured servers.

PKI (one CA signs everything): `server` (SAN 127.0.0.1 / localhost), and client
certificates `ci-client`, `ci-worker`, `ci-admin` (listed in the token file as
`cert:<CN>`) and `stranger` (signed, but not listed).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from execplan.config import ServerConfig
from execplan.server import ExecplanServer

TOKENS = {
    "client": "tok-client-1",
    "worker": "tok-worker-1",
    "admin": "tok-admin-1",
    "viewer": "tok-viewer-1",
}
# The worker principal may register only these task types.
WORKER_TYPES = ("sec.echo", "sec.big")
CLIENT_NAMES = ("ci-client", "ci-worker", "ci-admin", "stranger")


@dataclass(frozen=True)
class Pki:
    root: Path

    def path(self, name: str) -> str:
        return str(self.root / name)

    @property
    def ca(self) -> str:
        return self.path("ca.pem")

    def cert(self, name: str) -> str:
        return self.path(f"{name}.pem")

    def key(self, name: str) -> str:
        return self.path(f"{name}.key")

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(root: Path, name: str, ext: str) -> None:
    _openssl("genrsa", "-out", f"{name}.key", "2048", cwd=root)
    _openssl(
        "req",
        "-new",
        "-key",
        f"{name}.key",
        "-subj",
        f"/CN={name}",
        "-out",
        f"{name}.csr",
        cwd=root,
    )
    (root / f"{name}.ext").write_text(ext)
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-sha256",
        "-extfile",
        f"{name}.ext",
        "-out",
        f"{name}.pem",
        cwd=root,
    )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        # A skipped TLS test is not a pass: the README's set-up installs openssl.
        pytest.fail("openssl CLI not installed: apt-get install -y openssl")
    root = tmp_path_factory.mktemp("pki")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=execplan-test-ca",
        cwd=root,
    )
    _issue(
        root, "server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    for name in CLIENT_NAMES:
        _issue(root, name, f"subjectAltName=DNS:{name}\nextendedKeyUsage=clientAuth\n")
    return Pki(root)


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture(scope="session")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("auth") / "tokens.txt"
    path.write_text(
        "# name role credential [task types]\n"
        f"ci-bot      client  sha256:{sha(TOKENS['client'])}\n"
        f"billing     worker  sha256:{sha(TOKENS['worker'])}  {','.join(WORKER_TYPES)}\n"
        f"ops         admin   sha256:{sha(TOKENS['admin'])}\n"
        f"oncall      viewer  sha256:{sha(TOKENS['viewer'])}\n"
        "ci-client   client  cert:ci-client\n"
        f"ci-worker   worker  cert:ci-worker  {','.join(WORKER_TYPES)}\n"
        "ci-admin    admin   cert:ci-admin\n"
    )
    return str(path)


ServerFactory = Callable[..., AbstractAsyncContextManager[ExecplanServer]]


@pytest.fixture
def secured(tmp_path: Path, pki: Pki, token_file: str) -> ServerFactory:
    """`async with secured(tls=True, mtls=False, **config) as server:`"""

    @asynccontextmanager
    async def start(
        tls: bool = True, mtls: bool = False, auth: bool = True, **overrides: Any
    ) -> AsyncIterator[ExecplanServer]:
        options: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "db_path": str(tmp_path / "execplan.db"),
            "grace_seconds": 0.5,
        }
        if tls or mtls:
            options |= {"tls_cert": pki.cert("server"), "tls_key": pki.key("server")}
        if mtls:
            options["tls_client_ca"] = pki.ca
        if auth:
            options["auth_tokens"] = token_file
        async with ExecplanServer(ServerConfig(**(options | overrides))) as server:
            yield server

    return start


def secure_channel(pki: Pki, address: str, client_cert: str | None = None) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.read("ca.pem"),
        private_key=pki.read(f"{client_cert}.key") if client_cert else None,
        certificate_chain=pki.read(f"{client_cert}.pem") if client_cert else None,
    )
    return grpc.aio.secure_channel(address, credentials)


def bearer(role: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[role]}"),) if role else ()
