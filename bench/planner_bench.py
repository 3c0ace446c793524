"""Planner benchmark: JSON text -> compiled plan -> serialized ExecutionPlan bytes.

    .venv/bin/python bench/planner_bench.py                 # 1k, 10k, 100k tasks
    .venv/bin/python bench/planner_bench.py --sizes 10000 --runs 5

Workflows are layered random DAGs (seeded, so every run compiles the same documents):
layers of ~sqrt(n)*2 tasks, each non-root task depends on 3 random tasks of the
previous layer. Two shapes: `plain` (id, type, depends_on only) and `inputs` (every
task also has a literal input and a shared `${{ workflow.inputs.size }}` expression,
and every 10th task reads its first upstream's output through a distinct expression:
a DATA edge and a CEL parse of its own). Each size runs in its own
subprocess so ru_maxrss is that size's peak; the reported time is the median of
`--runs` end-to-end runs, wall clock and CPU time of the process (the CPU column is
steadier on a shared machine) (json text -> compile_source -> encode_plan ->
SerializeToString(deterministic=True)), and the phase split is from the last run.

`--tools N` measures what users run on an N-task workflow instead (`inputs` shape):
`execplan plan FILE --format json|text|dot|mermaid` and `execplan validate FILE` as
subprocesses writing to /dev/null (wall, CPU and peak RSS of the process, from
wait4), and CompilePlan through a fresh `execplan serve` (client wall time, the
server's CPU for the call and its peak RSS, VmHWM, beside its RSS before the call).

To compare commits, unpack each (`git archive COMMIT | tar -x -C DIR`) and pass
`--source DIR` once per commit: each case then runs once per source, alternating,
so both see the same machine and load; rows are labelled with the directory's name.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_workflow(n: int, seed: int = 7, *, inputs: bool = True) -> str:
    rng = random.Random(seed)
    width = max(4, int(n**0.5) * 2)
    tasks: list[dict[str, object]] = []
    prev: list[str] = []
    layer: list[str] = []
    for i in range(n):
        tid = f"t{i}"
        task: dict[str, object] = {"id": tid, "type": f"work.step{i % 10}"}
        if inputs:
            task["inputs"] = {"n": i, "size": "${{ workflow.inputs.size }}"}
        if prev:
            deps = rng.sample(prev, min(3, len(prev)))
            task["depends_on"] = deps
            if inputs and i % 10 == 0:
                task["inputs"] = {"n": i, "x": f"${{{{ tasks.{deps[0]}.output.value + {i} }}}}"}
        tasks.append(task)
        layer.append(tid)
        if len(layer) == width:
            prev, layer = layer, []
    doc = {
        "name": f"bench-{n}",
        "inputs": {"size": {"type": "integer", "default": n}},
        "defaults": {"retry": {"max_attempts": 3}, "timeouts": {"start_to_close": "60s"}},
        "tasks": tasks,
    }
    return json.dumps(doc)


def run_one(n: int, runs: int, shape: str) -> dict[str, object]:
    from execplan.planner import compile_source  # noqa: PLC0415 (from --source, if given)
    from execplan.wire.plan_codec import encode_plan  # noqa: PLC0415

    text = make_workflow(n, inputs=shape == "inputs")
    times: list[float] = []
    cpu: list[float] = []
    compile_cpu: list[float] = []
    phases: dict[str, float] = {}
    size = 0
    for _ in range(runs):
        c0 = time.process_time()
        t0 = time.perf_counter()
        result = compile_source(text, "json")
        t1 = time.perf_counter()
        compile_cpu.append(time.process_time() - c0)
        assert result.plan is not None, result.diagnostics[:5]
        msg = encode_plan(result.plan)
        t2 = time.perf_counter()
        data = msg.SerializeToString(deterministic=True)
        t3 = time.perf_counter()
        times.append(t3 - t0)
        cpu.append(time.process_time() - c0)
        phases = {"compile": t1 - t0, "encode": t2 - t1, "serialize": t3 - t2}
        size = len(data)
        # Free this run's plan now: otherwise the next run pays for it when it
        # rebinds the names (~0.1 s at 100k), which is not part of compiling.
        del result, msg, data
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "shape": shape,
        "tasks": n,
        "text_bytes": len(text),
        "plan_bytes": size,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "cpu_median_s": statistics.median(cpu),
        "compile_cpu_median_s": statistics.median(compile_cpu),
        "phases_s": phases,
        "peak_rss_mib": rss_kib / 1024,
    }


# -- the tools on one big workflow: CLI formats, validate, the gRPC service ------------

CLI = ["-c", "import sys; from execplan.cli import main; sys.exit(main())"]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _env(source: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if source is not None:
        paths = [str(source / "service"), str(source / "clients" / "python")]
        env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    return env


def run_cli(args: list[str], source: Path | None) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MiB) of `execplan ARGS` writing to /dev/null."""
    with open(os.devnull, "w") as sink:
        began = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, *CLI, *args], stdout=sink, stderr=subprocess.PIPE, env=_env(source)
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"execplan {' '.join(args)} exited {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _proc_hwm(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _compile_rpc(address: str, texts: list[str]) -> list[float]:
    from execplan.client import ExecutorClient  # noqa: PLC0415

    walls = []
    async with ExecutorClient(address) as client:
        for text in texts:
            began = time.perf_counter()
            plan = await client.compile(text)
            walls.append(time.perf_counter() - began)
            assert plan.nodes, "an empty plan"
    return walls


