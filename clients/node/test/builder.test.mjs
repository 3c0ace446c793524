// builder.Workflow and SubPlan without a server: the Workflow message a builder
// produces, its checks, and each SubPlan form on the wire.
import assert from "node:assert/strict";
import { test } from "node:test";
import { create, toJson } from "@bufbuild/protobuf";
import { SubPlan, builder, pb } from "../dist/index.js";
import { WorkflowSchema } from "../dist/gen/execplan/v1/workflow_pb.js";

const { Workflow, Expr, expr, item, index, iteration, previous, output } = builder;

function research() {
  const wf = new Workflow("research", { version: "2", inputs: { question: { type: "string", required: true } } });
  const plan = wf.task("plan", "agent.plan", { inputs: { question: wf.input("question") } });
  const study = wf.task("research", "agent.research", {
    for_each: plan.output.get("questions"),
    max_parallel: 4,
    when: expr("item != ''"),
    inputs: { question: item, position: index },
    fallback: { type: "agent.research_cheap", inputs: { question: item } },
  });
  const write = wf.task("write", "agent.write", {
    inputs: { notes: study.output, draft: previous, round: iteration },
    repeat: { until: "output.approved || tasks.plan.output.quick", max_iterations: 3 },
  });
  const review = wf.task("review", "builtin.workflow", { workflow: "review@1", for_each: "tasks.write.output.sections", inputs: { section: item } });
  wf.task("improvise", "agent.planner", { dynamic: true, inputs: { goal: wf.input("question") } });
  wf.output("report", write.output.get("text"));
  wf.output("reviews", review.output);
  return wf;
}

test("a builder produces the Workflow message with the WDL's names", () => {
  const message = research().build();
  assert.equal(message.name, "research");
  assert.equal(message.tasks[1].forEach, "tasks.plan.output.questions");
  assert.equal(message.tasks[1].maxParallel, 4);
  assert.equal(message.tasks[1].when, "item != ''");
  const json = toJson(WorkflowSchema, message);
  assert.deepEqual(json.tasks[1].inputs, { question: "${{ item }}", position: "${{ index }}" });
  assert.equal(message.tasks[2].repeat.maxIterations, 3);
  assert.equal(message.tasks[3].workflow, "review@1");
  assert.equal(message.tasks[4].dynamic, true);
  assert.deepEqual(json.outputs, { report: "${{ tasks.write.output.text }}", reviews: "${{ tasks.review.output }}" });
  // The document is the YAML's shape: snake_case, as a workflow file holds it.
  const doc = research().toDocument();
  assert.equal(doc.tasks[1].for_each, "tasks.plan.output.questions");
  assert.deepEqual(doc.tasks[2].repeat, { until: "output.approved || tasks.plan.output.quick", max_iterations: 3 });
});

test("policies: durations, enums and nested specs", () => {
  const wf = new Workflow("pol", { on_failure: "compensate", max_parallel: 5, defaults: { timeouts: { start_to_close: "1m" } } });
  wf.task("charge", "payments.charge", {
    retry: { max_attempts: 5, initial_interval: "250ms", max_interval: 90_000, non_retryable_errors: ["CardDeclined"] },
    timeouts: { heartbeat: "5s", schedule_to_close: "1h30m" },
    circuit_breaker: { failure_threshold: 3, open_for: "30s", on_open: "fail_fast" },
    compensation: { type: "payments.refund" },
    trigger: "all_done",
  });
  const json = toJson(WorkflowSchema, wf.build());
  assert.equal(json.onFailure, "ON_FAILURE_COMPENSATE");
  assert.equal(json.defaults.timeouts.startToClose, "60s");
  const task = json.tasks[0];
  assert.equal(task.retry.initialInterval, "0.250s");
  assert.equal(task.retry.maxInterval, "90s");
  assert.equal(task.timeouts.scheduleToClose, "5400s");
  assert.equal(task.circuitBreaker.onOpen, "BREAKER_OPEN_ACTION_FAIL_FAST");
  assert.equal(task.trigger, "TRIGGER_RULE_ALL_DONE");
});

test("expressions compose", () => {
  assert.equal(String(new Expr("tasks.a").get("output").get("items").get(0)), "tasks.a.output.items[0]");
  assert.equal(String(new Expr("tasks.a.output").get("a b")), 'tasks.a.output["a b"]');
  assert.equal(output.get("approved").template(), "${{ output.approved }}");
});

test("mistakes are refused where they are made", () => {
  const wf = new Workflow("w");
  assert.throws(() => wf.task("a b", "t"), /task id "a b"/);
  wf.task("a", "t");
  assert.throws(() => wf.task("a", "t"), /used twice/);
  assert.throws(() => wf.task("b", "t", { trigger: "sometimes" }), /trigger: unknown value/);
  assert.throws(() => wf.task("c", "t", { timeouts: { heartbeat: "5 s" } }), /not a duration/);
  assert.throws(() => wf.task("d", "t", { inputs: { x: new Date() } }), /not a JSON value/);
  assert.throws(() => wf.input("nope"), /not declared/);
  assert.throws(() => new Workflow("Bad Name"), /must match/);
});

test("SubPlan goes on the wire in each of its forms", () => {
  const built = new Workflow("sub");
  built.task("a", "t.a");
  const message = create(WorkflowSchema, { name: "sub", tasks: [{ id: "b", type: "t.b" }] });
  const fromObject = new SubPlan({ name: "sub", tasks: [{ id: "a", type: "t.a", retry: { initial_interval: "2s" } }] }, { goal: "x" }).encode();
  assert.equal(fromObject.definition.case, "source");
  assert.match(fromObject.definition.value, /"initial_interval":"2s"/);
  assert.equal(fromObject.format, pb.SourceFormat.JSON);
  assert.deepEqual(fromObject.inputs, { goal: "x" });
  const fromYaml = new SubPlan("name: sub\ntasks: [{id: a, type: t.a}]\n").encode();
  assert.equal(fromYaml.definition.case, "source");
  assert.equal(fromYaml.format, pb.SourceFormat.AUTO);
  const fromMessage = new SubPlan(message).encode();
  assert.equal(fromMessage.definition.case, "workflow");
  assert.equal(fromMessage.definition.value.tasks[0].id, "b");
  const fromBuilder = new SubPlan(built).encode();
  assert.equal(fromBuilder.definition.value.tasks[0].type, "t.a");
});

test("a sub-plan over the server's output limit is replaced like an output", async () => {
  const { Outbox } = await import("../dist/outbox.js");
  const outbox = new Outbox();
  outbox.setLimits(1_000, 1 << 20);
  const small = create(pb.TaskResultSchema, { outcome: { case: "subPlan", value: new SubPlan("name: sub\ntasks: [{id: a, type: t}]\n").encode() } });
  assert.equal(outbox.fit(small).result, small);
  const big = create(pb.TaskResultSchema, { outcome: { case: "subPlan", value: new SubPlan("#".repeat(5_000)).encode() } });
  const replaced = outbox.fit(big).result;
  assert.equal(replaced.outcome.case, "error");
  assert.equal(replaced.outcome.value.type, "PayloadTooLarge");
  assert.match(replaced.outcome.value.message, /^sub-plan of /);
});
