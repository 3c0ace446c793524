// The plan as an SVG graph: nodes coloured by live state, pan (drag) and zoom
// (wheel), fit-to-view, click to select a task.
import { memo } from "preact/compat";
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import type { EdgePath, GroupBox, Layout, NodeBox } from "../layout.js";

export interface NodeLook {
  tone: string; // css tone: running, succeeded, failed...
  state: string; // for the tooltip
  attempt: number; // shown when > 1
}

interface View {
  x: number;
  y: number;
  k: number;
}

function pathOf(points: { x: number; y: number }[]): string {
  if (points.length === 0) return "";
  let d = `M${points[0].x},${points[0].y}`;
  if (points.length === 2) return d + `L${points[1].x},${points[1].y}`;
  for (let i = 1; i < points.length - 1; i++) {
    const p = points[i];
    const q = points[i + 1];
    const mx = (p.x + q.x) / 2;
    const my = (p.y + q.y) / 2;
    d += ` Q${p.x},${p.y} ${i === points.length - 2 ? q.x : mx},${i === points.length - 2 ? q.y : my}`;
  }
  return d;
}

const Edges = memo(function Edges({ edges }: { edges: EdgePath[] }) {
  return (
    <g class="edges">
      {edges.map((e) => (
        <path key={`${e.source}-${e.target}`} d={pathOf(e.points)} class={e.into ? "edge into" : e.order ? "edge" : "edge data"} marker-end="url(#arrow)" />
      ))}
    </g>
  );
});

// A group: what grew from one task at run time (for_each instances, a sub-plan).
const Groups = memo(function Groups({ groups }: { groups: GroupBox[] }) {
  return (
    <g class="groups">
      {groups.map((g) => (
        <g key={g.key} class="group" data-group={g.key}>
          <rect x={g.x} y={g.y} width={g.width} height={g.height} rx="10" />
          <text x={g.x + 10} y={g.y + 17}>
            {g.label.length > 80 ? `${g.label.slice(0, 79)}…` : g.label}
          </text>
        </g>
      ))}
    </g>
  );
});

function Node({ node, look, selected }: { node: NodeBox; look: NodeLook | undefined; selected: boolean }) {
  const x = node.x - node.width / 2;
  const y = node.y - node.height / 2;
  const rest = node.box.rest;
  const title = rest
    ? `${rest.length} more instances`
    : `${node.id} (${node.type}): ${look?.state ?? "pending"}${look && look.attempt > 1 ? `, attempt ${look.attempt}` : ""}`;
  return (
    <g
      class={`node t-${look?.tone ?? "pending"}${selected ? " selected" : ""}${rest ? " rest" : ""}`}
      transform={`translate(${x},${y})`}
      data-task={node.id || undefined}
      data-tone={look?.tone ?? "pending"}
    >
      <title>{title}</title>
      <rect width={node.width} height={node.height} rx="8" />
      <text x="12" y="19" class="id">
        {node.title}
      </text>
      <text x="12" y="35" class="type">
        {node.type}
      </text>
      {look && look.attempt > 1 && (
        <text x={node.width - 10} y="19" class="attempt" text-anchor="end">
          ×{look.attempt}
        </text>
      )}
    </g>
  );
}

export function Graph({
  layout,
  looks,
  selected,
  onSelect,
}: {
  layout: Layout;
  looks: Map<string, NodeLook>;
  selected: string | null;
  onSelect: (taskId: string | null) => void;
}) {
  const box = useRef<HTMLDivElement>(null);
  const [view, setView] = useState<View>({ x: 0, y: 0, k: 1 });
  const drag = useRef<{ x: number; y: number; vx: number; vy: number; moved: boolean } | null>(null);

  const fit = () => {
    const el = box.current;
    if (!el) return;
    const w = el.clientWidth;
    const h = el.clientHeight;
    const k = Math.min(1.25, Math.max(0.05, Math.min(w / (layout.width + 20), h / (layout.height + 20))));
    setView({ k, x: (w - layout.width * k) / 2, y: (h - layout.height * k) / 2 });
  };
  useLayoutEffect(fit, [layout]);
  useEffect(() => {
    performance.mark(`graph-painted:${layout.planId}`);
  }, [layout]);

  const onWheel = (e: WheelEvent) => {
    e.preventDefault();
    const rect = box.current!.getBoundingClientRect();
    const px = e.clientX - rect.left;
    const py = e.clientY - rect.top;
    setView((v) => {
      const k = Math.min(4, Math.max(0.03, v.k * Math.exp(-e.deltaY * 0.0015)));
      return { k, x: px - ((px - v.x) * k) / v.k, y: py - ((py - v.y) * k) / v.k };
    });
  };
  useEffect(() => {
    const el = box.current!;
    el.addEventListener("wheel", onWheel, { passive: false });
    return () => el.removeEventListener("wheel", onWheel);
  });

  const nodes = useMemo(
    () =>
      layout.nodes.map((n) => <Node key={n.key} node={n} look={n.id ? looks.get(n.id) : undefined} selected={!!n.id && selected === n.id} />),
    [layout, looks, selected],
  );

  return (
    <div
      class="graph"
      ref={box}
      data-testid="graph"
      onPointerDown={(e) => {
        if ((e.target as Element).closest(".graph-tools")) return;
        drag.current = { x: e.clientX, y: e.clientY, vx: view.x, vy: view.y, moved: false };
      }}
      onPointerMove={(e) => {
        const d = drag.current;
        if (!d) return;
        const dx = e.clientX - d.x;
        const dy = e.clientY - d.y;
        if (Math.abs(dx) + Math.abs(dy) > 3) d.moved = true;
        if (d.moved) setView((v) => ({ ...v, x: d.vx + dx, y: d.vy + dy }));
      }}
      onPointerUp={(e) => {
        const d = drag.current;
        drag.current = null;
        if (d?.moved) return;
        const task = (e.target as Element).closest("[data-task]")?.getAttribute("data-task") ?? null;
        onSelect(task);
      }}
    >
      <svg width="100%" height="100%">
        <defs>
          <marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
            <path d="M0,0 L10,5 L0,10 z" class="arrowhead" />
          </marker>
        </defs>
        <g transform={`translate(${view.x},${view.y}) scale(${view.k})`}>
          <Groups groups={layout.groups} />
          <Edges edges={layout.edges} />
          <g class="nodes">{nodes}</g>
        </g>
      </svg>
      <div class="graph-tools">
        <button onClick={() => setView((v) => ({ ...v, k: Math.min(4, v.k * 1.25) }))} title="Zoom in">
          +
        </button>
        <button onClick={() => setView((v) => ({ ...v, k: Math.max(0.03, v.k / 1.25) }))} title="Zoom out">
          −
        </button>
        <button onClick={fit} title="Fit">
          Fit
        </button>
      </div>
    </div>
  );
}
