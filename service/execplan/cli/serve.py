"""`execplan serve | executor | planner`: run a server until SIGTERM/SIGINT.

`serve` runs the planner and the executor in one process (the default setup).
`executor` runs the executor alone and compiles workflow source through the
PlannerService at `--planner`; `planner` runs the stateless planner alone, so it
can be scaled out or placed apart from the executor.

Each prints `execplan listening on HOST:PORT` on stdout once the port accepts
calls; with `--listen 127.0.0.1:0` that line is how scripts learn the port.
Shutdown is graceful and ordered (see execplan.server).

`serve` and `executor` also serve the web console (docs/console.md) and print
`execplan console on URL`: by default on 127.0.0.1 at the gRPC port + 1000
(7070 -> 8070; a free port when --listen has port 0), skipped with a warning if
that port is taken; `--ui-listen HOST:PORT` to choose (then a bind error stops
the start), `--no-ui` for none.
"""

from __future__ import annotations

import argparse
import gc
import os
from typing import TYPE_CHECKING, Any

from execplan.cli.common import EXIT_USAGE, CliError
from execplan.config import DEFAULT_DB, DEFAULT_LISTEN, MIB, ServerConfig, split_host_port
from execplan.usage import FAIL, PAUSE, Budget, check_amount, valid_counter

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

PLANNER_TOKEN_ENV = "EXECPLAN_PLANNER_TOKEN"


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve", help="run the gRPC server (planner + executor)", description=__doc__
    )
    _add_server_options(serve)
    _add_executor_options(serve)
    _add_security_options(serve)
    serve.set_defaults(handler=run_serve, role="all")

    executor = subparsers.add_parser(
        "executor", help="run the executor alone, compiling through --planner", description=__doc__
    )
    _add_server_options(executor)
    _add_executor_options(executor)
    executor.add_argument(
        "--planner",
        required=True,
        metavar="HOST:PORT",
        help="the PlannerService that compiles workflow source for StartExecution",
    )
    executor.add_argument(
        "--planner-ca",
        metavar="PEM",
        help="reach --planner over TLS, trusting this CA (--tls-cert/--tls-key, when "
        "given, are presented as the client certificate for mutual TLS)",
    )
    executor.add_argument(
        "--planner-token",
        metavar="TOKEN",
        help=f"bearer token for a planner running --auth-tokens (default: ${PLANNER_TOKEN_ENV})",
    )
    _add_security_options(executor)
    executor.set_defaults(handler=run_serve, role="executor")

    planner = subparsers.add_parser(
        "planner", help="run the stateless planner alone", description=__doc__
    )
    _add_server_options(planner)
    _add_security_options(planner)
    planner.set_defaults(handler=run_serve, role="planner")


def _add_server_options(p: Any) -> None:
    p.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"gRPC address (default: {DEFAULT_LISTEN}; port 0 picks one)",
    )
    p.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus /metrics on this address (default: off)",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long in-flight calls may finish on shutdown (default: 10)",
    )
    p.add_argument(
        "--max-message-mib",
        type=int,
        default=64,
        metavar="MIB",
        help="largest request or response (default: 64)",
    )
    p.add_argument(
        "--tracing",
        action="store_true",
        help="emit OpenTelemetry server spans to the configured tracer provider",
    )
    p.add_argument(
        "--event-loop",
        default="auto",
        choices=("auto", "uvloop", "asyncio"),
        help="the server's event loop: uvloop (auto: when installed, as it is on Linux"
        " and macOS) or the standard library's asyncio loop",
    )
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument(
        "--log-format",
        default="text",
        choices=("text", "json"),
        help="json: one object per line with execution_id, task_id, attempt, trace_id",
    )


