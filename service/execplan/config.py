"""Server configuration: one frozen value built by the CLI (or a test) and handed to
the composition root (`execplan.server`). Defaults are what `execplan serve` uses."""

from __future__ import annotations

from dataclasses import dataclass

from execplan.usage import Budget

DEFAULT_LISTEN = "127.0.0.1:7070"
DEFAULT_DB = "./execplan.db"
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ServerConfig:
    # HOST:PORT; port 0 picks a free port (see ExecplanServer.port).
    listen: str = DEFAULT_LISTEN
    # The executor's store: a SQLite path, or any URL `execplan.store.open_store`
    # takes ("postgresql://...", "sqlite:///...", "memory:"); unused by the planner.
    db_path: str = DEFAULT_DB
    # 64 MiB: a 50,000-task plan is a few MiB; gRPC's 4 MiB default is too small.
    max_message_bytes: int = 64 * MIB
    # How long in-flight RPCs may run once shutdown begins.
    grace_seconds: float = 10.0
    # HOST:PORT for the Prometheus /metrics endpoint; None = no endpoint.
    metrics_listen: str | None = None
    # Install the OpenTelemetry server interceptor (spans go to whatever tracer
    # provider the process configured; the API default is a no-op).
    tracing: bool = False
    # Compiles of documents larger than this run on a worker thread (see
    # execplan.wire.planner_servicer for why).
    compile_offload_bytes: int = 64 * 1024
    # Which services this process runs: `execplan serve` runs both; `execplan
    # executor` runs the executor alone and compiles through `planner_address`.
    run_planner: bool = True
    run_executor: bool = True
    planner_address: str | None = None
    # Seconds a worker holding leases may stay silent before it counts as gone.
    worker_silence_seconds: float = 15.0
    # Executor replicas on PostgreSQL (docs/replicas.md); ignored on SQLite. The id
    # defaults to a random one; `advertise` (HOST:PORT other replicas forward control
    # calls to) defaults to `listen`; a replica silent `lease_seconds` is taken over.
    replica_id: str = ""
    advertise: str = ""
    lease_seconds: float = 5.0
    # Security (docs/security.md). TLS when both cert and key are PEM paths; with a
    # client CA, clients must present a certificate it signed (mutual TLS).
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    # Replicas: the CA that signed the other replicas' certificates, trusted when a
    # control call is forwarded to its owner over TLS (default: tls_client_ca, else
    # the system roots). The forwarding channel presents tls_cert/tls_key.
    peer_ca: str | None = None
    # `execplan executor`: TLS to the planner when set (trusting this CA; tls_cert/
    # tls_key are presented for mutual TLS), and a bearer token for its auth.
    planner_ca: str | None = None
    planner_token: str | None = None
    # Token file of execplan.wire.auth (hashed tokens / cert names -> roles);
    # None = authentication off (development default).
    auth_tokens: str | None = None
    # JSON/YAML map of secret name -> value; None = EXECPLAN_SECRET_* variables.
    secrets_file: str | None = None
    # HOST:PORT of the web console (docs/console.md); None = no console. When
    # `ui_optional`, a port that cannot be bound is logged and skipped (the CLI's
    # default address), otherwise it stops the start like any other bind error.
    ui_listen: str | None = None
    ui_optional: bool = False
    # Per authenticated identity (peer host when auth is off); 0 = unlimited.
    max_worker_streams: int = 0
    # Concurrent WatchExecution + WatchExecutions streams of this process; past it
    # new ones get RESOURCE_EXHAUSTED + RetryInfo (wire/watch_limit.py).
    max_watch_streams: int = 10_000
    start_rate: float = 0.0
    start_burst: int = 10
    # Retention of finished executions (docs/operations.md): deleted this long after
    # they end (0 = kept forever), with per-workflow overrides (name -> ms, 0 = kept).
    retention_ms: int = 0
    retention_by_workflow: tuple[tuple[str, int], ...] = ()
    # How often the background retention pass looks (and how much it deletes at once).
    retention_interval_ms: int = 60_000
    # At most one task_progress event per task per this interval.
    progress_interval_ms: int = 1000
    # Budget of an expression too expensive to evaluate inline (docs/expressions.md).
    expression_timeout_ms: int = 1_000
    expression_memory_mib: int = 1_024
    # Usage (docs/usage.md): the default budget, and the runaway caps (0: none).
    default_budget: Budget | None = None
    max_for_each_items: int = 1_000
    max_attempts_per_execution: int = 10_000
    # What may grow at run time (docs/runtime-plans.md, "Limits").
    max_sub_plan_tasks: int = 1_000
    max_nesting_depth: int = 5
    max_execution_tasks: int = 100_000
    # builtin.http may call only these origins; empty: any a workflow names.
    http_allow: tuple[str, ...] = ()

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert and self.tls_key)


def split_host_port(address: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:7070`) -> (host, port); ValueError if malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)
