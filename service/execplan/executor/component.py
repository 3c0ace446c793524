"""The executor as a server component: store + engine + its two gRPC services."""

from __future__ import annotations

import dataclasses
import socket
import uuid
from collections.abc import Sequence
from typing import Any

import grpc
from execplan.executor.engine import Engine, EngineConfig
from execplan.executor.ownership import Replica, ReplicaConfig
from execplan.executor.secrets import SecretProvider
from execplan.store import open_store
from execplan.store.port import Store

# Room in a worker message for everything but the output: the attempt reference, an
# error result instead, and the other items a worker batches with it.
RESULT_ENVELOPE_BYTES = 64 * 1024


class ExecutorComponent:
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
    ) -> None:
        """`secrets`: where dispatches get task secrets (default: EXECPLAN_SECRET_*
        environment variables; see executor/secrets.py).
        `max_watch_streams`: concurrent watch streams before new ones are shed
        (wire/watch_limit.py).
        `observe`: Prometheus metrics, OpenTelemetry spans and event logs of the engine
        (executor/observability/); spans use `tracer_provider`,
        default the global one (no-op unless configured).
        On PostgreSQL the executor is always a replica (executor/ownership.py):
        `replica` names it (default: a random id advertising no address, so control
        calls for executions other replicas own are not forwarded);
        `peer_credentials`: TLS of the channel control calls are forwarded on (None:
        plaintext; see server.peer_credentials); `planner_credentials` and
        `planner_token`: TLS and bearer token towards `planner_address`.
        `max_message_bytes`: the server's gRPC message limit; a task output may use it
        all but `RESULT_ENVELOPE_BYTES`, so the executor always receives an oversized
        output and fails its attempt (PayloadTooLarge) instead of losing the stream."""
        from execplan.wire.executor_servicer import (  # noqa: PLC0415
            Compiler,
            LocalCompiler,
            RemoteCompiler,
        )

        self.store: Store = open_store(store_url)
        config = config or EngineConfig()
        room = max_message_bytes - RESULT_ENVELOPE_BYTES
        if config.max_payload_bytes > room:
            config = dataclasses.replace(config, max_payload_bytes=max(1, room))
        self._max_message_bytes = max_message_bytes
        self.engine = Engine(self.store, config, secrets=secrets)
        self.replica: Replica | None = None
        from execplan.store.postgres import PostgresStore  # noqa: PLC0415

        if isinstance(self.store, PostgresStore):
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
        self._remote: RemoteCompiler | None = None
        compiler: Compiler
        if planner_address:
            compiler = self._remote = RemoteCompiler(
                planner_address, planner_credentials, planner_token
            )
        else:
            compiler = LocalCompiler()
        self._compiler = compiler
        self._silence_ms = silence_ms
        self._max_watch_streams = max_watch_streams
        self._worker_servicer: object | None = None
        self._stopped = False

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        from execplan.v1 import executor_service_pb2_grpc, worker_service_pb2_grpc  # noqa: PLC0415
        from execplan.wire import executor_servicer, worker_servicer  # noqa: PLC0415
        from execplan.wire.watch_limit import WatchLimit  # noqa: PLC0415

        workers = worker_servicer.WorkerServicer(
            self.engine, self._silence_ms, self._max_message_bytes
        )
        self._worker_servicer = workers
        watches = WatchLimit(self._max_watch_streams)
        executor_service_pb2_grpc.add_ExecutorServiceServicer_to_server(
            executor_servicer.ExecutorServicer(self.engine, self._compiler, watches), server
        )
        worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(workers, server)
        return (executor_servicer.SERVICE_NAME, worker_servicer.SERVICE_NAME)

    async def start(self) -> None:
        await self.store.open()
        if self.replica is not None:
            await self.replica.register()  # recovery then loads only what we own
        await self.engine.start()
        if self.replica is not None:
            await self.replica.start()

    async def begin_drain(self) -> None:
        from execplan.wire.worker_servicer import WorkerServicer  # noqa: PLC0415

        if isinstance(self._worker_servicer, WorkerServicer):
            self._worker_servicer.begin_drain()
        self.engine.hub.close()
        if self.replica is not None:
            await self.replica.begin_drain()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self.engine.stop()
        if self.replica is not None:
            await self.replica.stop()
        if self._remote is not None:
            await self._remote.close()
        await self.store.close()


def new_replica_id() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