def _add_executor_options(p: Any) -> None:
    ui = p.add_mutually_exclusive_group()
    ui.add_argument(
        "--ui-listen",
        metavar="HOST:PORT",
        help="serve the web console here (default: 127.0.0.1 at the gRPC port + 1000)",
    )
    ui.add_argument("--no-ui", action="store_true", help="do not serve the web console")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--db",
        metavar="PATH",
        help=f"SQLite file of the executor (default: {DEFAULT_DB})",
    )
    where.add_argument(
        "--store",
        metavar="URL",
        help="the executor's store: postgresql://USER@HOST:PORT/DB (several machines), "
        "sqlite:///PATH or a path (one machine), or memory: (tests)",
    )
    p.add_argument(
        "--replica-id",
        default="",
        metavar="ID",
        help="PostgreSQL only: this executor replica's id (default: random); see docs/replicas.md",
    )
    p.add_argument(
        "--advertise",
        default="",
        metavar="HOST:PORT",
        help="PostgreSQL only: where other replicas reach this one (default: --listen)",
    )
    p.add_argument(
        "--lease",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="PostgreSQL only: a replica silent this long is taken over (default: 5)",
    )
    p.add_argument(
        "--expression-timeout",
        type=int,
        default=1_000,
        metavar="MS",
        help="longest a CEL expression too expensive to run inline may take; over it, "
        "its task fails with ExpressionBudgetExceeded (default: 1000; docs/expressions.md)",
    )
    p.add_argument(
        "--expression-memory-mib",
        type=int,
        default=1_024,
        metavar="MIB",
        help="memory of the process such an expression runs in (default: 1024)",
    )
    limits = p.add_argument_group("what may grow at run time (docs/runtime-plans.md)")
    for flag, default, what in (
        ("--max-sub-plan-tasks", 1_000, "tasks of one agent-written sub-plan"),
        ("--max-nesting-depth", 5, "sub-plans within sub-plans, children within children"),
        ("--max-execution-tasks", 100_000, "tasks of one execution, instances included"),
    ):
        limits.add_argument(
            flag, type=int, default=default, metavar="N", help=f"{what} (default: {default:,})"
        )
    p.add_argument(
        "--default-budget",
        metavar="LIMITS",
        help="budget of executions whose workflow sets no limit of its own, limit by "
        "limit, e.g. cost=50,tokens=5000000,on_exceeded=fail (default: none; docs/usage.md)",
    )
    p.add_argument(
        "--max-for-each-items",
        type=int,
        default=1_000,
        metavar="N",
        help="items one for_each may expand to; a longer list fails its task with "
        "TooManyItems (default: 1000; 0: no cap)",
    )
    p.add_argument(
        "--max-attempts-per-execution",
        type=int,
        default=10_000,
        metavar="N",
        help="attempts one execution may dispatch beyond one per task of its plan; the "
        "next fails its task with TooManyAttempts (default: 10000; 0: no cap)",
    )
    p.add_argument(
        "--retention",
        action="append",
        default=[],
        metavar="DURATION|WORKFLOW=DURATION",
        help="delete finished executions this long after they end (e.g. 30d; 0 keeps "
        "them); WORKFLOW=DURATION for one workflow (repeatable). Default: keep forever",
    )
    p.add_argument(
        "--progress-interval",
        default="1s",
        metavar="DURATION",
        help="at most one task_progress event per task per this long (default: 1s)",
    )
    p.add_argument(
        "--http-allow",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="builtin.http may call only these origins (scheme://host[:port], repeatable; "
        "default: any origin a workflow names; docs/flow-control.md)",
    )
    p.add_argument(
        "--peer-ca",
        metavar="PEM",
        help="PostgreSQL + TLS: CA of the other replicas' certificates, trusted when a "
        "control call is forwarded to its owner (default: --tls-client-ca, else system roots)",
    )


