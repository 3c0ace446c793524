"""Channel construction shared by the typed client and the worker SDK.

    open_channel(address)                                  # plaintext, or whatever env says
    open_channel(address, Security(tls_ca="ca.pem", token="..."))

`Security` fields left empty are read from the environment:
EXECPLAN_TLS_CA, EXECPLAN_TLS_CERT, EXECPLAN_TLS_KEY (PEM paths) and EXECPLAN_TOKEN.
TLS is on as soon as a CA or a client certificate is given (no CA: the system
roots); a client certificate and key make it mutual TLS. A token is sent on every
call and stream as `authorization: Bearer <token>`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc

DEFAULT_ADDRESS = "127.0.0.1:7070"
ADDRESS_ENV = "EXECPLAN_ADDRESS"
TLS_CA_ENV = "EXECPLAN_TLS_CA"
TLS_CERT_ENV = "EXECPLAN_TLS_CERT"
TLS_KEY_ENV = "EXECPLAN_TLS_KEY"
TOKEN_ENV = "EXECPLAN_TOKEN"
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# Keepalive pings detect a dead peer on long-lived streams (worker Connect, watch)
# that may stay silent for minutes; the server allows pings this often
# (grpc.http2.min_ping_interval_without_data_ms), otherwise it answers GOAWAY.
CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # Plans of 50k tasks and batched stream messages exceed the 4 MiB default.
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    # The channel's own reconnect backoff (gRPC's defaults: 1 s growing by 1.6x to
    # 120 s). While it waits, calls fail at once without trying, so after a few
    # failed connects a restarted server went unnoticed for 6-19 s, past the
    # executor's 5 s reconnect grace. 0.1 s growing to at most 1 s (+-20% jitter).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    # Despite its name, the shortest time a connection attempt may take before it
    # is given up (default 20 s): a hung or black-holed server blocks a connect
    # this long. 5 s is ample for a TCP + TLS handshake.
    ("grpc.min_reconnect_backoff_ms", 5_000),
)


@dataclass(frozen=True, slots=True)
class Security:
    """Transport and caller credentials; see the module docstring."""

    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    token: str | None = None

    def with_env(self) -> Security:
        env = os.environ.get
        return replace(
            self,
            tls_ca=self.tls_ca or env(TLS_CA_ENV) or None,
            tls_cert=self.tls_cert or env(TLS_CERT_ENV) or None,
            tls_key=self.tls_key or env(TLS_KEY_ENV) or None,
            token=self.token or env(TOKEN_ENV) or None,
        )

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca or self.tls_cert)

    def __repr__(self) -> str:  # never the token
        token = "set" if self.token else None
        return f"Security(tls_ca={self.tls_ca!r}, tls_cert={self.tls_cert!r}, token={token})"


def resolve_address(address: str | None) -> str:
    """The explicit address, else $EXECPLAN_ADDRESS, else 127.0.0.1:7070."""
    return address or os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS


def insecure_channel(address: str | None) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(resolve_address(address), options=CHANNEL_OPTIONS)


def open_channel(address: str | None, security: Security | None = None) -> grpc.aio.Channel:
    """A channel to `address` with `security` (completed from the environment)."""
    sec = (security or Security()).with_env()
    if bool(sec.tls_cert) != bool(sec.tls_key):
        raise ValueError("tls_cert and tls_key go together")
    interceptors = bearer_interceptors(sec.token) if sec.token else None
    target = resolve_address(address)
    if not sec.tls:
        return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS, interceptors=interceptors)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(sec.tls_ca),
        private_key=_read(sec.tls_key),
        certificate_chain=_read(sec.tls_cert),
    )
    return grpc.aio.secure_channel(
        target, credentials, options=CHANNEL_OPTIONS, interceptors=interceptors
    )


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


class _BearerToken:
    """Adds `authorization: Bearer <token>` to every call. An interceptor rather
    than call credentials: those are refused on plaintext channels, and a token on
    loopback plaintext is how a secured server is tried out locally."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        metadata.add(*self._header)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
        )


# grpc.aio files each interceptor under the first of the four kinds it is an
# instance of (an if/elif chain), so one object per kind.
class _UnaryUnary(_BearerToken, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _UnaryStream(_BearerToken, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _StreamUnary(_BearerToken, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _StreamStream(_BearerToken, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def bearer_interceptors(token: str) -> list[grpc.aio.ClientInterceptor]:
    return [kind(token) for kind in (_UnaryUnary, _UnaryStream, _StreamUnary, _StreamStream)]
