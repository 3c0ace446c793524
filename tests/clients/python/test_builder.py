"""execplan.builder: workflows as code produce the same Workflow message (and plan) as
the YAML they mirror; names, enums and durations are checked as they are added."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from execplan.builder import (
    CircuitBreaker,
    Compensation,
    Defaults,
    Expr,
    Fallback,
    Input,
    Placement,
    Repeat,
    Resources,
    Retry,
    Timeouts,
    Workflow,
    expr,
    index,
    item,
    iteration,
    output,
    previous,
)
from execplan.planner import compile_document, compile_source

GOLDEN = Path(__file__).parents[2] / "planner" / "golden" / "runtime_plans.yaml"


def test_the_golden_runtime_workflow_built_in_code_compiles_to_the_same_plan() -> None:
    wf = Workflow("research", version="2", inputs={"question": Input("string", required=True)})
    plan = wf.task("plan", "agent.plan", inputs={"question": wf.inputs.question})
    research = wf.task(
        "research",
        "agent.research",
        for_each=plan.output.questions,
        max_parallel=4,
        when=expr("item != ''"),
        inputs={"question": item, "position": index},
        fallback=Fallback("agent.research_cheap", inputs={"question": item}),
    )
    write = wf.task(
        "write",
        "agent.write",
        inputs={"notes": research.output, "draft": previous, "round": iteration},
        repeat=Repeat(until="output.approved || tasks.plan.output.quick", max_iterations=3),
    )
    review = wf.task(
        "review",
        "builtin.workflow",
        workflow="review@1",
        for_each="tasks.write.output.sections",
        inputs={"section": item},
    )
    wf.task("improvise", "agent.planner", dynamic=True, inputs={"goal": wf.inputs.question})
    wf.output("report", write.output.text)
    wf.output("reviews", review.output)

    built = compile_document(wf.to_dict())
    golden = compile_source(GOLDEN.read_text())
    assert built.plan is not None and golden.plan is not None, built.diagnostics
    assert built.plan.plan_id == golden.plan.plan_id
    message = wf.build()
    assert message.tasks[1].for_each == "tasks.plan.output.questions"
    assert message.tasks[2].repeat.max_iterations == 3
    assert message.tasks[3].workflow == "review@1"
    assert message.tasks[4].dynamic


def test_policies_become_proto_fields() -> None:
    wf = Workflow(
        "pol",
        on_failure="compensate",
        max_parallel=5,
        defaults=Defaults(retry=Retry(max_attempts=2), timeouts=Timeouts(start_to_close="1m")),
    )
    wf.task(
        "charge",
        "payments.charge",
        retry=Retry(
            max_attempts=5,
            initial_interval="250ms",
            max_interval=timedelta(minutes=1, seconds=30),
            non_retryable_errors=("CardDeclined",),
        ),
        timeouts=Timeouts(heartbeat="5s", schedule_to_close="1h30m"),
        circuit_breaker=CircuitBreaker(failure_threshold=3, open_for="30s", on_open="fail_fast"),
        placement=Placement(require={"region": "eu"}),
        resources=Resources(cpu="500m", memory="256Mi"),
        compensation=Compensation("payments.refund"),
        trigger="all_done",
        secrets=("stripe_key",),
        priority=10,
    )
    m = wf.build()
    task = m.tasks[0]
    assert m.on_failure == 3 and m.max_parallel == 5
    assert m.defaults.timeouts.start_to_close.seconds == 60
    assert task.retry.initial_interval.nanos == 250_000_000
    assert task.retry.max_interval.seconds == 90
    assert task.timeouts.schedule_to_close.seconds == 5400
    assert task.circuit_breaker.on_open == 2 and task.trigger == 2
    assert list(task.retry.non_retryable_errors) == ["CardDeclined"]
    assert task.compensation.type == "payments.refund"
    assert compile_document(wf.to_dict()).ok


def test_expressions_compose() -> None:
    assert str(Expr("tasks.a").output["items"][0]) == "tasks.a.output.items[0]"
    assert str(Expr("tasks.a").output["a b"]) == 'tasks.a.output["a b"]'
    assert output.approved.template() == "${{ output.approved }}"
    assert Repeat(until=output.ok, max_iterations=2).doc() == {
        "until": "output.ok",
        "max_iterations": 2,
    }


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda wf: wf.task("a b", "t"), "task id 'a b'"),
        (lambda wf: (wf.task("a", "t"), wf.task("a", "t")), "used twice"),
        (lambda wf: wf.task("a", "t", trigger="sometimes"), "trigger: unknown value"),
        (lambda wf: wf.task("a", "t", timeouts=Timeouts(heartbeat="5 s")), "not a duration"),
        (lambda wf: wf.task("a", "t", inputs={"x": object()}), "not a JSON value"),
        (lambda wf: wf.inputs.nope, "not declared"),
        (lambda wf: wf.task("a", "t", when=""), "expected a CEL expression"),
    ],
)
def test_mistakes_are_refused_where_they_are_made(build: object, message: str) -> None:
    wf = Workflow("w")
    with pytest.raises((ValueError, TypeError, KeyError), match=message):
        build(wf)  # type: ignore[operator]


def test_a_bad_name_is_refused() -> None:
    with pytest.raises(ValueError, match="must match"):
        Workflow("Bad Name")


def test_input_defaults_keep_null_apart_from_absent() -> None:
    wf = Workflow("w", inputs={"a": Input("any", default=None), "b": Input("integer")})
    assert wf.to_dict()["inputs"] == {
        "a": {"type": "INPUT_TYPE_ANY", "default": None},
        "b": {"type": "INPUT_TYPE_INTEGER"},
    }


NODE_RESEARCH = """
import { builder } from "./clients/node/dist/index.js";
const { Workflow, expr, item, index, iteration, previous } = builder;
const wf = new Workflow("research",
  { version: "2", inputs: { question: { type: "string", required: true } } });
const plan = wf.task("plan", "agent.plan", { inputs: { question: wf.input("question") } });
const study = wf.task("research", "agent.research", {
  for_each: plan.output.get("questions"), max_parallel: 4, when: expr("item != ''"),
  inputs: { question: item, position: index },
  fallback: { type: "agent.research_cheap", inputs: { question: item } },
});
const write = wf.task("write", "agent.write", {
  inputs: { notes: study.output, draft: previous, round: iteration },
  repeat: { until: "output.approved || tasks.plan.output.quick", max_iterations: 3 },
});
const review = wf.task("review", "builtin.workflow",
  { workflow: "review@1", for_each: "tasks.write.output.sections", inputs: { section: item } });
wf.task("improvise", "agent.planner", { dynamic: true, inputs: { goal: wf.input("question") } });
wf.output("report", write.output.get("text"));
wf.output("reviews", review.output);
console.log(JSON.stringify(wf.toDocument()));
"""


def test_the_typescript_builder_gives_the_same_plan() -> None:
    import json  # noqa: PLC0415
    import subprocess  # noqa: PLC0415

    root = Path(__file__).parents[3]
    done = subprocess.run(
        ["node", "--input-type=module", "-e", NODE_RESEARCH],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    built = compile_document(json.loads(done.stdout))
    golden = compile_source(GOLDEN.read_text())
    assert built.plan is not None and golden.plan is not None, built.diagnostics
    assert built.plan.plan_id == golden.plan.plan_id