def _add_security_options(p: Any) -> None:
    g = p.add_argument_group("security (docs/security.md)")
    g.add_argument("--tls-cert", metavar="PEM", help="server certificate chain (enables TLS)")
    g.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    g.add_argument(
        "--tls-client-ca",
        metavar="PEM",
        help="require client certificates signed by this CA (mutual TLS)",
    )
    g.add_argument(
        "--auth-tokens",
        metavar="FILE",
        help="token file: NAME ROLE sha256:HASH|cert:NAME [TASK_TYPES] per line "
        "(default: authentication off)",
    )
    g.add_argument(
        "--secrets-file",
        metavar="FILE",
        help="JSON/YAML map of task secrets (default: EXECPLAN_SECRET_* variables)",
    )
    g.add_argument(
        "--max-worker-streams",
        type=int,
        default=0,
        metavar="N",
        help="concurrent worker streams per identity (default: 0 = unlimited)",
    )
    g.add_argument(
        "--max-watch-streams",
        type=int,
        default=10_000,
        metavar="N",
        help="concurrent WatchExecution(s) streams of this process; past it new ones "
        "are answered RESOURCE_EXHAUSTED with a retry delay (default: 10000)",
    )
    g.add_argument(
        "--start-rate",
        type=float,
        default=0.0,
        metavar="PER_SECOND",
        help="StartExecution calls per second per identity (default: 0 = unlimited)",
    )
    g.add_argument(
        "--start-burst",
        type=int,
        default=10,
        metavar="N",
        help="StartExecution burst above --start-rate (default: 10)",
    )


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    role = getattr(args, "role", "all")
    # The planner parser has no executor options; their defaults apply.
    advertise = getattr(args, "advertise", "")
    planner_address = getattr(args, "planner", None)
    for option, value in (
        ("--listen", args.listen),
        ("--metrics-listen", args.metrics_listen),
        ("--advertise", advertise or None),
        ("--planner", planner_address),
        ("--ui-listen", getattr(args, "ui_listen", None)),
    ):
        if value is None:
            continue
        try:
            split_host_port(value)
        except ValueError as exc:
            raise CliError(f"{option}: {exc}", EXIT_USAGE) from exc
    if args.max_message_mib <= 0 or args.grace < 0:
        raise CliError("--max-message-mib must be > 0 and --grace >= 0", EXIT_USAGE)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise CliError("--tls-cert and --tls-key go together", EXIT_USAGE)
    if args.tls_client_ca and not args.tls_cert:
        raise CliError("--tls-client-ca needs --tls-cert and --tls-key", EXIT_USAGE)
    if getattr(args, "peer_ca", None) and not args.tls_cert:
        raise CliError("--peer-ca needs --tls-cert and --tls-key (TLS replicas)", EXIT_USAGE)
    timeout = getattr(args, "expression_timeout", 1_000)  # `planner` has no executor options
    memory = getattr(args, "expression_memory_mib", 1_024)
    if timeout <= 0 or memory <= 0:
        raise CliError("--expression-timeout and --expression-memory-mib must be > 0", EXIT_USAGE)
    if args.max_worker_streams < 0 or args.start_rate < 0 or args.start_burst < 1:
        raise CliError(
            "--max-worker-streams and --start-rate must be >= 0, --start-burst >= 1", EXIT_USAGE
        )
    if args.max_watch_streams < 1:
        raise CliError("--max-watch-streams must be >= 1", EXIT_USAGE)
    items = getattr(args, "max_for_each_items", 1_000)
    attempts = getattr(args, "max_attempts_per_execution", 10_000)
    if items < 0 or attempts < 0:
        raise CliError(
            "--max-for-each-items and --max-attempts-per-execution must be >= 0", EXIT_USAGE
        )
    budget = getattr(args, "default_budget", None)
    grown = {  # `planner` has no executor options
        name: getattr(args, name, default)
        for name, default in (
            ("max_sub_plan_tasks", 1_000),
            ("max_nesting_depth", 5),
            ("max_execution_tasks", 100_000),
        )
    }
    if any(value < 1 for value in grown.values()):
        raise CliError(
            "--max-sub-plan-tasks, --max-nesting-depth and --max-execution-tasks must be >= 1",
            EXIT_USAGE,
        )
    http_allow = _origins(getattr(args, "http_allow", []))
    ui_listen, ui_optional = _ui_listen(args, role)
    retention_ms, by_workflow = _retention(getattr(args, "retention", []))
    return ServerConfig(
        retention_ms=retention_ms,
        retention_by_workflow=by_workflow,
        progress_interval_ms=_duration(
            getattr(args, "progress_interval", "1s"), "--progress-interval"
        ),
        listen=args.listen,
        ui_listen=ui_listen,
        ui_optional=ui_optional,
        run_planner=role != "executor",
        run_executor=role != "planner",
        planner_address=planner_address,
        db_path=getattr(args, "store", None) or getattr(args, "db", None) or DEFAULT_DB,
        max_message_bytes=args.max_message_mib * MIB,
        grace_seconds=args.grace,
        metrics_listen=args.metrics_listen,
        tracing=args.tracing,
        replica_id=getattr(args, "replica_id", ""),
        advertise=advertise,
        lease_seconds=getattr(args, "lease", 5.0),
        peer_ca=getattr(args, "peer_ca", None),
        planner_ca=getattr(args, "planner_ca", None),
        planner_token=(
            (getattr(args, "planner_token", None) or os.environ.get(PLANNER_TOKEN_ENV) or None)
            if role == "executor"
            else None
        ),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        auth_tokens=args.auth_tokens,
        secrets_file=args.secrets_file,
        max_worker_streams=args.max_worker_streams,
        max_watch_streams=args.max_watch_streams,
        start_rate=args.start_rate,
        start_burst=args.start_burst,
        expression_timeout_ms=timeout,
        expression_memory_mib=memory,
        default_budget=parse_budget(budget, "--default-budget") if budget else None,
        max_for_each_items=items,
        max_attempts_per_execution=attempts,
        **grown,
        http_allow=http_allow,
    )


