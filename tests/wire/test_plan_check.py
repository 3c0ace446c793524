"""A plan sent by a caller is checked for structure before the executor uses it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from execplan.errors import InvalidArgument
from execplan.planner import compile_source
from execplan.v1 import executor_service_pb2 as pb
from execplan.v1 import plan_pb2
from execplan.wire.plan_check import check_plan
from execplan.wire.plan_codec import encode_plan

from tests.support.server import Env, environment

SOURCE = """
name: checked
tasks:
  - {id: a, type: t.a}
  - {id: b, type: t.b, depends_on: [a], inputs: {x: "${{ tasks.a.output.v }}"}}
  - {id: c, type: t.c, depends_on: [b]}
outputs:
  v: "${{ tasks.c.output }}"
"""


def plan() -> plan_pb2.ExecutionPlan:
    compiled = compile_source(SOURCE)
    assert compiled.plan is not None
    return encode_plan(compiled.plan)


def _index(p: plan_pb2.ExecutionPlan) -> None:
    p.nodes[1].index = 7


def _upstream(p: plan_pb2.ExecutionPlan) -> None:
    p.nodes[1].upstream.append(2**32 - 1)


def _self(p: plan_pb2.ExecutionPlan) -> None:
    p.nodes[2].downstream.append(2)


def _asymmetric(p: plan_pb2.ExecutionPlan) -> None:
    p.nodes[2].upstream.append(0)


def _cycle(p: plan_pb2.ExecutionPlan) -> None:
    p.nodes[0].upstream.append(2)
    p.nodes[2].downstream.append(0)


def _duplicate(p: plan_pb2.ExecutionPlan) -> None:
    p.nodes[2].task_id = "a"


def _long_id(p: plan_pb2.ExecutionPlan) -> None:
    p.nodes[2].task_id = "c" * 30_000_000  # was run: 30 MB in every event of the task


def _long_type(p: plan_pb2.ExecutionPlan) -> None:
    p.nodes[0].type = "t" * 129


def _edge(p: plan_pb2.ExecutionPlan) -> None:
    p.edges.add(source=0, target=3)


def _reads(p: plan_pb2.ExecutionPlan) -> None:
    p.nodes[1].bindings[0].value.expression.reads_tasks.append("ghost")


def _output(p: plan_pb2.ExecutionPlan) -> None:
    p.outputs[0].value.expression.reads_tasks[:] = ["ghost"]


def _chain(p: plan_pb2.ExecutionPlan) -> None:
    # 100,000 `+ 1` terms: the CEL library overflowed the native stack on these.
    p.nodes[1].bindings[0].value.expression.source = "1" + " + 1" * 100_000


def _deep_output(p: plan_pb2.ExecutionPlan) -> None:
    p.outputs[0].value.expression.source = "tasks.c.output" + ".b" * 600


CASES: dict[str, tuple[Callable[[plan_pb2.ExecutionPlan], None], str, str]] = {
    "index": (_index, "plan.nodes[1].index", "must be 1"),
    "upstream": (_upstream, "plan.nodes[1].upstream[1]", "no other node has index 4294967295"),
    "self": (_self, "plan.nodes[2].downstream[0]", "no other node has index 2"),
    "asymmetric": (_asymmetric, "plan.nodes[2].upstream", "whose downstream lacks 2"),
    "cycle": (_cycle, "plan.nodes[0].upstream", "cycle"),
    "duplicate": (_duplicate, "plan.nodes[2].task_id", "duplicate of nodes[0]"),
    "long-id": (_long_id, "plan.nodes[2].task_id", "at most 128 characters"),
    "long-type": (_long_type, "plan.nodes[0].type", "at most 128 characters"),
    "edge": (_edge, "plan.edges[2]", "not below 3"),
    "reads": (_reads, "plan.nodes[1]", "reads unknown task 'ghost'"),
    "output": (_output, "plan.outputs[0]", "reads unknown task 'ghost'"),
    "chain": (_chain, "plan.nodes[1].bindings[0]", "longer than 16384 bytes"),
    "deep-output": (_deep_output, "plan.outputs[0]", "chains more than 500"),
}


def test_a_compiled_plan_passes() -> None:
    check_plan(plan())


@pytest.mark.parametrize("case", CASES)
def test_each_inconsistency_names_its_field(case: str) -> None:
    corrupt, field, words = CASES[case]
    broken = plan()
    corrupt(broken)
    with pytest.raises(InvalidArgument) as caught:
        check_plan(broken)
    first = caught.value.violations[0]
    assert (first.field, words in first.description) == (field, True), first


async def test_every_rpc_taking_a_plan_refuses_a_broken_one(tmp_path: Path) -> None:
    broken = plan()
    _upstream(broken)
    async with environment(Env, tmp_path) as env:
        done = await env.start("name: other\ntasks:\n  - {id: a, type: t.a}\n")
        calls: list[Any] = [
            env.stub.StartExecution(pb.StartExecutionRequest(plan=broken)),
            env.stub.RegisterPlan(pb.RegisterPlanRequest(plan=broken)),
            env.stub.ReplayExecution(pb.ReplayExecutionRequest(execution_id=done, plan=broken)),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "plan.nodes[1].upstream[1]" in (caught.value.details() or "")
        # Nothing was stored: the plan is unknown.
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await env.stub.GetPlan(pb.GetPlanRequest(plan_id=broken.plan_id))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
