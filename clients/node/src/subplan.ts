/**
 * SubPlan: what a dynamic task returns instead of an output (docs/runtime-plans.md).
 *
 * A task with `dynamic: true` may answer with a sub-workflow. The executor compiles it
 * with the planner (every problem at once), records it in the history and runs it as
 * tasks `<task id>/<sub task id>`; the task's output is the sub-workflow's `outputs`.
 * An invalid sub-workflow fails the attempt with error type `PlanInvalid` (retryable);
 * the next attempt reads it as `ctx.previousError`, so an agent can repair its plan:
 *
 *     worker.task("agent.plan", async (inputs, ctx) => {
 *       const hint = ctx.previousError?.message ?? "";
 *       return new SubPlan(await writePlan(inputs.goal, hint), { goal: inputs.goal });
 *     });
 *
 * `doc` is a workflow as an object or YAML/JSON text (short forms such as `30s` and
 * `compensate` allowed, as in any workflow file), an `execplan.v1.Workflow` message,
 * or a `builder.Workflow`.
 */
import { create, isMessage, type JsonObject } from "@bufbuild/protobuf";
import { SourceFormat } from "./gen/execplan/v1/planner_service_pb.js";
import { type SubPlan as SubPlanMessage, SubPlanSchema } from "./gen/execplan/v1/worker_service_pb.js";
import { type Workflow as WorkflowMessage, WorkflowSchema } from "./gen/execplan/v1/workflow_pb.js";

export type SubPlanDoc = JsonObject | string | WorkflowMessage | { build(): WorkflowMessage };

export class SubPlan {
  readonly inputs: JsonObject;

  constructor(
    readonly doc: SubPlanDoc,
    inputs?: JsonObject,
  ) {
    const ok = typeof doc === "string" || (typeof doc === "object" && doc !== null);
    if (!ok) throw new TypeError("SubPlan(doc): an object, YAML/JSON text, an execplan.v1.Workflow or a builder.Workflow");
    this.inputs = { ...(inputs ?? {}) };
  }

  /** The wire form (`TaskResult.sub_plan`). */
  encode(): SubPlanMessage {
    // Through JSON text, as toValue does: Dates become strings, undefined members vanish.
    const inputs = JSON.parse(JSON.stringify(this.inputs)) as JsonObject;
    const doc = this.doc;
    if (typeof doc === "string") {
      return create(SubPlanSchema, { definition: { case: "source", value: doc }, format: SourceFormat.AUTO, inputs });
    }
    if (isMessage(doc, WorkflowSchema)) {
      return create(SubPlanSchema, { definition: { case: "workflow", value: doc }, inputs });
    }
    if (typeof (doc as { build?: unknown }).build === "function") {
      const built = (doc as { build(): WorkflowMessage }).build();
      return create(SubPlanSchema, { definition: { case: "workflow", value: built }, inputs });
    }
    // As JSON text, not a parsed message: the planner reads the short forms (`30s`,
    // `compensate`) that a Workflow message cannot hold.
    return create(SubPlanSchema, { definition: { case: "source", value: JSON.stringify(doc) }, format: SourceFormat.JSON, inputs });
  }
}
