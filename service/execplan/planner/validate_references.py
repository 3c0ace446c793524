"""What expressions read must exist: tasks by id, inputs by declaration.

Input: the `(path, Expression)` occurrences collected while compiling bindings, by
site. Output: data edges `(upstream index, downstream index, path)`.

Edge rules (why):
- a task's `inputs` and `when`, and its fallback's inputs, need the values they read
  before the task (or its fallback) can start, so each read task becomes upstream;
- a task reading itself there is a `self-dependency`, except in its fallback (which
  reads `tasks.SELF.error`) and compensation (which reads `tasks.SELF.output`);
- compensation inputs add no edges: compensations run after forward progress stopped,
  in reverse completion order, and a compensation reading a later task (e.g. a
  refund reading `tasks.charge.output`) must not create a cycle; a task that never
  ran reads as absent at run time;
- workflow outputs are evaluated at the end and add no edges.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from execplan.planner.diagnostics import Diagnostics, clip, echo
from execplan.planner.plan import Expression

Edge = tuple[int, int, str]
Occurrences = Iterable[tuple[str, Expression]]


def check_reads(
    refs: Occurrences,
    ids: dict[str, int],
    declared_inputs: Mapping[str, object],
    diags: Diagnostics,
    *,
    reader: int | None,
    self_ok: bool,
    edges: list[Edge] | None,
) -> None:
    """Check one site's expressions; append data edges to `edges` when given."""
    for path, expr in refs:
        for task in expr.reads_tasks:
            src = ids.get(task)
            if src is None:
                diags.error("unknown-reference", path, f"no task has id {echo(task)}")
            elif src == reader:
                if not self_ok:
                    diags.error(
                        "self-dependency", path, f"task {echo(task)} reads its own result here"
                    )
            elif edges is not None and reader is not None:
                edges.append((src, reader, path))
        for name in expr.reads_inputs:
            if name not in declared_inputs:
                diags.error(
                    "unknown-reference",
                    path,
                    f"workflow.inputs.{clip(name)} is not declared in inputs",
                )
