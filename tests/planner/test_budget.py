"""The planner side of budgets and estimates (docs/usage.md): parsed in both spellings,
validated (every problem at once, paths exact), compiled into the plan and its
digest, encoded into ExecutionPlan, and left out of plans that have none (their
plan_id does not change)."""

from __future__ import annotations

from typing import Any

from execplan import usage
from execplan.planner import compile_document, compile_source
from execplan.planner.digest import canonical_json, plan_id
from execplan.planner.plan import FORMAT_VERSION, FORMAT_VERSION_BUDGETS
from execplan.usage.codec import decode_budget
from execplan.v1 import workflow_pb2
from execplan.wire.plan_check import check_plan
from execplan.wire.plan_codec import encode_plan
from google.protobuf import json_format

SOURCE = """
name: agents
inputs:
  topic: {type: string}
budget: {cost: 10.0, tokens: 2000000, counters: {searches: 50}}
tasks:
  - id: plan
    type: llm.plan
    inputs: {prompt: "${{ workflow.inputs.topic }}"}
    estimate: {cost: 0.05, tokens: "size(inputs.prompt) / 4 + 500"}
  - id: research
    type: llm.research
    for_each: "${{ tasks.plan.output.questions }}"
    inputs: {q: "${{ item }}"}
    budget: {cost: 2, on_exceeded: fail}
    estimate:
      cost: "0.01 * double(index + 1)"
      counters: {searches: 3}
"""


def _errors(doc: dict[str, Any]) -> list[tuple[str, str]]:
    result = compile_document(doc)
    return [(d.code, d.path) for d in result.errors]


def test_budget_and_estimates_compile_into_the_plan() -> None:
    result = compile_source(SOURCE)
    plan = result.plan
    assert plan is not None, result.diagnostics
    assert plan.budget == usage.Budget(
        (("cost", 10.0), ("searches", 50.0), ("tokens", 2_000_000.0)), usage.PAUSE
    )
    assert plan.format_version == FORMAT_VERSION_BUDGETS
    node = plan.node("plan")
    assert node.budget is None
    assert node.estimate is not None
    cost, tokens = node.estimate.amounts
    assert (cost.counter, cost.amount, cost.expression) == ("cost", 0.05, None)
    assert tokens.counter == "tokens"
    assert tokens.expression is not None
    assert tokens.expression.source == "size(inputs.prompt) / 4 + 500"
    research = plan.node("research")
    assert research.budget == usage.Budget((("cost", 2.0),), usage.FAIL)
    assert research.estimate is not None
    amounts = {a.counter: a for a in research.estimate.amounts}
    assert amounts["searches"].amount == 3.0
    assert amounts["cost"].expression is not None
    assert amounts["cost"].expression.reads_variables == ("index",)


def test_plan_id_covers_them_and_streams_the_same_bytes() -> None:
    plan = compile_source(SOURCE).plan
    assert plan is not None
    assert plan_id(plan) == plan.plan_id
    assert '"budget":{"limits":[["cost",10.0]' in canonical_json(plan)
    raised = compile_source(SOURCE.replace("cost: 10.0", "cost: 11.0")).plan
    assert raised is not None and raised.plan_id != plan.plan_id


def test_plans_without_budgets_keep_their_format_and_id() -> None:
    doc = {"name": "w", "tasks": [{"id": "a", "type": "t"}]}
    plan = compile_document(doc).plan
    assert plan is not None
    assert plan.format_version == FORMAT_VERSION
    assert '"budget"' not in canonical_json(plan)
    assert '"estimate"' not in canonical_json(plan)


def test_the_proto_json_spelling_compiles_to_the_same_plan() -> None:
    workflow = workflow_pb2.Workflow(name="agents")
    workflow.inputs["topic"].type = workflow_pb2.INPUT_TYPE_STRING
    workflow.budget.cost = 10.0
    workflow.budget.tokens = 2_000_000
    workflow.budget.counters["searches"] = 50
    task = workflow.tasks.add(id="plan", type="llm.plan")
    task.inputs["prompt"].string_value = "${{ workflow.inputs.topic }}"
    task.estimate.cost = "0.05"
    task.estimate.tokens = "size(inputs.prompt) / 4 + 500"
    from_proto = compile_document(
        json_format.MessageToDict(workflow, preserving_proto_field_name=True)
    )
    yaml = compile_source(SOURCE.split("  - id: research", maxsplit=1)[0])
    assert from_proto.ok and yaml.ok, (from_proto.diagnostics, yaml.diagnostics)
    assert from_proto.plan is not None and yaml.plan is not None
    assert from_proto.plan.plan_id == yaml.plan.plan_id


