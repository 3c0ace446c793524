"""The decision core on a 10,000-item for_each, without a server: how long the
machine takes to expand it and run every instance through (dispatch, ack, succeed),
and how much memory the execution's state holds, against the same width written
out as a static plan (10,000 task nodes).

    .venv/bin/python bench/runtime_plans_bench.py [--items 10000] [--repeat 3]

An instance is a TaskRun plus a `Grown` that points at its for_each task's one
NodeView (executor/state.py): the state grows by the instances' runs and items,
not by 10,000 copies of the plan node. Memory is tracemalloc's count of the bytes
allocated while the plan is decoded and the execution started, expanded and run
(compiling excluded),
still held at the end; time is wall time of those steps (one process, no I/O).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable

from execplan.executor.decide.fencing import Claim
from execplan.executor.decide.inputs import resolve_inputs
from execplan.executor.decide.machine import Machine
from execplan.executor.plan_view import PlanView, decode_plan
from execplan.executor.state import ExecutionState, new_state
from execplan.planner import compile_source
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import plan_pb2
from execplan.wire.plan_codec import encode_plan


def for_each_source(items: int) -> str:
    listed = ", ".join(map(str, range(items)))
    return (
        f"name: fe\ninputs: {{items: {{type: array, default: [{listed}]}}}}\ntasks:\n"
        "  - id: fan\n    type: t.work\n"
        '    for_each: "${{ workflow.inputs.items }}"\n'
        '    inputs: {i: "${{ item }}"}\n'
    )


def static_source(items: int) -> str:
    lines = ["name: st", "tasks:"]
    for i in range(items):
        lines += [f"  - id: t{i}", "    type: t.work", f"    inputs: {{i: {i}}}"]
    return "\n".join(lines) + "\n"


def compile_plan(source: str) -> plan_pb2.ExecutionPlan:
    result = compile_source(source)
    assert result.plan is not None, list(result.diagnostics)
    return encode_plan(result.plan)


def run(plan: PlanView) -> ExecutionState:
    """Start, then dispatch, acknowledge and succeed every queued task until done."""
    state = new_state("bench", plan)
    now = 1_000_000
    Machine(state, now).start(resolve_inputs(plan, {}), "r", "", {})
    while state.state == ex.EXECUTION_STATE_RUNNING:
        queued = [t.index for t in state.tasks if t.state == ex.TASK_STATE_QUEUED]
        assert queued, "nothing to run"
        for index in queued:
            machine = Machine(state, now)
            machine.dispatch(index, "w1", "")
            task = state.tasks[index]
            claim = Claim(task.phase, task.attempt, task.epoch)
            task_id = state.task_id(index)
            machine.acknowledged(machine.check_token(task_id, claim))
            machine.succeeded(machine.check_token(task_id, claim), {"ok": index})
    assert state.state == ex.EXECUTION_STATE_SUCCEEDED, state.state
    return state


def measure(plan: plan_pb2.ExecutionPlan) -> tuple[float, float]:
    gc.collect()
    tracemalloc.start()
    began = time.perf_counter()
    state = run(decode_plan(plan))  # the executor holds the decoded plan, too
    wall = time.perf_counter() - began
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert state.tasks
    return wall, held / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    shapes: dict[str, Callable[[int], str]] = {
        "for_each": for_each_source,
        "static plan": static_source,
    }
    print(f"# {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load {os.getloadavg()}")
    print("| shape | tasks | plan nodes | wall s (tracemalloc on) | state held MiB |")
    print("|---|---:|---:|---:|---:|")
    for name, source in shapes.items():
        plan = compile_plan(source(args.items))
        runs = [measure(plan) for _ in range(args.repeat)]
        wall = statistics.median(r[0] for r in runs)
        held = statistics.median(r[1] for r in runs)
        tasks = args.items + (1 if name == "for_each" else 0)
        print(f"| {name} | {tasks:,} | {len(plan.nodes):,} | {wall:.2f} | {held:.1f} |", flush=True)


if __name__ == "__main__":
    main()
