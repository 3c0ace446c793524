"""The Connect routes of the console without a browser: the gRPC handlers' errors
and details arrive intact, the same roles apply, and a stream whose client goes
away ends at once (its subscription too), even while no event is due."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .conftest import console_env

WAITING = """
name: connect-waiting
tasks:
  - {id: approval, type: builtin.wait_for_event, inputs: {event: go, timeout: 10m}}
"""


def post(url: str, method: str, body: dict[str, Any], token: str | None = None) -> tuple[int, Any]:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"{url}execplan.v1.ExecutorService/{method}", json.dumps(body).encode(), headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def test_errors_keep_their_code_and_details(tmp_path: Path) -> None:
    async with console_env(tmp_path) as env:
        bad = "name: x\ntasks:\n  - {id: a, type: t, depends_on: [nope]}\n"
        status, body = await asyncio.to_thread(post, env.url, "StartExecution", {"source": bad})
        assert status == 400 and body["code"] == "invalid_argument"
        (violations,) = [d for d in body["details"] if d["type"] == "google.rpc.BadRequest"]
        assert violations["debug"]["fieldViolations"][0]["field"] == "tasks[0].depends_on[0]"
        status, body = await asyncio.to_thread(
            post, env.url, "GetExecution", {"executionId": "nope"}
        )
        assert (status, body["code"]) == (404, "not_found")
        reasons = [
            d["debug"]["reason"] for d in body["details"] if d["type"] == "google.rpc.ErrorInfo"
        ]
        assert reasons == ["NOT_FOUND"]


async def test_the_same_roles_as_grpc(tmp_path: Path) -> None:
    tokens = {"viewer": "v-token", "client": "c-token"}
    path = tmp_path / "tokens.txt"
    path.write_text(
        "".join(
            f"{r}-user {r} sha256:{hashlib.sha256(t.encode()).hexdigest()}\n"
            for r, t in tokens.items()
        )
    )
    async with console_env(tmp_path, token=tokens["client"], auth_tokens=str(path)) as env:
        execution_id = await env.start(WAITING)
        cancel = {"executionId": execution_id, "reason": "r"}
        status, body = await asyncio.to_thread(post, env.url, "CancelExecution", cancel)
        assert (status, body["code"]) == (401, "unauthenticated")
        status, body = await asyncio.to_thread(
            post, env.url, "CancelExecution", cancel, tokens["viewer"]
        )
        assert (status, body["code"]) == (403, "permission_denied")
        assert "viewer" in body["message"]
        status, body = await asyncio.to_thread(
            post, env.url, "GetExecution", {"executionId": execution_id}, tokens["viewer"]
        )
        assert status == 200 and body["execution"]["state"] == "EXECUTION_STATE_RUNNING"
        status, body = await asyncio.to_thread(
            post, env.url, "CancelExecution", cancel, tokens["client"]
        )
        assert status == 200, body


def _open_watch(url: str, execution_id: str) -> socket.socket:
    """A Connect server-stream call over a raw HTTP/1.1 socket; returns once the
    first frame (the first event) arrived."""
    parts = urlsplit(url)
    message = json.dumps({"executionId": execution_id}).encode()
    frame = b"\x00" + len(message).to_bytes(4, "big") + message
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    head = (
        "POST /execplan.v1.ExecutorService/WatchExecution HTTP/1.1\r\n"
        f"Host: {parts.hostname}:{parts.port}\r\n"
        "Content-Type: application/connect+json\r\n"
        f"Content-Length: {len(frame)}\r\n\r\n"
    )
    sock.sendall(head.encode() + frame)
    received = b""
    while b"executionStarted" not in received:
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    return sock


async def test_a_stream_ends_when_its_client_goes_away(tmp_path: Path) -> None:
    async with console_env(tmp_path) as env:
        execution_id = await env.start(WAITING)
        hub = env.executor.engine.hub
        sock = await asyncio.to_thread(_open_watch, env.url, execution_id)
        async with asyncio.timeout(5):
            while hub.watchers(execution_id) != 1:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        sock.close()  # no event is due: only the disconnect can end it
        async with asyncio.timeout(5):
            while hub.watchers(execution_id):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
