"""Composition root: builds every part of the server and owns its lifecycle.

    components = build_components(config)        # the one place parts are wired
    async with ExecplanServer(config, components) as server:
        print(server.port)
        await server.wait_for_termination()      # or: await serve(config)

A *component* is anything with a lifecycle that may also serve gRPC services (see
`Component`). Components start in list order, before the port accepts traffic, and
stop in reverse order, so list the store first: it then closes last.

Shutdown order is fixed, and each step says why:
  1. health -> NOT_SERVING    load balancers and probes stop sending new work;
  2. begin_drain(), reversed  workers are told to finish and disconnect, subscriber
                              streams end; long-lived streams would otherwise hold
                              `server.stop(grace)` open for the whole grace period;
  3. console.stop()           the web console's HTTP port (its streams ended in 2);
  4. server.stop(grace)       in-flight unary RPCs finish, then the rest are cancelled;
  5. stop(), reversed         executor before store, store closes last.

The web console (`config.ui_listen`, docs/console.md) is not a component: it serves
the very handlers the components registered on the gRPC server (recorded by a
`HandlerTable` while they register), behind the same security interceptor.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, cast

import grpc
from execplan.config import MIB, ServerConfig, split_host_port
from execplan.errors import InvalidArgument, Unavailable
from execplan.wire.health import HealthServicer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

log = logging.getLogger(__name__)


class Component(Protocol):
    """A part of the server with a lifecycle; subclass `BaseComponent` for no-op defaults."""

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        """Add servicers to `server`; return the full names of the services added
        (e.g. "execplan.v1.ExecutorService") for health and reflection."""
        ...

    async def start(self) -> None:
        """Called in list order before the port accepts traffic."""
        ...

    async def begin_drain(self) -> None:
        """Shutdown began: ask streams to drain and end; must not block for long."""
        ...

    async def stop(self) -> None:
        """Called in reverse order after the gRPC server stopped. Idempotent."""
        ...


class BaseComponent:
    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        return ()

    async def start(self) -> None:
        return None

    async def begin_drain(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class PlannerComponent(BaseComponent):
    def __init__(self, config: ServerConfig) -> None:
        # Imported here so a server built without the planner never imports it.
        from execplan.wire.planner_servicer import SERVICE_NAME, PlannerServicer  # noqa: PLC0415

        self._servicer = PlannerServicer(offload_bytes=config.compile_offload_bytes)
        self._service_name = SERVICE_NAME

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        from execplan.v1 import planner_service_pb2_grpc  # noqa: PLC0415

        planner_service_pb2_grpc.add_PlannerServiceServicer_to_server(self._servicer, server)
        return (self._service_name,)

    async def stop(self) -> None:
        self._servicer.close()


class MetricsComponent(BaseComponent):
    """Prometheus /metrics on its own HTTP port (a daemon thread in prometheus_client)."""

    def __init__(self, listen: str) -> None:
        self._host, self._port = split_host_port(listen)
        self._httpd: Any = None

    async def start(self) -> None:
        import prometheus_client  # noqa: PLC0415

        try:
            self._httpd, _ = prometheus_client.start_http_server(self._port, self._host)
        except OSError as exc:
            raise Unavailable(f"cannot listen on {self._host}:{self._port}: {exc}") from exc
        log.info("metrics on http://%s:%d/metrics", self._host, self._httpd.server_port)

    async def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


def build_components(config: ServerConfig) -> list[Component]:
    """Everything `execplan serve` runs, in start order (store first, so it closes last).

    The executor plugs in here: open the store from `config.db_path` (a SQLite path
    or a store URL such as postgresql://...), then append
    the executor component (which registers ExecutorService and WorkerService).
    """
    components: list[Component] = []
    if config.run_executor:
        from execplan.executor.component import ExecutorComponent  # noqa: PLC0415
        from execplan.executor.engine import EngineConfig  # noqa: PLC0415
        from execplan.executor.sandbox import ExpressionBudget  # noqa: PLC0415
        from execplan.executor.secrets import SecretsFileError, provider_for  # noqa: PLC0415

        try:
            secrets = provider_for(config.secrets_file)
        except SecretsFileError as exc:
            raise InvalidArgument(str(exc)) from exc

        components.append(
            ExecutorComponent(
                config.db_path,
                planner_address=None if config.run_planner else config.planner_address,
                config=EngineConfig(
                    expressions=ExpressionBudget(
                        timeout_ms=config.expression_timeout_ms,
                        memory_bytes=config.expression_memory_mib * MIB,
                    )
                ),
                silence_ms=int(config.worker_silence_seconds * 1000),
                secrets=secrets,
                replica=_replica(config),
                peer_credentials=peer_credentials(config),
                planner_credentials=planner_credentials(config),
                planner_token=config.planner_token,
                max_message_bytes=config.max_message_bytes,
                max_watch_streams=config.max_watch_streams,
            )
        )
    if config.run_planner:
        components.append(PlannerComponent(config))
    if config.metrics_listen:
        components.insert(0, MetricsComponent(config.metrics_listen))
    return components


def _replica(config: ServerConfig) -> Any:
    """The ReplicaConfig of an executor on PostgreSQL (unused on SQLite)."""
    from execplan.executor.component import new_replica_id  # noqa: PLC0415
    from execplan.executor.ownership import ReplicaConfig  # noqa: PLC0415

    return ReplicaConfig(
        replica_id=config.replica_id or new_replica_id(),
        advertise=config.advertise or config.listen,
        lease_ms=int(config.lease_seconds * 1000),
    )


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


def _interceptors(config: ServerConfig, tracer_provider: Any) -> list[grpc.aio.ServerInterceptor]:
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

    def read(path: str | None) -> bytes:
        try:
            return Path(path or "").read_bytes()
        except OSError as exc:
            raise InvalidArgument(f"cannot read TLS file {path}: {exc.strerror}") from exc

    ca = read(config.tls_client_ca) if config.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(read(config.tls_key), read(config.tls_cert))],
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


def build_console(
    config: ServerConfig, listen: str, table: Any, security: Any, services: Sequence[str]
) -> Any:
    """The web console's HTTP server on `listen` (not started), serving the handlers
    recorded in `table` of the execplan services this server runs."""
    from execplan.console.app import ConsoleApp  # noqa: PLC0415
    from execplan.console.assets import BUILD_HINT, Assets  # noqa: PLC0415
    from execplan.console.server import ConsoleServer, ConsoleTls  # noqa: PLC0415
    from execplan.wire.connect import ConnectApplication, endpoints  # noqa: PLC0415

    host, _ = split_host_port(listen)
    if not config.tls and not is_loopback(host):
        warning = (
            f"WARNING: serving the web console over plain HTTP on non-loopback {listen}: "
            "tokens and data cross the network readable (use --tls-cert/--tls-key)"
        )
        print(warning, file=sys.stderr, flush=True)
        log.warning("%s", warning)
    assets = Assets.load()
    if not assets.built:
        log.warning("%s", BUILD_HINT)
    browser_services = [s for s in services if s.startswith("execplan.v1.") and "Worker" not in s]
    routes = endpoints(table, security, browser_services)
    app = ConsoleApp(
        assets,
        ConnectApplication(routes, config.max_message_bytes),
        security,
        loopback_only=is_loopback(host),
    )
    tls = None
    if config.tls:
        tls = ConsoleTls(config.tls_cert or "", config.tls_key or "", config.tls_client_ca)
    return ConsoleServer(listen, app, tls=tls, grace=min(config.grace_seconds, 5.0))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ExecplanServer:
    def __init__(
        self,
        config: ServerConfig,
        components: Sequence[Component] | None = None,
        *,
        tracer_provider: Any = None,
    ) -> None:
        """`components` default to `build_components(config)`; `tracer_provider`
        (used when `config.tracing`) defaults to the global OpenTelemetry one."""
        self.config = config
        self.components = list(build_components(config) if components is None else components)
        self.health = HealthServicer()
        self._server: grpc.aio.Server | None = None
        self._services: list[str] = []
        self._started: list[Component] = []
        self._port = 0
        self._stopping: asyncio.Task[None] | None = None
        self._serving = False
        self._tracer_provider = tracer_provider
        self.console: Any = None  # execplan.console.server.ConsoleServer once started

    @property
    def port(self) -> int:
        """The bound port (useful with `--listen HOST:0`)."""
        return self._port

    @property
    def address(self) -> str:
        host, _ = split_host_port(self.config.listen)
        return f"[{host}]:{self._port}" if ":" in host else f"{host}:{self._port}"

    async def start(self) -> None:
        try:
            for component in self.components:
                await component.start()
                self._started.append(component)
            from execplan.wire.handlers import HandlerTable  # noqa: PLC0415

            interceptors = _interceptors(self.config, self._tracer_provider)
            self._server = server = grpc.aio.server(
                options=server_options(self.config), interceptors=interceptors
            )
            table = HandlerTable(server)
            for component in self.components:
                self._services.extend(component.register(cast(grpc.aio.Server, table)))
            health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
            reflection.enable_server_reflection(
                [
                    *self._services,
                    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                    reflection.SERVICE_NAME,
                ],
                server,
            )
            self._port = self._bind(server)
            await server.start()
            self._serving = True
            if self.config.ui_listen:
                await self._start_console(table, interceptors)
            if not self.config.auth_tokens:  # logged once the port is ours, not before
                log.info("authentication off (no --auth-tokens): every caller is admin")
        except BaseException:
            await self.stop()
            raise
        for name in ("", *self._services):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.debug("execplan listening on %s", self.address)

    async def _start_console(
        self, table: Any, interceptors: list[grpc.aio.ServerInterceptor]
    ) -> None:
        from execplan.wire.auth import SecurityInterceptor  # noqa: PLC0415

        listen = self.config.ui_listen or ""
        security = next(i for i in interceptors if isinstance(i, SecurityInterceptor))
        try:
            console = build_console(self.config, listen, table, security, self._services)
            await console.start()
        except (Unavailable, ImportError) as exc:
            if not self.config.ui_optional:
                if isinstance(exc, ImportError):
                    raise Unavailable(
                        f"the web console needs {exc.name}: pip install execplan"
                    ) from exc
                raise
            log.warning("web console not started: %s", exc)
            return
        self.console = console

    def _bind(self, server: grpc.aio.Server) -> int:
        _check_bindable(self.config.listen)
        host, _ = split_host_port(self.config.listen)
        if not self.config.tls and not is_loopback(host):
            warning = (
                f"WARNING: serving plaintext gRPC on non-loopback {self.config.listen}: "
                "anyone on the network can read and send calls (use --tls-cert/--tls-key)"
            )
            print(warning, file=sys.stderr, flush=True)
            log.warning("%s", warning)
        try:
            if self.config.tls:
                port = server.add_secure_port(self.config.listen, server_credentials(self.config))
            else:
                port = server.add_insecure_port(self.config.listen)
        except RuntimeError as exc:  # grpcio raises on bind failure (older: returns 0)
            raise Unavailable(f"cannot listen on {self.config.listen}: {exc}") from exc
        if port == 0:
            raise Unavailable(f"cannot listen on {self.config.listen}")
        return port

    async def stop(self, grace: float | None = None) -> None:
        """Graceful, ordered, idempotent: concurrent callers await the same shutdown."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._shutdown(grace))
        await asyncio.shield(self._stopping)

    async def _shutdown(self, grace: float | None) -> None:
        grace = self.config.grace_seconds if grace is None else grace
        started = time.monotonic()
        await self.health.enter_graceful_shutdown()
        for component in reversed(self._started):
            await _logged(component.begin_drain(), "begin_drain", component)
        if self.console is not None:
            await self.console.stop()
            self.console = None
        if self._server is not None:
            await self._server.stop(grace)
        log.debug("gRPC server stopped after %.3fs", time.monotonic() - started)
        for component in reversed(self._started):
            await _logged(component.stop(), "stop", component)
        if self._serving:
            log.info("stopped in %.3fs", time.monotonic() - started)
        self._started.clear()

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def run_until_signal(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop gracefully. Prefer `serve()`,
        which installs the handlers before the port opens."""
        await wait_for_signal()
        log.info("signal received, shutting down (grace %.1fs)", self.config.grace_seconds)
        await self.stop()

    async def __aenter__(self) -> ExecplanServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _check_bindable(listen: str) -> None:
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


async def _logged(step: Any, what: str, component: Component) -> None:
    # One component failing to shut down must not stop the others from closing.
    try:
        await step
    except Exception:
        log.exception("%s of %s failed", what, type(component).__name__)


async def wait_for_signal() -> None:
    """Return on the first SIGTERM or SIGINT (handlers are removed again on return)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def serve(config: ServerConfig, components: Sequence[Component] | None = None) -> None:
    """Run a server until SIGTERM/SIGINT, then stop it gracefully.

    Prints `execplan listening on HOST:PORT` once the port accepts calls. The signal
    handlers go in before the server starts, so a signal sent the moment that line
    appears (or during startup) still means a graceful stop, not sudden death.
    """
    signalled = asyncio.ensure_future(wait_for_signal())
    await asyncio.sleep(0)  # let it install the handlers
    try:
        async with ExecplanServer(config, components) as server:
            print(f"execplan listening on {server.address}", flush=True)
            if server.console is not None:
                print(f"execplan console on {server.console.url}", flush=True)
            await signalled
            log.info("signal received, shutting down (grace %.1fs)", config.grace_seconds)
    finally:
        signalled.cancel()
