"""Declared dependencies: every `depends_on` entry names another, existing task.

Returns the declared edges as adjacency lists `(succ, pred)` over task indexes (each
edge once, in depends_on order), which the graph phase extends with the data edges
to sort and find cycles, and whether every one of them goes to a later task (then,
without a data edge going back, the declaration order is the topological order:
`graph.topo_order` need not look at every edge again). No per-edge record is kept:
the path of an edge (`tasks[v].depends_on[j]`) is recomputed only when a cycle needs
it.
"""

from __future__ import annotations

import difflib

from execplan.planner.diagnostics import MAX_ECHO_CHARS, Diagnostics, echo
from execplan.planner.model import Workflow

Adjacency = list[list[int]]


def check(
    wf: Workflow, ids: dict[str, int], diags: Diagnostics
) -> tuple[Adjacency, Adjacency, bool]:
    n = len(wf.tasks)
    succ: Adjacency = [[] for _ in range(n)]
    pred: Adjacency = [[] for _ in range(n)]
    hints = 20
    forward = True
    for t in wf.tasks:
        if t is None:
            continue
        deps = t.depends_on
        if not deps:
            continue
        tid = t.id
        index = t.index
        ups = pred[index]
        # Repeated entries are dropped: a list scan for the usual few, a set past 16.
        seen: set[int] | None = set() if len(deps) > 16 else None
        for j, dep in enumerate(deps):
            if dep is None:
                continue
            src = ids.get(dep)
            if src is None:
                # A did-you-mean costs a comparison with every id: only for a few short names.
                wanted = len(ids) < 5000 and len(dep) <= MAX_ECHO_CHARS and hints > 0
                close = difflib.get_close_matches(dep, list(ids), n=1) if wanted else []
                hints -= 1
                hint = f"; did you mean {echo(close[0])}?" if close else ""
                diags.error(
                    "unknown-dependency",
                    f"{t.path}.depends_on[{j}]",
                    f"no task has id {echo(dep)}{hint}",
                )
            elif dep == tid:
                diags.error(
                    "self-dependency",
                    f"{t.path}.depends_on[{j}]",
                    f"task {echo(dep)} depends on itself",
                )
            elif seen is None:
                if src not in ups:
                    ups.append(src)
                    succ[src].append(index)
                    if src > index:
                        forward = False
            elif src not in seen:
                seen.add(src)
                ups.append(src)
                succ[src].append(index)
                if src > index:
                    forward = False
    return succ, pred, forward


def declared_at(wf: Workflow, u: int, v: int) -> int | None:
    """Position in tasks[v].depends_on of the entry that made edge u -> v, if any."""
    t, source = wf.tasks[v], wf.tasks[u]
    if t is None or source is None:
        return None
    for j, dep in enumerate(t.depends_on):
        if dep == source.id:
            return j
    return None