def run_grpc(path: Path, source: Path | None) -> tuple[float, float, float, float]:
    """CompilePlan of the file through a fresh `execplan serve`: (wall s, server CPU s,
    server peak RSS MiB, the server's RSS before it MiB)."""
    import asyncio  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "serve.out"
        serve = [sys.executable, *CLI, "serve", "--listen", "127.0.0.1:0", "--no-ui"]
        with log.open("w") as sink:
            server = subprocess.Popen(
                [*serve, "--store", str(Path(tmp) / "bench.db")],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=_env(source),
                cwd=tmp,
            )
        try:
            address = ""
            deadline = time.monotonic() + 60
            while not address and time.monotonic() < deadline and server.poll() is None:
                for line in log.read_text().splitlines():
                    if line.startswith("execplan listening on "):
                        address = line.split()[-1]
                time.sleep(0.05)
            if not address:
                raise RuntimeError(f"execplan serve did not start; see {log.read_text()}")
            # Warm up the planner's code paths with a small workflow first.
            asyncio.run(_compile_rpc(address, [make_workflow(100)]))
            idle = _proc_hwm(server.pid)
            cpu0 = _proc_cpu(server.pid)
            (wall,) = asyncio.run(_compile_rpc(address, [path.read_text()]))
            return wall, _proc_cpu(server.pid) - cpu0, _proc_hwm(server.pid), idle
        finally:
            server.terminate()
            server.wait(30)


def tools(n: int, runs: int, sources: list[Path | None], only: str = "") -> None:
    """The planner's tools on one `inputs`-shape workflow of n tasks, each run
    alternating between the sources (medians over `runs`); `only`: the cases whose
    name contains one of its comma-separated words (e.g. "json,validate")."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"bench-{n}.json"
        path.write_text(make_workflow(n, inputs=True))
        cases: list[tuple[str, list[str] | None]] = [
            *((f"plan --format {fmt}", ["plan", str(path), "--format", fmt]) for fmt in
              ("json", "text", "dot", "mermaid")),
            ("validate", ["validate", str(path)]),
            ("gRPC CompilePlan", None),
        ]  # fmt: skip
        if only:
            words = only.split(",")
            cases = [c for c in cases if any(w in c[0] for w in words)]
        label = max((len(s.name) for s in sources if s is not None), default=6)
        print(f"# {n:,} tasks, shape inputs, {path.stat().st_size / 1e6:.1f} MB of JSON")
        print(f"{'source':>{label}} {'what':<22} {'wall s':>7} {'cpu s':>7} {'peak RSS MiB':>13}")
        for what, cli in cases:
            results: dict[Path | None, list[tuple[float, ...]]] = {s: [] for s in sources}
            for _ in range(runs):
                for source in sources:
                    row = run_cli(cli, source) if cli else run_grpc(path, source)
                    results[source].append(row)
            for source, rows in results.items():
                name = source.name if source is not None else "-"
                wall = statistics.median(r[0] for r in rows)
                cpu = statistics.median(r[1] for r in rows)
                rss = statistics.median(r[2] for r in rows)
                extra = f" (idle {statistics.median(r[3] for r in rows):.0f})" if not cli else ""
                print(f"{name:>{label}} {what:<22} {wall:>7.2f} {cpu:>7.2f} {rss:>13.0f}{extra}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--shapes", default="plain,inputs")
    ap.add_argument("--shape", default="inputs", help=argparse.SUPPRESS)
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--source", type=Path, action="append", help="a checkout to compare")
    ap.add_argument(
        "--tools",
        type=int,
        default=0,
        metavar="N",
        help="instead: the CLI (plan in each format, validate) and the gRPC CompilePlan"
        " of an N-task workflow (wall, CPU, peak RSS of the process doing the work)",
    )
    ap.add_argument("--only", default="", help="with --tools: e.g. json,validate,gRPC")
    args = ap.parse_args()
    if args.tools:
        tools(args.tools, args.runs, args.source or [None], args.only)
        return
    if args.child:
        print(json.dumps(run_one(args.child, args.runs, args.shape)))
        return
    sources: list[Path | None] = args.source or [None]
    label = max((len(s.name) for s in sources if s is not None), default=0)
    print(
        f"{'source':>{label}} "
        * bool(label)
        + f"{'shape':>6} {'tasks':>7} {'median s':>9} {'min s':>7} {'cpu s':>7} "
        f"{'compile':>8} {'comp cpu':>8} {'encode':>7} "
        f"{'serial':>7} {'plan MB':>8} {'RSS MiB':>8}"
    )
    cases = [(shape, int(n)) for shape in args.shapes.split(",") for n in args.sizes.split(",")]
    for shape, n in cases:
        for source in sources:
            env = dict(os.environ)
            if source is not None:
                paths = [str(source / "service"), str(source / "clients" / "python")]
                env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    str(n),
                    "--runs",
                    str(args.runs),
                    "--shape",
                    shape,
                ],
                check=True,
                capture_output=True,
                text=True,
                env=env,
            ).stdout
            r = json.loads(out)
            ph = r["phases_s"]
            name = f"{source.name:>{label}} " if source is not None and label else ""
            print(
                f"{name}{r['shape']:>6} {r['tasks']:>7} {r['median_s']:>9.3f} "
                f"{r['min_s']:>7.3f} {r['cpu_median_s']:>7.3f} "
                f"{ph['compile']:>8.3f} {r['compile_cpu_median_s']:>8.3f} "
                f"{ph['encode']:>7.3f} {ph['serialize']:>7.3f} {r['plan_bytes'] / 1e6:>8.1f} "
                f"{r['peak_rss_mib']:>8.0f}"
            )


if __name__ == "__main__":
    main()
