"""End-to-end executor throughput/latency: a real server and real worker processes.

    .venv/bin/python bench/executor_bench.py [--workload w1|w2|w3|w4|w4s|idle|all] [--repeat 3]
        [--workers 2] [--slots 64] [--instances 1] [--dir /path/on/real/disk] [--json FILE]
        [--store sqlite] [--store postgresql://USER@HOST:PORT/DB]
        [--source CHECKOUT [--source CHECKOUT ...]]

Every run starts a fresh `execplan serve` (durable SQLite in a temp dir) and
`--workers` worker processes (`bench/_executor_worker.py`, `--instances` SDK
Workers each, `--slots` slots per Worker, a no-op async handler returning {}),
all over loopback. Workloads:

- w1: fan-out 1 -> 1000 -> 1 in one execution; tasks/s = 1002 / wall.
- w2: a chain of 200 tasks; ms/step = wall / 200, plus p50/p99 of the step time
  from the history (`recorded_at` of task_succeeded i -> i+1, millisecond resolution).
- w3: 200 executions a -> b -> c started concurrently; tasks/s = 600 / wall.
- w4: for_each 1 -> 10,000 instances -> 1 in one execution (docs/runtime-plans.md):
  the items are a workflow input; tasks/s = 10,002 / wall. The server runs with
  --max-for-each-items 10000 (the default cap is 1,000).
- w4s: the same width as a static plan (10,000 task nodes written out), for the
  memory comparison: an instance shares its for_each task's one plan node.
- idle: 10 connected Workers (spread over the worker processes), no work; server
  CPU% over 10 s from /proc/PID/stat utime+stime.

Wall = from just before StartExecution to the moment the client sees the terminal
state. Completion is observed through one WatchExecutions stream filtered by a
per-run workflow name and terminal states (one message per execution), so the
client does not load the server with a per-event stream. After each run the
server's VmHWM / VmRSS are read from /proc. Prints a Markdown table of medians
(min-max) over `--repeat` runs.

To compare commits, unpack each (`git archive COMMIT | tar -x -C DIR`) and pass
`--source DIR` once per commit: the runs alternate between them (old, new, old,
new, ...), so both see the same machine and load, and each row is labelled with
its directory's name.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from execplan.client import ExecutorClient
from execplan.v1 import execution_pb2

BIN = Path(sys.executable).parent
WORKER_SCRIPT = Path(__file__).resolve().parent / "_executor_worker.py"
TASK_TYPE = "bench.noop"
TERMINAL = (
    execution_pb2.EXECUTION_STATE_SUCCEEDED,
    execution_pb2.EXECUTION_STATE_FAILED,
    execution_pb2.EXECUTION_STATE_COMPENSATED,
    execution_pb2.EXECUTION_STATE_COMPENSATION_FAILED,
    execution_pb2.EXECUTION_STATE_CANCELLED,
    execution_pb2.EXECUTION_STATE_TERMINATED,
)
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- workflows -------------------------------------------------------------------------


def fan_out_yaml(name: str, width: int) -> str:
    lines = [f"name: {name}", 'version: "1"', "tasks:", "  - id: root", f"    type: {TASK_TYPE}"]
    for i in range(width):
        lines += [f"  - id: t{i}", f"    type: {TASK_TYPE}", "    depends_on: [root]"]
    deps = ", ".join(f"t{i}" for i in range(width))
    lines += ["  - id: sink", f"    type: {TASK_TYPE}", f"    depends_on: [{deps}]"]
    return "\n".join(lines) + "\n"


def for_each_yaml(name: str, width: int) -> str:
    items = ", ".join(str(i) for i in range(width))
    return (
        f'name: {name}\nversion: "1"\n'
        f"inputs: {{items: {{type: array, default: [{items}]}}}}\n"
        f"tasks:\n  - id: root\n    type: {TASK_TYPE}\n"
        f"  - id: fan\n    type: {TASK_TYPE}\n    depends_on: [root]\n"
        '    for_each: "${{ workflow.inputs.items }}"\n'
        '    inputs: {i: "${{ item }}"}\n'
        f"  - id: sink\n    type: {TASK_TYPE}\n    depends_on: [fan]\n"
    )


def chain_yaml(name: str, length: int) -> str:
    lines = [f"name: {name}", 'version: "1"', "tasks:", "  - id: s0", f"    type: {TASK_TYPE}"]
    for i in range(1, length):
        lines += [f"  - id: s{i}", f"    type: {TASK_TYPE}", f"    depends_on: [s{i - 1}]"]
    return "\n".join(lines) + "\n"


# -- processes -------------------------------------------------------------------------


@dataclass(slots=True)
class Cluster:
    server: subprocess.Popen[str]
    address: str
    log: Path
    workers: list[subprocess.Popen[str]] = field(default_factory=list)
    # --replicas N: the other executor replicas (same database) and every address.
    replicas: list[subprocess.Popen[str]] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)

    def cpu_seconds(self, pid: int | None = None) -> float:
        """CPU of one process; by default of every server replica together."""
        if pid is None:
            return sum(self.cpu_seconds(p.pid) for p in [self.server, *self.replicas])
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        # After the ")" the fields start at index 3 (state); utime is 14, stime 15.
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def memory_mib(self) -> tuple[float, float]:
        """VmHWM / VmRSS of the largest server replica."""
        values: dict[str, float] = {"VmHWM": 0.0, "VmRSS": 0.0}
        for server in [self.server, *self.replicas]:
            for line in Path(f"/proc/{server.pid}/status").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key in values:
                    values[key] = max(values[key], int(rest.split()[0]) / 1024)
        return values["VmHWM"], values["VmRSS"]


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_line(path: Path, process: subprocess.Popen[str], prefix: str) -> str:
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        for line in path.read_text().splitlines():
            if line.startswith(prefix):
                return line
        if process.poll() is not None:
            break
        time.sleep(0.02)
    raise RuntimeError(f"no {prefix!r} from {process.args!r}; see {path}")


@contextlib.contextmanager
def cluster(
    directory: Path,
    workers: int,
    slots: int,
    instances: int,
    source: Path | None,
    *,
    store: str = "sqlite",
    replicas: int = 1,
) -> Iterator[Cluster]:
    """A fresh server + db and `workers` worker processes; output goes to files."""
    stamp = time.monotonic_ns()
    db = str(directory / f"bench-{stamp}.db") if store == "sqlite" else store
    if store != "sqlite":
        # cluster() runs inside the bench's event loop: reset on a thread of its own.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, _reset_postgres(store)).result()
    env = dict(os.environ)
    if source is not None:
        # Server and SDK from another checkout (e.g. a `git archive` of a commit).
        paths = [str(source / "service"), str(source / "clients" / "python")]
        env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
        server_cmd = [
            sys.executable,
            "-c",
            "import sys; from execplan.cli import main; sys.exit(main())",
        ]
    else:
        server_cmd = [str(BIN / "execplan")]
    out = directory / f"server-{stamp}.out"
    procs: list[subprocess.Popen[str]] = []
    servers: list[subprocess.Popen[str]] = []
    for r in range(replicas):
        # Replicas forward to each other: each needs a real port to advertise.
        listen = "127.0.0.1:0" if replicas == 1 else f"127.0.0.1:{_free_port()}"
        with (directory / f"server-{stamp}-{r}.out" if r else out).open("w") as sink:
            servers.append(
                subprocess.Popen(
                    [*server_cmd, "serve", "--listen", listen, "--store", db]
                    + ([f"--replica-id=r{r}"] if replicas > 1 else [])
                    + ["--max-for-each-items", "0"],  # w4: 10,000 items
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    text=True,
                    cwd=directory,
                    env=env,
                )
            )
    server = servers[0]
    try:
        addresses = [
            _wait_for_line(
                directory / f"server-{stamp}-{r}.out" if r else out, s, "execplan listening on "
            ).split()[-1]
            for r, s in enumerate(servers)
        ]
        address = ",".join(addresses)  # workers connect to every replica
        for n in range(workers):
            wout = directory / f"worker-{stamp}-{n}.out"
            with wout.open("w") as sink:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        str(WORKER_SCRIPT),
                        address,
                        f"--slots={slots}",
                        f"--instances={instances}",
                    ],
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    text=True,
                    cwd=directory,
                    env=env,
                )
            procs.append(proc)
            _wait_for_line(wout, proc, "ready")
        yield Cluster(server, addresses[0], out, procs, servers[1:], addresses)
    finally:
        for proc in procs:
            _stop(proc)
        for server in servers:
            _stop(server)
        for path in directory.glob(f"*-{stamp}*"):
            path.unlink()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _reset_postgres(dsn: str) -> None:
    """A fresh (empty) schema for each run, like a fresh SQLite file."""
    import asyncpg  # noqa: PLC0415

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()


# -- runs ------------------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    wall_s: float
    tasks_per_s: float
    hwm_mib: float
    rss_mib: float
    server_cpu_s: float
    worker_cpu_s: float = 0.0
    step_ms: float = 0.0
    step_p50_ms: float = 0.0
    step_p99_ms: float = 0.0
    idle_cpu_pct: float = 0.0
    connected: int = 0


async def _run_executions(
    client: ExecutorClient | list[ExecutorClient], sources: list[str], name: str
) -> tuple[float, list[str]]:
    """Start every source concurrently; return the wall time until all are terminal.

    With several clients (one per replica) the starts go round-robin and each
    replica's WatchExecutions reports the executions it owns."""
    if isinstance(client, list):
        if len(client) > 1:
            return await _run_spread(client, sources, name)
        client = client[0]
    done: set[str] = set()
    all_done = asyncio.Event()
    subscribed = asyncio.Event()
    expected = len(sources)

    async def watcher() -> None:
        stream = client.watch_all(states=TERMINAL, workflow_name=name)
        subscribed.set()
        async for execution in stream:
            if execution.state != execution_pb2.EXECUTION_STATE_SUCCEEDED:
                raise RuntimeError(f"execution ended {execution.state}")
            done.add(execution.execution_id)
            if len(done) >= expected:
                all_done.set()
                return

    watch = asyncio.create_task(watcher())
    await subscribed.wait()
    await asyncio.sleep(0.3)  # let the server register the subscription
    began = time.perf_counter()
    responses = await asyncio.gather(*(client.start(source=s) for s in sources))
    await asyncio.wait(
        {watch, asyncio.create_task(all_done.wait())},
        timeout=600.0,
        return_when=asyncio.FIRST_COMPLETED,
    )
    if watch.done() and watch.exception() is not None:
        raise watch.exception()  # type: ignore[misc]
    if not all_done.is_set():
        raise RuntimeError("timed out")
    wall = time.perf_counter() - began
    watch.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watch
    return wall, [r.execution_id for r in responses]