def test_encoded_plan_carries_them_and_passes_the_plan_check() -> None:
    plan = compile_source(SOURCE).plan
    assert plan is not None
    message = encode_plan(plan)
    check_plan(message)
    assert decode_budget(message.budget) == plan.budget
    assert message.budget.HasField("cost") and message.budget.cost == 10.0
    assert message.budget.counters["searches"] == 50
    research = next(n for n in message.nodes if n.task_id == "research")
    assert decode_budget(research.budget).on_exceeded == usage.FAIL
    assert [a.counter for a in research.estimate.amounts] == ["cost", "searches"]
    assert research.estimate.amounts[0].expression.source == "0.01 * double(index + 1)"


def test_a_hand_made_plan_with_bad_amounts_is_refused() -> None:
    plan = compile_source(SOURCE).plan
    assert plan is not None
    message = encode_plan(plan)
    message.budget.counters["Not-A-Name"] = 1
    try:
        check_plan(message)
    except Exception as error:
        assert "plan.budget" in str(error) and "counter name" in str(error)
    else:
        raise AssertionError("a bad counter name passed the plan check")


def test_every_problem_is_reported_at_its_path() -> None:
    doc = {
        "name": "w",
        "budget": {"cost": -1, "counters": {"Bad": 1, "cost": 2, "ok": 1e16}},
        "tasks": [
            {
                "id": "a",
                "type": "t",
                "budget": {"tokens": "lots", "on_exceeded": "explode"},
                "estimate": {
                    "cost": "-0.5",
                    "tokens": "tasks.b.output.n",
                    "counters": {"x": "size(", "y": "item", "tokens": 1},
                },
            },
            {"id": "b", "type": "t", "estimate": {"cost": "workflow.inputs.missing"}},
        ],
    }
    assert sorted(_errors(doc)) == [
        ("invalid-budget", "budget.cost"),
        ("invalid-budget", "budget.counters.Bad"),
        ("invalid-budget", "budget.counters.cost"),
        ("invalid-budget", "budget.counters.ok"),
        ("invalid-estimate", "tasks[0].estimate.cost"),
        ("invalid-estimate", "tasks[0].estimate.counters.tokens"),
        ("invalid-estimate", "tasks[0].estimate.counters.y"),
        ("invalid-estimate", "tasks[0].estimate.tokens"),
        ("invalid-expression", "tasks[0].estimate.counters.x"),
        ("invalid-type", "tasks[0].budget.tokens"),
        ("unknown-enum", "tasks[0].budget.on_exceeded"),
        ("unknown-reference", "tasks[1].estimate.cost"),
    ]


def test_estimate_messages_say_what_may_be_read() -> None:
    doc = {
        "name": "w",
        "tasks": [{"id": "a", "type": "t", "for_each": "[1, 2]", "estimate": {"cost": "prev * 2"}}],
    }
    (diag,) = compile_document(doc).errors
    assert diag.message == (
        "an estimate reads inputs, workflow.inputs, execution and index, item, "
        "not 'prev' (pass what it needs through the task's inputs)"
    )


def test_estimate_expressions_are_bounded_before_cel_sees_them() -> None:
    deep = "(" * 40 + "1" + ")" * 40
    doc = {"name": "w", "tasks": [{"id": "a", "type": "t", "estimate": {"cost": deep}}]}
    assert _errors(doc) == [("expression-too-deep", "tasks[0].estimate.cost")]


def test_a_budget_of_only_an_action_is_kept_for_the_server_default() -> None:
    plan = compile_document(
        {"name": "w", "budget": {"on_exceeded": "fail"}, "tasks": [{"id": "a", "type": "t"}]}
    ).plan
    assert plan is not None
    assert plan.budget == usage.Budget((), usage.FAIL)
    assert plan.budget.over_default(usage.Budget.of({"cost": 5.0})) == usage.Budget(
        (("cost", 5.0),), usage.FAIL
    )
