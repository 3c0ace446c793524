// What the execution graph shows: the plan's tasks, and what grew from them at run
// time drawn as groups (docs/runtime-plans.md) — a for_each task's instances
// (`research[0]`...; at most MAX_INSTANCES, then one box counting the rest), a
// dynamic task's sub-plan (`agent/a`..., nested the same way). The same rules as
// `execplan get --format dot|mermaid` (service/execplan/cli/pictures.py).
import type { Execution, TaskRun } from "./gen/execplan/v1/execution_pb.js";
import type { ExecutionPlan, PlanNode } from "./gen/execplan/v1/plan_pb.js";
import { EdgeKind } from "./gen/execplan/v1/plan_pb.js";

export const MAX_INSTANCES = 12;

export interface SceneBox {
  key: string;
  taskId: string; // "" for the box that counts the rest of the instances
  title: string;
  subtitle: string;
  node: PlanNode | undefined; // the plan node it runs (instances: their task's)
  group: string | undefined; // key of the group it is drawn in
  rest?: TaskRun[]; // the box that counts the rest: those instances
}

export interface SceneGroup {
  key: string;
  label: string;
  parent: string | undefined;
}

export interface SceneEdge {
  source: string;
  target: string;
  data: boolean;
  order: boolean;
  into: boolean; // a dynamic task into its sub-plan
}

export interface Scene {
  key: string; // changes when the shape changes (a new layout is needed)
  boxes: SceneBox[];
  groups: SceneGroup[];
  edges: SceneEdge[];
}

function instancesOf(execution: Execution): Map<string, TaskRun[]> {
  const found = new Map<string, TaskRun[]>();
  for (const t of execution.tasks) {
    if (t.itemIndex === undefined) continue;
    const list = found.get(t.parentTaskId) ?? [];
    list.push(t);
    found.set(t.parentTaskId, list);
  }
  for (const list of found.values()) list.sort((a, b) => (a.itemIndex ?? 0) - (b.itemIndex ?? 0));
  return found;
}

export function buildScene(plan: ExecutionPlan, execution: Execution | null, subPlans: Map<string, ExecutionPlan>): Scene {
  const instances = execution ? instancesOf(execution) : new Map<string, TaskRun[]>();
  const revisions = new Map((execution?.planRevisions ?? []).map((r) => [r.taskId, r.planId]));
  const scene: Scene = { key: "", boxes: [], groups: [], edges: [] };
  const shape: string[] = [plan.planId];

  const scope = (p: ExecutionPlan, prefix: string, key: string, group: string | undefined) => {
    const heads: string[] = [];
    for (const n of p.nodes) heads.push(node(n, prefix, `${key}n${n.index}`, group));
    for (const e of p.edges) {
      scene.edges.push({
        source: heads[e.source],
        target: heads[e.target],
        data: e.kind === EdgeKind.DATA || e.kind === EdgeKind.ORDER_AND_DATA,
        order: e.kind !== EdgeKind.DATA,
        into: false,
      });
    }
  };

  const node = (n: PlanNode, prefix: string, key: string, group: string | undefined): string => {
    const taskId = prefix + n.taskId;
    const head: SceneBox = { key, taskId, title: taskId, subtitle: n.type, node: n, group };
    const mine = instances.get(taskId) ?? [];
    const subPlan = subPlans.get(revisions.get(taskId) ?? "");
    if (!mine.length && !subPlan && !n.forEach) {
      scene.boxes.push(head);
      return key;
    }
    const groupKey = `g${key}`;
    if (subPlan) {
      scene.groups.push({ key: groupKey, label: `${taskId}: sub-plan`, parent: group });
      head.group = groupKey;
      scene.boxes.push(head);
      shape.push(`${taskId}=${subPlan.planId}`);
      scope(subPlan, `${taskId}/`, `${key}s`, groupKey);
      for (const sub of subPlan.nodes) {
        if (!sub.upstream.length) scene.edges.push({ source: key, target: `${key}sn${sub.index}`, data: false, order: true, into: true });
      }
      return key;
    }
    scene.groups.push({ key: groupKey, label: `${taskId}: for each ${n.forEach?.source ?? ""}`, parent: group });
    head.group = groupKey;
    scene.boxes.push(head);
    for (const inst of mine.slice(0, MAX_INSTANCES)) {
      scene.boxes.push({ key: `${key}i${inst.itemIndex}`, taskId: inst.taskId, title: inst.taskId, subtitle: `item ${inst.itemIndex}`, node: n, group: groupKey });
    }
    const rest = mine.slice(MAX_INSTANCES);
    if (rest.length) {
      scene.boxes.push({ key: `${key}more`, taskId: "", title: `… ${rest.length} more`, subtitle: "instances", node: n, group: groupKey, rest });
    }
    shape.push(`${taskId}#${Math.min(mine.length, MAX_INSTANCES + 1)}`);
    return key;
  };

  scope(plan, "", "", undefined);
  scene.key = shape.join("|");
  return scene;
}

/** The plan node a task id runs: `research[3]` runs `research`'s, `agent/a` the sub-plan's `a`. */
export function nodeOf(scene: Scene, taskId: string): PlanNode | undefined {
  return scene.boxes.find((b) => b.taskId === taskId)?.node ?? scene.boxes.find((b) => b.taskId === taskId.replace(/\[\d+\]$/, ""))?.node;
}
