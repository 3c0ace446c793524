"""How fast SDK workers come back after the server restarts (same port, same database).

    .venv/bin/python bench/reconnect_bench.py [--restarts 100] [--signal kill|term|both]
        [--sdk python|node|both] [--workers 2] [--json FILE]

One `execplan serve` (SQLite in a temp dir, `--log-level info`) and `--workers`
worker processes per SDK (`execplan worker`-style Python processes running the SDK's
`Worker.run()`, and Node processes running `new Worker(...).run()` from
clients/node/dist, which must be built). Then `--restarts` times: stop the server
(SIGKILL, SIGTERM = graceful, or alternating with `both`), start it again on the
same port and database, and time from the moment it prints `execplan listening`
to each worker's `worker ID connected` log line. The executor keeps a
disconnected worker's leases (and, after its own restart, its attempts) for a
5 s grace: a worker not back by then has its running work re-dispatched.

Prints, per SDK and signal, the distribution of re-registration times (min, p50,
p90, p99, max) and how many were later than the grace or never came back within
the server's lifetime (the next restart happens once every worker is back or 30 s
passed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRACE_S = 5.0
GIVE_UP_S = 30.0
NODE_DIST = ROOT / "clients" / "node" / "dist" / "index.js"

PY_WORKER = """
import sys
from execplan.worker import Worker

worker = Worker(sys.argv[1], worker_id=sys.argv[2])

@worker.task("bench.noop")
async def noop(inputs):
    return {}

worker.run()
"""

NODE_WORKER = """
import {{ Worker }} from {dist};
const quiet = {{ info() {{}}, warn() {{}} }};
const worker = new Worker({{ address: process.argv[2], workerId: process.argv[3], logger: quiet }});
worker.task("bench.noop", async () => ({{}}));
await worker.run();
"""


class Server:
    def __init__(self, db: Path) -> None:
        self.db = db
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.up_at = 0.0
        self.seen: dict[str, list[float]] = {}
        self._cond = threading.Condition()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [sys.executable, "-m", "execplan.cli", "serve", "--listen",
                f"127.0.0.1:{self.port}", "--db", str(self.db), "--grace", "2",
                "--log-level", "info"]  # fmt: skip
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("execplan listening on "):
            raise SystemExit(f"server did not start: {line!r}")
        self.up_at = time.monotonic()
        self.port = int(line.rsplit(":", 1)[1])
        self.proc = proc
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if " connected: " in line and "worker " in line:
                worker_id = line.split("worker ", 1)[1].split(" connected", 1)[0]
                with self._cond:
                    self.seen.setdefault(worker_id, []).append(time.monotonic())
                    self._cond.notify_all()

    def stop(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def wait_all(self, ids: list[str], since: float, within: float) -> dict[str, float | None]:
        """Seconds from `since` to each worker's first registration after it."""
        deadline = time.monotonic() + within
        with self._cond:
            while True:
                got = {w: next((t - since for t in self.seen.get(w, []) if t >= since), None)
                       for w in ids}  # fmt: skip
                left = deadline - time.monotonic()
                if all(v is not None for v in got.values()) or left <= 0:
                    return got
                self._cond.wait(left)


@dataclass
class Result:
    times: list[float] = field(default_factory=list)
    missed: int = 0  # not back within GIVE_UP_S (the server's lifetime here)


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


Procs = list[subprocess.Popen[bytes]]


def spawn_workers(server: Server, sdk: str, n: int, tmp: Path) -> tuple[list[str], Procs]:
    ids: list[str] = []
    procs: Procs = []
    if sdk == "python":
        script = tmp / "worker.py"
        script.write_text(textwrap.dedent(PY_WORKER))
        cmd = [sys.executable, str(script)]
    else:
        if not NODE_DIST.exists():
            raise SystemExit("clients/node/dist is missing: npm run build --prefix clients/node")
        script = tmp / "worker.mjs"
        script.write_text(NODE_WORKER.format(dist=json.dumps(NODE_DIST.as_uri())))
        cmd = ["node", str(script)]
    for i in range(n):
        worker_id = f"{sdk}-{i}"
        ids.append(worker_id)
        quiet = subprocess.DEVNULL
        procs.append(
            subprocess.Popen([*cmd, server.address, worker_id], stdout=quiet, stderr=quiet)
        )
    return ids, procs


def measure(args: argparse.Namespace, tmp: Path) -> dict[tuple[str, str], Result]:
    sdks = ["python", "node"] if args.sdk == "both" else [args.sdk]
    sigs = {"kill": [signal.SIGKILL], "term": [signal.SIGTERM]}.get(
        args.signal, [signal.SIGKILL, signal.SIGTERM]
    )
    results: dict[tuple[str, str], Result] = {}
    server = Server(tmp / "execplan.db")
    server.start()
    workers: dict[str, list[str]] = {}
    procs: Procs = []
    try:
        for sdk in sdks:
            ids, started = spawn_workers(server, sdk, args.workers, tmp)
            workers[sdk] = ids
            procs += started
        everyone = [w for ids in workers.values() for w in ids]
        first = server.wait_all(everyone, 0.0, GIVE_UP_S)
        if any(v is None for v in first.values()):
            raise SystemExit(f"workers did not register at start: {first}")
        for n in range(args.restarts):
            sig = sigs[n % len(sigs)]
            server.stop(sig)
            server.start()
            got = server.wait_all(everyone, server.up_at, GIVE_UP_S)
            for sdk, ids in workers.items():
                result = results.setdefault((sdk, sig.name), Result())
                for worker_id in ids:
                    back = got[worker_id]
                    if back is None:
                        result.missed += 1
                    else:
                        result.times.append(back)
            shown = " ".join(f"{w}={_seconds(got[w])}" for w in everyone)
            print(f"restart {n + 1}/{args.restarts} ({sig.name}): {shown}", flush=True)
    finally:
        for proc in procs:
            proc.kill()
        server.stop(signal.SIGKILL)
    return results


def report(results: dict[tuple[str, str], Result]) -> list[dict[str, object]]:
    print("\n| SDK | restart | n | min s | p50 s | p90 s | p99 s | max s | > 5 s | not back |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    table: list[dict[str, object]] = []
    for (sdk, sig_name), result in sorted(results.items()):
        t = result.times or [float("nan")]
        stats = [min(t), statistics.median(t), percentile(t, 90), percentile(t, 99), max(t)]
        late = sum(x > GRACE_S for x in result.times)
        n = len(result.times) + result.missed
        cells = " | ".join(f"{v:.2f}" for v in stats)
        print(f"| {sdk} | {sig_name} | {n} | {cells} | {late} | {result.missed} |")
        keys = ("min", "p50", "p90", "p99", "max")
        table.append({"sdk": sdk, "signal": sig_name, "n": n, **dict(zip(keys, stats, strict=True)),
                      "over_grace": late, "missed": result.missed})  # fmt: skip
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--restarts", type=int, default=100)
    parser.add_argument("--signal", choices=("kill", "term", "both"), default="both")
    parser.add_argument("--sdk", choices=("python", "node", "both"), default="both")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per SDK")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = measure(args, Path(tmp))
    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    table = report(results)
    if args.json:
        args.json.write_text(json.dumps({"rows": table, "load": load}, indent=2))


if __name__ == "__main__":
    main()