def parse_budget(text: str, option: str) -> Budget:
    """`cost=50,tokens=5000000,on_exceeded=fail` as a Budget; CliError naming the part."""
    limits: dict[str, float] = {}
    action = PAUSE
    for part in text.split(","):
        name, eq, value = part.strip().partition("=")
        if not eq or not name:
            raise CliError(f"{option}: expected NAME=VALUE, got {part.strip()!r}", EXIT_USAGE)
        if name == "on_exceeded":
            if value not in ("pause", "fail"):
                raise CliError(f"{option}: on_exceeded is pause or fail, not {value!r}", EXIT_USAGE)
            action = PAUSE if value == "pause" else FAIL
            continue
        if not valid_counter(name):
            raise CliError(f"{option}: {name!r} is not a counter name", EXIT_USAGE)
        try:
            amount = float(value)
        except ValueError:
            raise CliError(f"{option}: {name}={value!r} is not a number", EXIT_USAGE) from None
        problem = check_amount(amount)
        if problem is not None:
            raise CliError(f"{option}: {name}: {problem}", EXIT_USAGE)
        limits[name] = amount
    if not limits:
        raise CliError(f"{option}: give at least one limit, e.g. cost=50", EXIT_USAGE)
    return Budget.of(limits, action)


def _duration(text: str, option: str) -> int:
    from execplan.planner.durations import parse_duration  # noqa: PLC0415

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise CliError(f"{option}: {exc}", EXIT_USAGE) from None


def _retention(values: list[str]) -> tuple[int, tuple[tuple[str, int], ...]]:
    """`--retention 30d` (server-wide) and `--retention NAME=7d` (one workflow)."""
    default = 0
    by_workflow: dict[str, int] = {}
    for value in values:
        name, eq, text = value.rpartition("=")
        ms = _duration(text, "--retention")
        if eq:
            if not name:
                raise CliError(f"--retention {value!r}: expected WORKFLOW=DURATION", EXIT_USAGE)
            by_workflow[name] = ms
        else:
            default = ms
    return default, tuple(sorted(by_workflow.items()))


def _origins(items: list[str]) -> tuple[str, ...]:
    from execplan.httpcall.rules import HttpRuleError, origin_of  # noqa: PLC0415

    origins = []
    for item in items:
        try:
            origin = origin_of(item)
        except HttpRuleError as exc:
            raise CliError(f"--http-allow {item!r}: {exc}", EXIT_USAGE) from None
        if item.rstrip("/").lower() != origin:
            raise CliError(f"--http-allow {item!r}: give an origin only, e.g. {origin}", EXIT_USAGE)
        origins.append(origin)
    return tuple(origins)


def _ui_listen(args: argparse.Namespace, role: str) -> tuple[str | None, bool]:
    """Where the console listens and whether failing to bind it is fine (the default)."""
    if role == "planner" or getattr(args, "no_ui", False):
        return None, False
    if args.ui_listen:
        return args.ui_listen, False
    _, port = split_host_port(args.listen)
    if port and port + 1000 > 65535:
        return None, False
    return f"127.0.0.1:{port + 1000 if port else 0}", True


def run_serve(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415  (keeps `execplan plan` and the like light)

    from execplan.executor.observability.tracing import configure_otlp_from_env  # noqa: PLC0415
    from execplan.logs import configure_logging, record_only_printed_fields  # noqa: PLC0415
    from execplan.server import serve  # noqa: PLC0415  (keeps other commands light)

    config = config_from_args(args)
    configure_logging(args.log_level, args.log_format)
    record_only_printed_fields()
    configure_otlp_from_env()
    tune_gc()
    with asyncio.Runner(loop_factory=event_loop_factory(args.event_loop)) as runner:
        runner.run(serve(config))
    return 0


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The server's loop. The server is bound by its one event-loop thread, and
    uvloop's loop (libuv, in Cython) runs the same work for ~5% less CPU than the
    standard one (W3: 195 -> 185 ms of server CPU per run, 60 paired runs). None: the
    standard loop. `uvloop` when it is not installed fails with a one-line reason."""
    if choice == "asyncio":
        return None
    try:
        import uvloop  # noqa: PLC0415  (only the server wants it)
    except ImportError:
        if choice == "uvloop":
            raise CliError(
                "--event-loop uvloop: uvloop is not installed (pip install uvloop)"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


# The cyclic GC's first threshold for the server process (CPython's default is 700).
GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Fewer cyclic-GC passes in the server process.

    The executor holds many long-lived container objects (every running execution's
    state, its tasks and attempts, decoded plans). With CPython's default thresholds
    (700, 10, 10) a young collection runs every 700 allocations and a full one each
    time the long-lived objects grew by a quarter: one 20,000-task execution paid 11
    full collections, ~0.85 s of its ~3.8 s of engine CPU (22%), to find almost no
    garbage (events and messages are acyclic and freed by reference counting). At
    10,000 the same run pays 3 (~0.13 s); garbage cycles wait at most 10,000
    allocations longer."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
