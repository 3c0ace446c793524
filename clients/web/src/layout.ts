// Lays a plan (or an execution's scene: the plan plus what grew from it at run time,
// see scene.ts) out left to right with dagre (Sugiyama layering: stages become
// columns, crossings minimised); groups are dagre compound nodes. Computed once per
// shape (`Scene.key`) and cached: live updates only recolour nodes.
import dagre from "@dagrejs/dagre";
import type { ExecutionPlan } from "./gen/execplan/v1/plan_pb.js";
import { type Scene, type SceneBox, buildScene } from "./scene.js";

export interface NodeBox {
  key: string;
  id: string; // the task id ("" for a box counting instances)
  type: string; // the second line: the task type, or "item N" for an instance
  title: string;
  x: number; // centre
  y: number;
  width: number;
  height: number;
  box: SceneBox;
}

export interface EdgePath {
  source: string;
  target: string;
  data: boolean; // read by an expression (drawn dashed when it is not also declared)
  order: boolean;
  into: boolean; // a dynamic task into its sub-plan (dotted)
  points: { x: number; y: number }[];
}

export interface GroupBox {
  key: string;
  label: string;
  x: number; // top left
  y: number;
  width: number;
  height: number;
}

export interface Layout {
  planId: string;
  key: string;
  nodes: NodeBox[];
  edges: EdgePath[];
  groups: GroupBox[];
  width: number;
  height: number;
  millis: number;
}

const NODE_HEIGHT = 46;
const CHAR = 7.2;

function widthOf(id: string, type: string): number {
  return Math.min(280, Math.max(120, Math.max(id.length * 8.2 + 24, type.length * CHAR) + 24));
}

const cache = new Map<string, Layout>();

export function layoutPlan(plan: ExecutionPlan): Layout {
  return layoutScene(plan.planId, buildScene(plan, null, new Map()));
}

export function layoutScene(planId: string, scene: Scene): Layout {
  const cached = cache.get(scene.key);
  if (cached) return cached;
  const started = performance.now();
  const compound = scene.groups.length > 0;
  const g = new dagre.graphlib.Graph({ multigraph: false, compound });
  // Big plans: tighter spacing, and the longest-path ranker (a node's column is its
  // stage, as the planner defines it): dagre's default network-simplex ranker
  // takes ~5 s on a 1,000-task plan, longest-path ~0.7 s.
  const dense = scene.boxes.length > 200;
  g.setGraph({
    rankdir: "LR",
    nodesep: dense ? 10 : 18,
    ranksep: dense ? 48 : 64,
    marginx: 16,
    marginy: 16,
    ranker: dense ? "longest-path" : "network-simplex",
  });
  g.setDefaultEdgeLabel(() => ({}));
  for (const group of scene.groups) {
    g.setNode(group.key, { label: group.label, paddingTop: 26, paddingLeft: 10, paddingRight: 10, paddingBottom: 10 });
  }
  for (const group of scene.groups) if (group.parent) g.setParent(group.key, group.parent);
  for (const box of scene.boxes) {
    g.setNode(box.key, { width: widthOf(box.title, box.subtitle), height: NODE_HEIGHT });
    if (box.group) g.setParent(box.key, box.group);
  }
  for (const edge of scene.edges) g.setEdge(edge.source, edge.target);
  dagre.layout(g);
  const nodes: NodeBox[] = scene.boxes.map((box) => {
    const n = g.node(box.key);
    return { key: box.key, id: box.taskId, type: box.subtitle, title: box.title, x: n.x, y: n.y, width: n.width, height: n.height, box };
  });
  const groups: GroupBox[] = scene.groups.map((group) => {
    const n = g.node(group.key);
    return { key: group.key, label: group.label, x: n.x - n.width / 2, y: n.y - n.height / 2, width: n.width, height: n.height };
  });
  const edges: EdgePath[] = scene.edges.map((edge) => ({
    ...edge,
    points: g.edge(edge.source, edge.target)?.points ?? [],
  }));
  const graph = g.graph();
  const result: Layout = {
    planId,
    key: scene.key,
    nodes,
    edges,
    groups,
    width: graph.width ?? 0,
    height: graph.height ?? 0,
    millis: performance.now() - started,
  };
  cache.set(scene.key, result);
  if (cache.size > 64) cache.delete(cache.keys().next().value!);
  return result;
}
