"""The gRPC server's transport: options, interceptors, TLS credentials, bind checks.

    server = grpc.aio.server(options=server_options(config),
                             interceptors=interceptors(config, tracer_provider))
    port = server.add_secure_port(config.listen, server_credentials(config))

Used by the composition root (`execplan/server.py`); the credentials of the
executor's outgoing channels (to a remote planner, to peer replicas) are here too.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from pathlib import Path
from typing import Any

import grpc
from execplan.config import ServerConfig, split_host_port
from execplan.errors import InvalidArgument, Unavailable

log = logging.getLogger("execplan.server")


def server_options(config: ServerConfig) -> list[tuple[str, int]]:
    # gRPC core queues calls the server has not picked up yet (grpc.aio takes them
    # one at a time, per method, on its event loop) and past 1,000 of them cancels
    # new ones at random before any handler sees them: a burst of 2,000 watches got
    # ~150 bare CANCELLED. Let every call the explicit bounds are sized for reach
    # its handler, which sheds load with RESOURCE_EXHAUSTED + RetryInfo instead
    # (wire/watch_limit.py); the hard limit still bounds core's memory.
    pending = max(10_000, config.max_watch_streams)
    return [
        ("grpc.server.max_pending_requests", pending),
        ("grpc.server.max_pending_requests_hard_limit", 2 * pending),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        # Our own pings find dead peers (a worker whose host vanished) within ~80 s.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        # Clients (worker SDKs) ping every 20-60 s, also on idle streams; allow
        # anything from 10 s up, or they get GOAWAY "too_many_pings" (docs/contract.md).
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # A second server on the same port must fail, not silently share it.
        ("grpc.so_reuseport", 0),
    ]


def server_interceptors(
    config: ServerConfig, tracer_provider: Any
) -> list[grpc.aio.ServerInterceptor]:
    if not config.tracing:
        return _security_interceptors(config)
    # The interceptor itself rather than GrpcAioInstrumentorServer: same spans, no
    # global monkeypatch of grpc.aio.server. Health is excluded because the
    # interceptor breaks its `context.write` Watch stream (opentelemetry-contrib#3066).
    from opentelemetry.instrumentation.grpc import aio_server_interceptor  # noqa: PLC0415
    from opentelemetry.instrumentation.grpc.filters import (  # noqa: PLC0415
        health_check,
        negate,
    )

    exclude_health = negate(health_check())
    interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
        tracer_provider=tracer_provider, filter_=exclude_health
    )
    # After tracing: denied calls still get a span, with the error status.
    return [interceptor, *_security_interceptors(config)]


def _security_interceptors(config: ServerConfig) -> list[grpc.aio.ServerInterceptor]:
    from execplan.wire.auth import (  # noqa: PLC0415
        Limits,
        SecurityInterceptor,
        TokenFileError,
        TokenTable,
    )

    limits = Limits(config.max_worker_streams, config.start_rate, config.start_burst)
    tokens = None
    if config.auth_tokens:
        try:
            tokens = TokenTable.load(config.auth_tokens)
        except TokenFileError as exc:
            raise InvalidArgument(str(exc)) from exc
        log.info("authentication on: %d principals from %s", len(tokens), config.auth_tokens)
    # Always installed, even with auth off and no limits: it also turns requests that
    # do not parse into INVALID_ARGUMENT (grpc itself answers UNKNOWN).
    return [SecurityInterceptor(tokens, limits)]


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials:
    """TLS from the PEM files of `config`; client certificates are required (and
    checked against the CA) when `tls_client_ca` is set."""
    ca = _read_tls(config.tls_client_ca) if config.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(_read_tls(config.tls_key), _read_tls(config.tls_cert))],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


def _read_tls(path: str | None) -> bytes:
    try:
        return Path(path or "").read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read TLS file {path}: {exc.strerror}") from exc


def peer_credentials(config: ServerConfig) -> grpc.ChannelCredentials | None:
    """TLS of the channel a replica forwards control calls on: None (plaintext) when
    this server runs without TLS (replicas share one configuration). Trusts
    `peer_ca`, else `tls_client_ca`, else the system roots; presents this server's
    own certificate and key, which mutual-TLS peers require of every caller."""
    if not config.tls:
        return None
    ca = config.peer_ca or config.tls_client_ca
    return grpc.ssl_channel_credentials(
        root_certificates=_read_tls(ca) if ca else None,
        private_key=_read_tls(config.tls_key),
        certificate_chain=_read_tls(config.tls_cert),
    )


def planner_credentials(config: ServerConfig) -> grpc.ChannelCredentials | None:
    """TLS towards the remote planner of `execplan executor`: on when `planner_ca`
    is set; this server's own certificate and key are presented (mutual TLS)."""
    if not config.planner_ca or config.run_planner:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read_tls(config.planner_ca),
        private_key=_read_tls(config.tls_key) if config.tls else None,
        certificate_chain=_read_tls(config.tls_cert) if config.tls else None,
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bindable(listen: str) -> None:
    """Fail early with the OS's reason: grpc's bind error is vague and logs its own
    multi-line complaint to stderr. (The port may still be taken before grpc binds;
    then grpc's error is reported instead.)"""
    host, port = split_host_port(listen)
    if port == 0:
        return
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            # Like grpc: a port in TIME_WAIT is free to listen on.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(addr)
    except OSError as exc:
        raise Unavailable(f"cannot listen on {listen}: {exc.strerror or exc}") from exc