async def _run_spread(
    clients: list[ExecutorClient], sources: list[str], name: str
) -> tuple[float, list[str]]:
    groups = [sources[i :: len(clients)] for i in range(len(clients))]
    results = await asyncio.gather(
        *(_run_executions(c, g, name) for c, g in zip(clients, groups, strict=True) if g)
    )
    # The groups start together (after each watcher's settle pause): the slowest one
    # is the wall time of the whole batch.
    return max(wall for wall, _ in results), [i for _, ids in results for i in ids]


async def warm_up(client: ExecutorClient, tag: str) -> None:
    # Makes sure every worker has connected and the engine's code paths are warm.
    await _run_executions(client, [fan_out_yaml(f"warm-{tag}", 64)], f"warm-{tag}")


async def step_times(client: ExecutorClient, execution_id: str) -> list[float]:
    stamps: list[float] = []
    async for event in client.history(execution_id):
        if event.HasField("task_succeeded"):
            stamps.append(event.recorded_at.ToNanoseconds() / 1e6)
    return [b - a for a, b in itertools.pairwise(stamps)]


async def workload(kind: str, c: Cluster, tag: str) -> Run:
    others = [ExecutorClient(a) for a in c.addresses[1:]]
    async with ExecutorClient(c.address) as client:
        for n, other in enumerate(others):
            await warm_up(other, f"{tag}-{n}")
        await warm_up(client, tag)
        cpu0 = c.cpu_seconds()
        wcpu0 = sum(c.cpu_seconds(w.pid) for w in c.workers)
        name = f"{kind}-{tag}"
        steps: list[float] = []
        if kind == "w1":
            wall, _ = await _run_executions(client, [fan_out_yaml(name, 1000)], name)
            tasks = 1002
        elif kind == "w2":
            wall, ids = await _run_executions(client, [chain_yaml(name, 200)], name)
            tasks = 200
            steps = sorted(await step_times(client, ids[0]))
        elif kind == "w3":
            wall, _ = await _run_executions([client, *others], [chain_yaml(name, 3)] * 200, name)
            tasks = 600
        elif kind == "w4":
            wall, _ = await _run_executions(client, [for_each_yaml(name, 10_000)], name)
            tasks = 10_002
        elif kind == "w4s":
            wall, _ = await _run_executions(client, [fan_out_yaml(name, 10_000)], name)
            tasks = 10_002
        else:
            raise ValueError(kind)
        cpu = c.cpu_seconds() - cpu0
        wcpu = sum(c.cpu_seconds(w.pid) for w in c.workers) - wcpu0
    for other in others:
        await other.close()
    hwm, rss = c.memory_mib()
    run = Run(wall, tasks / wall, hwm, rss, cpu, wcpu)
    if kind == "w2":
        run.step_ms = wall * 1e3 / 200
        run.step_p50_ms = steps[len(steps) // 2]
        run.step_p99_ms = steps[min(len(steps) - 1, int(len(steps) * 0.99))]
    return run


async def idle(c: Cluster, seconds: float) -> Run:
    await asyncio.sleep(2.0)  # connections settle
    cpu0, began = c.cpu_seconds(), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu, wall = c.cpu_seconds() - cpu0, time.perf_counter() - began
    hwm, rss = c.memory_mib()
    # The server logs "worker ID connected: ..." once per Worker stream.
    connected = sum(" connected: " in line for line in c.log.read_text().splitlines())
    return Run(wall, 0.0, hwm, rss, cpu, idle_cpu_pct=100 * cpu / wall, connected=connected)


# -- report ----------------------------------------------------------------------------


def summary(runs: list[Run], pick: Callable[[Run], float], fmt: str) -> str:
    values = [pick(r) for r in runs]
    med = statistics.median(values)
    if len(values) == 1:
        return format(med, fmt)
    return f"{med:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def report(kind: str, runs: list[Run]) -> list[str]:
    mem = (
        f"{summary(runs, lambda r: r.hwm_mib, '.0f')} / {summary(runs, lambda r: r.rss_mib, '.0f')}"
    )
    cpu = summary(runs, lambda r: r.server_cpu_s, ".2f")
    cpu += f" | {summary(runs, lambda r: r.worker_cpu_s, '.2f')}"
    if kind == "w1":
        rows = [
            (
                "W1 fan-out 1->1000->1",
                "tasks/s",
                summary(runs, lambda r: r.tasks_per_s, ",.0f"),
                ">= 2,000",
            )
        ]
    elif kind == "w2":
        rows = [
            (
                "W2 chain 200",
                "ms/step (wall/200)",
                summary(runs, lambda r: r.step_ms, ".2f"),
                "<= 2",
            ),
            (
                "W2 chain 200",
                "step p50 ms (history)",
                summary(runs, lambda r: r.step_p50_ms, ".1f"),
                "",
            ),
            (
                "W2 chain 200",
                "step p99 ms (history)",
                summary(runs, lambda r: r.step_p99_ms, ".1f"),
                "",
            ),
        ]
    elif kind in ("w4", "w4s"):
        label = "for_each 1->10,000->1" if kind == "w4" else "static fan-out 1->10,000->1"
        rows = [
            (
                f"{kind.upper()} {label}",
                "tasks/s",
                summary(runs, lambda r: r.tasks_per_s, ",.0f"),
                "",
            )
        ]
    elif kind == "w3":
        rows = [
            (
                "W3 200 x (a->b->c)",
                "tasks/s",
                summary(runs, lambda r: r.tasks_per_s, ",.0f"),
                ">= 1,500",
            )
        ]
    else:
        rows = [
            (
                f"Idle, {min(r.connected for r in runs)} Workers connected",
                f"server CPU % ({CLK_TCK} ticks/s)",
                summary(runs, lambda r: r.idle_cpu_pct, ".2f"),
                "< 1",
            )
        ]
    return [f"| {w} | {m} | {v} | {t} | {mem} | {cpu} |" for w, m, v, t in rows]


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        for line in subprocess.run(
            ["lscpu"], check=False, capture_output=True, text=True
        ).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    return f"{model}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


async def one_run(
    args: argparse.Namespace, kind: str, store: str, source: Path | None, *, tmp: Path, i: int
) -> Run:
    if kind == "idle":
        procs = min(args.workers, args.idle_workers)
        per = -(-args.idle_workers // procs)
        with cluster(tmp, procs, args.slots, per, source, store=store) as c:
            return await idle(c, args.idle_seconds)
    with cluster(
        tmp,
        args.workers,
        args.slots,
        args.instances,
        source,
        store=store,
        replicas=args.replicas if store != "sqlite" else 1,
    ) as c:
        return await workload(kind, c, f"{i}-{time.monotonic_ns()}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--workload", choices=["w1", "w2", "w3", "w4", "w4s", "idle", "all"], default="all"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--slots", type=int, default=64, help="slots per Worker")
    parser.add_argument("--instances", type=int, default=1, help="Workers per process")
    parser.add_argument("--idle-workers", type=int, default=10, help="Workers for idle")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--dir", type=Path, default=None, help="where the db goes")
    parser.add_argument("--json", type=Path, default=None, help="write raw runs here")
    parser.add_argument(
        "--source",
        type=Path,
        action="append",
        default=None,
        help="run server + worker SDK from this checkout (e.g. `git archive HEAD` unpacked);"
        " repeat to compare checkouts, run alternately",
    )
    parser.add_argument(
        "--store",
        action="append",
        default=None,
        help="'sqlite' (fresh file per run, the default) or a postgresql:// URL whose"
        " public schema is DROPPED and recreated before each run; repeat to compare",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="executor replicas on the (PostgreSQL) store; workers connect to all;"
        " W3 starts round-robin, W1's one execution lives on one replica",
    )
    args = parser.parse_args()
    stores: list[str] = args.store or ["sqlite"]
    kinds = ["w1", "w2", "w3", "idle"] if args.workload == "all" else [args.workload]
    print(f"# {machine()}")
    print(
        f"# workers={args.workers} processes x {args.instances} Worker(s) x {args.slots} slots,"
        f" repeat={args.repeat}"
    )
    print(
        "| workload | metric | median (min-max) | target | server VmHWM / VmRSS MiB"
        " | server CPU s | workers CPU s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    print(f"# load average before: {os.getloadavg()}")
    raw: dict[str, list[dict[str, float]]] = {}
    sources: list[Path | None] = args.source or [None]
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for kind, store in itertools.product(kinds, stores):
            runs: dict[Path | None, list[Run]] = {source: [] for source in sources}
            for i in range(args.repeat):
                for source in sources:  # alternate, so each sees the same load
                    run = await one_run(args, kind, store, source, tmp=Path(tmp), i=i)
                    runs[source].append(run)
            for source, done in runs.items():
                labels = []
                if len(stores) > 1:
                    labels.append("postgresql" if store.startswith("postgres") else store)
                if len(sources) > 1 and source is not None:
                    labels.append(source.name)
                key = "-".join([kind, *labels])
                raw[key] = [asdict(r) for r in done]
                prefix = "".join(f"[{label}] " for label in labels)
                for row in report(kind, done):
                    print(row.replace("| ", f"| {prefix}", 1), flush=True)
    print(f"# load average after: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    asyncio.run(main())
