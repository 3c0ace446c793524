// Lays a plan out left to right with dagre (Sugiyama layering: stages become
// columns, crossings minimised). Computed once per plan_id and cached: live updates
// only recolour nodes.
import dagre from "@dagrejs/dagre";
import { EdgeKind, type ExecutionPlan } from "./gen/execplan/v1/plan_pb.js";

export interface NodeBox {
  index: number;
  id: string;
  type: string;
  x: number; // centre
  y: number;
  width: number;
  height: number;
}

export interface EdgePath {
  source: number;
  target: number;
  data: boolean; // read by an expression (drawn dashed when it is not also declared)
  order: boolean;
  points: { x: number; y: number }[];
}

export interface Layout {
  planId: string;
  nodes: NodeBox[];
  edges: EdgePath[];
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
  const cached = cache.get(plan.planId);
  if (cached) return cached;
  const started = performance.now();
  const g = new dagre.graphlib.Graph({ multigraph: false, compound: false });
  // Big plans: tighter spacing, and the longest-path ranker (a node's column is its
  // stage, as the planner defines it): dagre's default network-simplex ranker
  // takes ~5 s on a 1,000-task plan, longest-path ~0.7 s.
  const dense = plan.nodes.length > 200;
  g.setGraph({
    rankdir: "LR",
    nodesep: dense ? 10 : 18,
    ranksep: dense ? 48 : 64,
    marginx: 16,
    marginy: 16,
    ranker: dense ? "longest-path" : "network-simplex",
  });
  g.setDefaultEdgeLabel(() => ({}));
  for (const node of plan.nodes) {
    g.setNode(String(node.index), { width: widthOf(node.taskId, node.type), height: NODE_HEIGHT });
  }
  for (const edge of plan.edges) g.setEdge(String(edge.source), String(edge.target));
  dagre.layout(g);
  const nodes: NodeBox[] = plan.nodes.map((node) => {
    const n = g.node(String(node.index));
    return { index: node.index, id: node.taskId, type: node.type, x: n.x, y: n.y, width: n.width, height: n.height };
  });
  const edges: EdgePath[] = plan.edges.map((edge) => ({
    source: edge.source,
    target: edge.target,
    data: edge.kind === EdgeKind.DATA || edge.kind === EdgeKind.ORDER_AND_DATA,
    order: edge.kind !== EdgeKind.DATA,
    points: g.edge(String(edge.source), String(edge.target))?.points ?? [],
  }));
  const graph = g.graph();
  const result: Layout = {
    planId: plan.planId,
    nodes,
    edges,
    width: graph.width ?? 0,
    height: graph.height ?? 0,
    millis: performance.now() - started,
  };
  cache.set(plan.planId, result);
  return result;
}
