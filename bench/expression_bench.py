"""What evaluating a plan's expressions costs the executor's decision loop.

    .venv/bin/python bench/expression_bench.py [--tasks 2000] [--repeat 7] [--source DIR]

Process CPU time (the box is usually shared), the median over `--repeat` runs.

Drives the Machine directly (no server, no I/O), through its public methods only, so
`--source` (another checkout, e.g. `git archive` of main into DIR) measures the same
thing on older code:

- `when`: `start()` of N root tasks, each with a `when` over workflow inputs, minus
  the same without the `when`: microseconds per evaluation on the inline path
  (`start_us_per_task`: the whole start, queuing included);
- `inputs`: `dispatch()` of N queued tasks whose inputs hold an expression and a
  template reading an upstream output, minus the same with literal inputs;
- `chain`: a chain of N tasks without expressions, per step dispatch + ack + result:
  the decisions of W2 (bench/executor_bench.py) without the I/O.

Without `--source` it also measures the sandbox (this checkout only): the round trip
of one small comprehension, and the time until a poison `when` (three nested `.all()`
over 1,000 elements) is reported over its budget.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _clock() -> float:
    # CPU time of this process: the box is shared, and waiting for a CPU is not cost.
    return time.process_time()


def _plan(tasks: int, *, when: bool, inputs: bool, after_up: bool) -> Any:
    from execplan.executor.plan_view import decode_plan  # noqa: PLC0415
    from execplan.planner import compile_source  # noqa: PLC0415
    from execplan.wire.plan_codec import encode_plan  # noqa: PLC0415

    lines = [
        "name: bench",
        "inputs: {n: {type: integer, default: 3}, who: {type: string, default: ada}}",
        "tasks:",
        "  - {id: up, type: t}",
    ]
    for i in range(tasks):
        line = f"  - {{id: t{i}, type: t"
        if when:
            line += f', when: "workflow.inputs.n > {i % 3}"'
        if after_up:
            line += ", depends_on: [up]"
        if inputs:
            line += (
                ', inputs: {v: "${{ tasks.up.output.v + 1 }}",'
                ' note: "hi ${{ workflow.inputs.who }}", k: 1}'
            )
        lines.append(line + "}")
    result = compile_source("\n".join(lines) + "\n")
    assert result.plan is not None, result.diagnostics
    return decode_plan(encode_plan(result.plan))


def _start_us(tasks: int, when: bool) -> float:
    from execplan.executor.decide.machine import Machine  # noqa: PLC0415
    from execplan.executor.state import new_state  # noqa: PLC0415

    plan = _plan(tasks, when=when, inputs=False, after_up=False)
    began = _clock()
    Machine(new_state("e-1", plan), 1_000).start({"n": 3, "who": "ada"}, "", "", {})
    return (_clock() - began) * 1e6


def _dispatch_us(tasks: int, inputs: bool) -> float:
    from execplan.executor.decide.machine import Machine  # noqa: PLC0415
    from execplan.executor.state import new_state  # noqa: PLC0415

    plan = _plan(tasks, when=False, inputs=inputs, after_up=True)
    state = new_state("e-1", plan)
    machine = Machine(state, 1_000)
    machine.start({"n": 3, "who": "ada"}, "", "", {})
    machine.dispatch(0, "w")
    machine.succeeded(state.tasks[0], {"v": 41})
    began = _clock()
    for index in range(1, tasks + 1):
        machine.dispatch(index, "w")
    return (_clock() - began) * 1e6


def _chain_us(steps: int) -> float:
    """A chain without expressions through the Machine: start, then per step dispatch,
    ack and result (what the engine decides per task in W2, minus I/O)."""
    from execplan.executor.decide.machine import Machine  # noqa: PLC0415
    from execplan.executor.plan_view import decode_plan  # noqa: PLC0415
    from execplan.executor.state import new_state  # noqa: PLC0415
    from execplan.planner import compile_source  # noqa: PLC0415
    from execplan.wire.plan_codec import encode_plan  # noqa: PLC0415

    lines = ["name: chain", "tasks:", "  - {id: s0, type: t}"]
    lines += [f"  - {{id: s{i}, type: t, depends_on: [s{i - 1}]}}" for i in range(1, steps)]
    result = compile_source("\n".join(lines) + "\n")
    assert result.plan is not None
    plan = decode_plan(encode_plan(result.plan))
    state = new_state("e-1", plan)
    began = _clock()
    Machine(state, 1_000).start({}, "", "", {})
    for index in range(steps):
        Machine(state, 1_000).dispatch(index, "w")
        task = state.tasks[index]
        Machine(state, 1_000).acknowledged(task)
        Machine(state, 1_000).succeeded(task, {})
    return (_clock() - began) * 1e6 / steps


def _sandbox() -> dict[str, float]:
    from execplan.executor.expressions.sandbox import ExpressionBudget, Sandbox  # noqa: PLC0415

    box = Sandbox(ExpressionBudget())
    try:
        box.evaluate("1", {})  # start the process
        rounds = []
        for _ in range(200):
            began = time.perf_counter()
            box.evaluate("xs.map(x, x * 2)", {"xs": [1, 2, 3]})
            rounds.append(time.perf_counter() - began)
        began = time.perf_counter()
        outcome = box.evaluate(
            "xs.all(i, xs.all(j, xs.all(k, i + j + k >= 0)))", {"xs": list(range(1000))}
        )
        assert outcome.exceeded, outcome
        poison = time.perf_counter() - began
    finally:
        box.close()
    return {"sandbox_round_trip_us": statistics.median(rounds) * 1e6, "poison_s": poison}


def measure(tasks: int, repeat: int, sandbox: bool) -> dict[str, float]:
    when, no_when, inputs, literal, chain = [], [], [], [], []
    for _ in range(repeat):
        chain.append(_chain_us(tasks))
        no_when.append(_start_us(tasks, False))
        when.append(_start_us(tasks, True))
        literal.append(_dispatch_us(tasks, False))
        inputs.append(_dispatch_us(tasks, True))
    result = {
        "when_us_per_evaluation": (statistics.median(when) - statistics.median(no_when)) / tasks,
        "inputs_us_per_dispatch": (statistics.median(inputs) - statistics.median(literal)) / tasks,
        "start_us_per_task": statistics.median(when) / tasks,
        "dispatch_us_per_task": statistics.median(inputs) / tasks,
        "chain_us_per_step": statistics.median(chain),
    }
    if sandbox:
        result.update(_sandbox())
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--source", type=Path, help="measure another checkout instead")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.source is not None:
        env = dict(os.environ)
        paths = [str(args.source / "service"), str(args.source / "clients" / "python")]
        env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
        command = [sys.executable, __file__, "--child", "--tasks", str(args.tasks)]
        command += ["--repeat", str(args.repeat)]
        output = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
        result = json.loads(output.stdout)
    else:
        result = measure(args.tasks, args.repeat, sandbox=not args.child)
    if args.child:
        print(json.dumps(result))
    else:
        for name, value in result.items():
            print(f"{name:>28}: {value:,.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
