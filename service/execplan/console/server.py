"""The console's HTTP server: Hypercorn, in the server's own event loop.

Hypercorn rather than another ASGI server because it speaks HTTP/2 (over TLS,
negotiated by ALPN): a browser allows only six HTTP/1.1 connections per origin, and
every open console tab holds one stream, so with HTTP/1.1 the seventh tab would
wait; over HTTP/2 all of them share one connection.

    console = ConsoleServer("127.0.0.1:8070", app, tls=ConsoleTls(cert, key, None))
    await console.start()          # bound (port 0 picks one: console.port)
    await console.stop(grace)      # streams were ended by the executor's drain

TLS is the gRPC port's: the same certificate and key; with a client CA, the
browser must present a certificate it signed (callers still identify by token).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from execplan.aio import cancel_and_wait
from execplan.config import split_host_port
from execplan.errors import Unavailable

log = logging.getLogger("execplan.console")


@dataclass(frozen=True, slots=True)
class ConsoleTls:
    cert: str
    key: str
    client_ca: str | None = None


class ConsoleServer:
    def __init__(
        self, listen: str, app: Any, *, tls: ConsoleTls | None = None, grace: float = 1.0
    ) -> None:
        self._listen = listen
        self._grace = grace
        self._app = app
        self._tls = tls
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        host, _ = split_host_port(self._listen)
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if self._tls else 'http'}://{shown}:{self.port}/"

    async def start(self) -> None:
        from hypercorn.asyncio import serve  # noqa: PLC0415
        from hypercorn.config import Config  # noqa: PLC0415

        sock = _bind(self._listen)
        self.port = sock.getsockname()[1]
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]  # Hypercorn owns (and closes) it now
        config.accesslog = None
        config.errorlog = log
        config.keep_alive_timeout = 75  # seconds; idle HTTP/1.1 connections
        config.graceful_timeout = self._grace
        if self._tls is not None:
            config.certfile, config.keyfile = self._tls.cert, self._tls.key
            if self._tls.client_ca:
                config.ca_certs = self._tls.client_ca
                config.verify_mode = ssl.CERT_REQUIRED
        self._task = asyncio.create_task(
            serve(self._app, config, shutdown_trigger=self._stopping.wait),
            name="execplan-console",
        )
        await asyncio.sleep(0)  # let it take the socket before callers connect

    async def stop(self) -> None:
        """Stop accepting, give open requests the grace period, then cancel them."""
        if self._task is None:
            return
        self._stopping.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self._grace + 1)
        except TimeoutError:
            await cancel_and_wait(self._task)
        except Exception:
            log.exception("the console's HTTP server failed while stopping")
        self._task = None


def _bind(listen: str) -> socket.socket:
    host, port = split_host_port(listen)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        raise Unavailable(
            f"cannot listen on {listen} (--ui-listen): {exc.strerror or exc}"
        ) from exc
    sock.setblocking(False)
    return sock
