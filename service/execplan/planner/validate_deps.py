"""Declared dependencies: every `depends_on` entry names another, existing task.

Returns the declared edges as `(upstream index, downstream index, position in
depends_on)`, which the graph phase uses (with the data edges) to sort and find
cycles; the path `tasks[v].depends_on[j]` is only formatted when a cycle needs it.
"""

from __future__ import annotations

import difflib

from execplan.planner.diagnostics import Diagnostics
from execplan.planner.model import Workflow

Edge = tuple[int, int, int]


def check(wf: Workflow, ids: dict[str, int], diags: Diagnostics) -> list[Edge]:
    edges: list[Edge] = []
    for t in wf.tasks:
        if t is None:
            continue
        deps = t.depends_on
        if not deps:
            continue
        tid = t.id
        index = t.index
        seen: set[str] = set()
        for j, dep in enumerate(deps):
            if dep is None:
                continue
            src = ids.get(dep)
            if src is None:
                close = difflib.get_close_matches(dep, list(ids), n=1) if len(ids) < 5000 else []
                hint = f"; did you mean {close[0]}?" if close else ""
                diags.error(
                    "unknown-dependency",
                    f"{t.path}.depends_on[{j}]",
                    f"no task has id {dep!r}{hint}",
                )
            elif dep == tid:
                diags.error(
                    "self-dependency",
                    f"{t.path}.depends_on[{j}]",
                    f"task {dep!r} depends on itself",
                )
            elif dep not in seen:
                seen.add(dep)
                edges.append((src, index, j))
    return edges
