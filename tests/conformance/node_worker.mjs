// The Node conformance worker: the scenario task types under the `node.` prefix,
// implemented exactly as py_worker.py implements them under `py.`.
//   node tests/conformance/node_worker.mjs ADDRESS WORKER_ID
// EXECPLAN_NODE_PACKAGE overrides where the built package is (default clients/node).
import { dirname, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const pkg = process.env.EXECPLAN_NODE_PACKAGE || resolve(here, "../../clients/node");
const { NonRetryableError, Output, SubPlan, Worker } = await import(pathToFileURL(resolve(pkg, "dist/index.js")).href);

const PREFIX = "node.";
const [address, workerId] = process.argv.slice(2);

function traceId(ctx) {
  const parts = (ctx.traceparent ?? "").split("-");
  return parts.length === 4 ? parts[1] : "";
}

function errorClass(name, retryable) {
  // The class name is what the executor sees as ErrorInfo.type.
  const Base = retryable ? Error : NonRetryableError;
  return { [name]: class extends Base {} }[name];
}

const worker = new Worker({ address, workerId, slots: 8, labels: { lang: "node" } });

worker.task(PREFIX + "step", async (inputs, ctx) => ({
  value: (inputs.value ?? 0) * (inputs.mul ?? 1) + (inputs.add ?? 0),
  path: [...(inputs.path ?? []), inputs.tag ?? ctx.taskId],
  trace_id: traceId(ctx),
}));

worker.task(PREFIX + "sum", async (inputs, ctx) => ({
  value: (inputs.values ?? []).reduce((a, b) => a + b, 0),
  trace_id: traceId(ctx),
}));

worker.task(PREFIX + "fail", async (inputs) => {
  const Cls = errorClass(inputs.error ?? "Boom", inputs.retryable ?? true);
  throw new Cls(inputs.message ?? "failed on purpose");
});

worker.task(PREFIX + "flaky", async (inputs, ctx) => {
  ctx.heartbeat({ attempt: ctx.attempt });
  if (ctx.attempt < (inputs.succeed_on ?? 2)) throw new (errorClass("Transient", true))(`attempt ${ctx.attempt}`);
  return { value: inputs.value ?? null, attempt: ctx.attempt, trace_id: traceId(ctx) };
});

worker.task(PREFIX + "spend", async (inputs, ctx) => {
  ctx.usage({ tokensIn: inputs.tokens_in, tokensOut: inputs.tokens_out, cost: inputs.cost });
  if (ctx.attempt <= (inputs.fail_attempts ?? 0)) throw new (errorClass("Transient", true))(`attempt ${ctx.attempt}`);
  const output = { attempt: ctx.attempt, trace_id: traceId(ctx) };
  return inputs.output_cost ? new Output(output, { cost: inputs.output_cost }) : output;
});

worker.task(PREFIX + "plan", async (inputs, ctx) => {
  // A dynamic task: a chain of `steps` steps of this language, each adding 1; with
  // broken_first, the first answer depends on a step that is not there.
  const previous = ctx.previousError;
  const tasks = [];
  for (let i = 0; i < (inputs.steps ?? 1); i++) {
    const value = i === 0 ? "${{ workflow.inputs.start }}" : `\${{ tasks.s${i - 1}.output.value }}`;
    const task = { id: `s${i}`, type: PREFIX + "step", inputs: { value, add: 1 } };
    if (i) task.depends_on = [`s${i - 1}`];
    tasks.push(task);
  }
  if (inputs.broken_first && previous === undefined) tasks[0].depends_on = ["missing"];
  const last = tasks.length - 1;
  const doc = {
    name: "conf-sub",
    inputs: { start: { type: "integer", required: true } },
    tasks,
    outputs: { value: `\${{ tasks.s${last}.output.value }}`, repaired: previous ? previous.type : "" },
  };
  return new SubPlan(doc, { start: inputs.start ?? 0 });
});

worker.task(PREFIX + "undo", async (inputs, ctx) => ({ undone: inputs.what ?? null, trace_id: traceId(ctx) }));

console.log("worker ready");
await worker.run();
