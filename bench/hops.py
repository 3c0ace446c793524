"""Where a W2 chain step's time goes, hop by hop, from hop timestamps (execplan/hops.py).

    EXECPLAN_HOPS=/tmp/hops.txt .venv/bin/python bench/executor_bench.py --workload w2 --repeat 1
    .venv/bin/python bench/hops.py /tmp/hops.txt [--steps 199] [--slow-ms 4]

The server and the Python workers of the run append `<monotonic ns> <pid> <label>`
lines to the file (one clock for every process of the machine). A chain has one
task in flight, so the lines of the last `--steps` steps (a chain of N tasks has
N - 1 dispatch-to-dispatch steps: W2 199; more would reach back into the warm-up),
in time order, are one timeline: each step runs from the server handing a dispatch
to the worker's outbox (`server.send`) to the next one, through the hops below.
Prints each hop's median, mean and 90th percentile in microseconds, and what the
steps slower than `--slow-ms` spent their time on. Delete the file between runs
(lines are appended).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import statistics
from pathlib import Path

# A chain step in order; the first occurrence of each after the previous one.
HOPS = (
    ("server.write", "server: outbox -> stream handler resumed (the rest of the round's acting)"),
    ("worker.read", "gRPC server -> worker stream thread"),
    ("worker.handler", "worker: dispatch -> handler running (thread hop to the user loop)"),
    ("worker.result", "worker: handler -> result on the stream thread (hop back)"),
    ("worker.write", "worker: result -> writer (ack + result in one message)"),
    ("server.read", "gRPC worker -> server stream reader"),
    ("server.submit", "server: message -> input submitted"),
    ("pump.wake", "server: inbox -> pump round"),
    ("pump.commit", "pump: decide + dispatch"),
    ("pump.committed", "pump: group commit (store, fsync)"),
    ("server.send", "pump: acting -> dispatch in the outbox"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("file", type=Path)
    parser.add_argument("--steps", type=int, default=199)
    parser.add_argument("--slow-ms", type=float, default=4.0)
    args = parser.parse_args()
    marks = sorted(
        (int(ns), label)
        for ns, _pid, label in (line.split() for line in args.file.read_text().splitlines())
    )
    sends = [i for i, (_, label) in enumerate(marks) if label == "server.send"]
    sends = sends[-(args.steps + 1) :]
    spans: dict[str, list[float]] = {label: [] for label, _ in HOPS}
    steps: list[float] = []
    slow: dict[str, float] = collections.defaultdict(float)
    slow_steps = 0
    for start, end in itertools.pairwise(sends):
        at, i, times = marks[start][0], start + 1, []
        for label, _ in HOPS:
            while i <= end and marks[i][1] != label:
                i += 1
            if i > end:
                break
            times.append(marks[i][0])
            i += 1
        if len(times) != len(HOPS):
            continue  # not a plain chain step (the first, the last, a retry)
        step = (marks[end][0] - at) / 1000
        steps.append(step)
        previous = at
        for (label, _), t in zip(HOPS, times, strict=True):
            spans[label].append((t - previous) / 1000)
            if step >= args.slow_ms * 1000:
                slow[label] += (t - previous) / 1000
            previous = t
        slow_steps += step >= args.slow_ms * 1000
    if not steps:
        raise SystemExit("no chain steps found (a W2 run with EXECPLAN_HOPS set?)")
    print(
        f"{len(steps)} steps: median {statistics.median(steps):.0f} us, mean "
        f"{statistics.mean(steps):.0f} us"
    )
    print("| hop | median us | mean us | p90 us |")
    print("|---|---:|---:|---:|")
    for label, what in HOPS:
        values = sorted(spans[label])
        p90 = values[int(len(values) * 0.9)]
        print(
            f"| {what} | {statistics.median(values):.0f} | {statistics.mean(values):.0f} | "
            f"{p90:.0f} |"
        )
    if slow_steps:
        print(f"\n{slow_steps} steps >= {args.slow_ms} ms, mean per hop:")
        for label, total in sorted(slow.items(), key=lambda kv: -kv[1])[:4]:
            print(f"  {total / slow_steps:7.0f} us  {dict(HOPS)[label]}")


if __name__ == "__main__":
    main()
