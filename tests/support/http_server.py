"""A local HTTP server on 127.0.0.1:0 for `builtin.http` tests, in a thread.

    with TestHttpServer() as server:
        server.url("/json")            # http://127.0.0.1:PORT/json
        server.requests                # every request received: (method, path, headers, body)

Routes (the path decides; `?n=` and friends tune them):
    /json              200 {"ok": true, "method": ..., "query": {...}, "body": <json or text>}
    /echo-auth         200, the Authorization header echoed back in the body
    /status/<code>     that status (429 with Retry-After: ?after= seconds, default 7)
    /flaky/<n>         503 for the first n requests to this path, then 200 {"ok": true}
    /big/<bytes>       200 with that many bytes (?chunked=1: no Content-Length)
    /slow/<ms>         200 after sleeping that long
    /redirect          302 to http://example.invalid/
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet

    def _body(self) -> bytes:
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None,
              chunked: bool = False) -> None:  # fmt: skip
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            step = 64 << 10
            for i in range(0, len(body), step):
                part = body[i : i + step]
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: object, headers: dict[str, str] | None = None) -> None:
        self._send(
            status,
            json.dumps(value).encode(),
            {"Content-Type": "application/json", **(headers or {})},
        )

    def _handle(self) -> None:
        body = self._body()
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.server.received.append(Received(self.command, parts.path, dict(self.headers), body))
        segments = parts.path.strip("/").split("/")
        head, arg = segments[0], (segments[1] if len(segments) > 1 else "")
        if head == "json":
            try:
                parsed: object = json.loads(body) if body else None
            except ValueError:
                parsed = body.decode()
            self._json(200, {"ok": True, "method": self.command, "query": query, "body": parsed})
        elif head == "echo-auth":
            self._json(200, {"auth": self.headers.get("authorization", "")})
        elif head == "status":
            code = int(arg)
            extra = {"Retry-After": query.get("after", "7")} if code == 429 else {}
            self._json(code, {"error": f"status {code}"}, extra)
        elif head == "flaky":
            with self.server.lock:
                seen = self.server.counts[parts.path] = self.server.counts.get(parts.path, 0) + 1
            if seen <= int(arg):
                self._json(503, {"error": "try later"})
            else:
                self._json(200, {"ok": True, "after": seen - 1})
        elif head == "big":
            self._send(
                200, b"x" * int(arg), {"Content-Type": "text/plain"}, query.get("chunked") == "1"
            )
        elif head == "slow":
            time.sleep(int(arg) / 1000)
            self._json(200, {"ok": True})
        elif head == "redirect":
            self._send(302, b"", {"Location": "http://example.invalid/"})
        else:
            self._json(404, {"error": "no route"})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.received: list[Received] = []
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gave up (the timeout tests) is no error of the server's


class TestHttpServer:
    __test__ = False  # not a test class

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, path: str) -> str:
        return self.origin + path

    @property
    def requests(self) -> list[Received]:
        return list(self._server.received)

    def __enter__(self) -> TestHttpServer:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
