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
import dataclasses
import logging
import signal
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, cast

import grpc
from execplan.config import MIB, ServerConfig, split_host_port
from execplan.errors import InvalidArgument, Unavailable
from execplan.wire.health import HealthServicer
from execplan.wire.transport import (
    check_bindable,
    is_loopback,
    peer_credentials,
    planner_credentials,
    server_credentials,
    server_interceptors,
    server_options,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

if TYPE_CHECKING:
    from execplan.executor.runtime.engine import EngineConfig
    from execplan.executor.runtime.replicas import Replica, ReplicaConfig
    from execplan.executor.runtime.secrets import SecretProvider
    from execplan.wire.executor_servicer import RemoteCompiler
    from execplan.wire.worker_servicer import WorkerServicer

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


# Room in a worker message for everything but the output: the attempt reference, an
# error result instead, and the other items a worker batches with it.
RESULT_ENVELOPE_BYTES = 64 * 1024


class ExecutorComponent(BaseComponent):
    """The executor: the store its URL names, the engine, ExecutorService and
    WorkerService, and on a `ReplicaStore` the replica that leases executions."""

    def __init__(
        self,
        store_url: str,
        *,
        planner_address: str | None = None,
        config: EngineConfig | None = None,
        silence_ms: int = 15_000,
        observe: bool = True,
        tracer_provider: Any = None,
        secrets: SecretProvider | None = None,
        replica: ReplicaConfig | None = None,
        peer_credentials: grpc.ChannelCredentials | None = None,
        planner_credentials: grpc.ChannelCredentials | None = None,
        planner_token: str | None = None,
        max_message_bytes: int = 64 * 1024 * 1024,
        max_watch_streams: int = 10_000,
        retention: Any = None,
    ) -> None:
        """`secrets`: where dispatches get task secrets (default: EXECPLAN_SECRET_*
        environment variables; see executor/runtime/secrets.py).
        `max_watch_streams`: concurrent watch streams before new ones are shed
        (wire/watch_limit.py).
        `observe`: Prometheus metrics, OpenTelemetry spans and event logs of the engine
        (executor/observability/); spans use `tracer_provider`,
        default the global one (no-op unless configured).
        On a store shared by replicas (PostgreSQL) the executor is always a replica
        (executor/runtime/replicas.py):
        `replica` names it (default: a random id advertising no address, so control
        calls for executions other replicas own are not forwarded);
        `peer_credentials`: TLS of the channel control calls are forwarded on (None:
        plaintext; see wire/transport.py); `planner_credentials` and
        `planner_token`: TLS and bearer token towards `planner_address`.
        `max_message_bytes`: the server's gRPC message limit; a task output may use it
        all but `RESULT_ENVELOPE_BYTES`, so the executor always receives an oversized
        output and fails its attempt (PayloadTooLarge) instead of losing the stream.
        `retention`: a `RetentionPolicy` for finished executions (default: kept).
        The scheduler and retention run beside the engine (execplan/operations.py)."""
        from execplan.executor.runtime.engine import Engine, EngineConfig  # noqa: PLC0415
        from execplan.executor.runtime.replicas import Replica, ReplicaConfig  # noqa: PLC0415
        from execplan.store import open_store  # noqa: PLC0415
        from execplan.store.port import ReplicaStore  # noqa: PLC0415
        from execplan.wire.executor_servicer import (  # noqa: PLC0415
            Compiler,
            LocalCompiler,
            RemoteCompiler,
        )

        self.store = open_store(store_url)
        config = config or EngineConfig()
        room = max_message_bytes - RESULT_ENVELOPE_BYTES
        if config.max_payload_bytes > room:
            config = dataclasses.replace(config, max_payload_bytes=max(1, room))
        self._max_message_bytes = max_message_bytes
        self._remote: RemoteCompiler | None = None
        compiler: Compiler
        if planner_address:
            compiler = self._remote = RemoteCompiler(
                planner_address, planner_credentials, planner_token
            )
        else:
            compiler = LocalCompiler()
        self._compiler = compiler
        # The planner also compiles the sub-plans dynamic tasks answer with.
        self.engine = Engine(self.store, config, secrets=secrets, compiler=compiler)
        from execplan.operations import Operations  # noqa: PLC0415

        self.operations = Operations(self.engine, retention=retention)
        self.replica: Replica | None = None
        if isinstance(self.store, ReplicaStore):
            from execplan.wire.forward import GrpcForwarder  # noqa: PLC0415

            replica = replica or ReplicaConfig(new_replica_id(), "")
            forwarder = GrpcForwarder(peer_credentials) if replica.advertise else None
            self.replica = Replica(self.store, self.engine, replica, forwarder)
        if observe:
            from execplan.executor.observability.eventlog import (  # noqa: PLC0415
                EventLogObserver,
            )
            from execplan.executor.observability.metrics import MetricsObserver  # noqa: PLC0415
            from execplan.executor.observability.tracing import TracingObserver  # noqa: PLC0415

            self.metrics = MetricsObserver(self.engine)
            self.engine.observers.add(self.metrics)
            self.engine.observers.add(TracingObserver(tracer_provider))
            self.engine.observers.add(EventLogObserver())
        self._silence_ms = silence_ms
        self._max_watch_streams = max_watch_streams
        self._worker_servicer: WorkerServicer | None = None
        self._stopped = False

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        from execplan.v1 import executor_service_pb2_grpc, worker_service_pb2_grpc  # noqa: PLC0415
        from execplan.wire import executor_servicer, worker_servicer  # noqa: PLC0415
        from execplan.wire.watch_limit import WatchLimit  # noqa: PLC0415

        workers = worker_servicer.WorkerServicer(
            self.engine, self._silence_ms, self._max_message_bytes
        )
        self._worker_servicer = workers
        from execplan.wire.schedule_rpcs import OpsRpcs  # noqa: PLC0415

        watches = WatchLimit(self._max_watch_streams)
        servicer = executor_servicer.ExecutorServicer(
            self.engine, self._compiler, watches, max_message_bytes=self._max_message_bytes
        )
        ops = self.operations
        servicer.ops = OpsRpcs(
            ops.scheduler,
            ops.pruner,
            servicer.plan_for,
            ops.check_inputs,
            max_message_bytes=self._max_message_bytes,
        )
        executor_service_pb2_grpc.add_ExecutorServiceServicer_to_server(servicer, server)
        worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(workers, server)
        return (executor_servicer.SERVICE_NAME, worker_servicer.SERVICE_NAME)

    async def start(self) -> None:
        await self.store.open()
        if self.replica is not None:
            await self.replica.register()  # recovery then loads only what we own
        await self.engine.start()
        if self.replica is not None:
            await self.replica.start()
        await self.operations.start()

    async def begin_drain(self) -> None:
        if self._worker_servicer is not None:
            self._worker_servicer.begin_drain()
        self.engine.hub.close()
        self.engine.streams.close()
        if self.replica is not None:
            await self.replica.begin_drain()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self.operations.stop()
        await self.engine.stop()
        if self.replica is not None:
            await self.replica.stop()
        if self._remote is not None:
            await self._remote.close()
        await self.store.close()


def build_components(config: ServerConfig) -> list[Component]:
    """Everything `execplan serve` runs, in start order (store first, so it closes last).

    The executor's store is `config.db_path` (a SQLite path or a store URL such as
    postgresql://...); its component registers ExecutorService and WorkerService.
    """
    components: list[Component] = []
    if config.run_executor:
        from execplan.executor.expressions.sandbox import ExpressionBudget  # noqa: PLC0415
        from execplan.executor.runtime.engine import EngineConfig  # noqa: PLC0415
        from execplan.executor.runtime.secrets import SecretsFileError, provider_for  # noqa: PLC0415
        from execplan.executor.state import Limits  # noqa: PLC0415
        from execplan.retention import RetentionPolicy  # noqa: PLC0415

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
                    ),
                    default_budget=config.default_budget,
                    max_for_each_items=config.max_for_each_items,
                    max_attempts_per_execution=config.max_attempts_per_execution,
                    limits=Limits(
                        sub_plan_tasks=config.max_sub_plan_tasks,
                        nesting_depth=config.max_nesting_depth,
                        execution_tasks=config.max_execution_tasks,
                    ),
                    progress_interval_ms=config.progress_interval_ms,
                    http_allow=frozenset(config.http_allow),
                ),
                silence_ms=int(config.worker_silence_seconds * 1000),
                secrets=secrets,
                replica=_replica(config),
                peer_credentials=peer_credentials(config),
                planner_credentials=planner_credentials(config),
                planner_token=config.planner_token,
                max_message_bytes=config.max_message_bytes,
                max_watch_streams=config.max_watch_streams,
                retention=RetentionPolicy(config.retention_ms, dict(config.retention_by_workflow)),
            )
        )
    if config.run_planner:
        components.append(PlannerComponent(config))
    if config.metrics_listen:
        components.insert(0, MetricsComponent(config.metrics_listen))
    return components


def _replica(config: ServerConfig) -> Any:
    """The ReplicaConfig of an executor on PostgreSQL (unused on SQLite)."""
    from execplan.executor.runtime.replicas import ReplicaConfig  # noqa: PLC0415

    return ReplicaConfig(
        replica_id=config.replica_id or new_replica_id(),
        advertise=config.advertise or config.listen,
        lease_ms=int(config.lease_seconds * 1000),
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

            interceptors = server_interceptors(self.config, self._tracer_provider)
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
        check_bindable(self.config.listen)
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


def new_replica_id() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
