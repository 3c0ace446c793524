"""The runtime-plan fields of a task: for_each, max_parallel, repeat, workflow, dynamic.

Their expressions (`for_each`, `repeat.until`) are compiled with the others in
`compile.py`; this phase checks everything else about them (docs/runtime-plans.md):

- `max_parallel` on a task bounds its for_each instances: it needs `for_each`;
- `repeat.max_iterations` is 1..MAX_ITERATIONS (a loop is always bounded);
- `type: builtin.workflow` needs `workflow: NAME` or `NAME@VERSION`, and only it
  reads `workflow`;
- combinations the executor does not run are refused here, not at run time:
  `dynamic` with for_each, repeat or a built-in type; for_each or repeat on
  `builtin.sleep` / `builtin.wait_for_event`.

Codes: invalid-for-each, invalid-repeat, invalid-workflow-ref, builtin-invalid,
unsupported-combination.
"""

from __future__ import annotations

import re

from execplan.planner.diagnostics import Diagnostics, echo
from execplan.planner.model import Task, Workflow
from execplan.planner.plan import WorkflowRef
from execplan.planner.validate_ids import WORKFLOW_NAME

MAX_ITERATIONS = 10_000
MAX_VERSION_CHARS = 128
WORKFLOW_TYPE = "builtin.workflow"
_VERSION = re.compile(r"\S+")
_WAITING_BUILTINS = frozenset({"builtin.sleep", "builtin.wait_for_event"})


def parse_workflow_ref(text: str) -> WorkflowRef | str:
    """`NAME` or `NAME@VERSION` -> WorkflowRef; otherwise the reason, as text."""
    name, at, version = text.partition("@")
    if not WORKFLOW_NAME.fullmatch(name):
        return f"workflow name {echo(name)} must match [a-z0-9][a-z0-9._-]*"
    if at and not version:
        return "a version follows @: NAME@VERSION (or NAME alone for the latest)"
    if at and (len(version) > MAX_VERSION_CHARS or not _VERSION.fullmatch(version)):
        return f"version {echo(version)} must be 1..{MAX_VERSION_CHARS} characters without spaces"
    return WorkflowRef(name, version)


def check(wf: Workflow, diags: Diagnostics) -> None:
    # A plain task (parse's fast path) sets none of the runtime fields; only its
    # type can make it a workflow task.
    tasks = wf.tasks if WORKFLOW_TYPE in wf.task_types() else wf.beyond_plain()
    for t in tasks:
        if t is None:
            continue
        if t.for_each or t.max_parallel or t.repeat or t.workflow or t.dynamic:
            _task(t, diags)
        elif t.type == WORKFLOW_TYPE:
            _workflow(t, diags)


def _task(t: Task, diags: Diagnostics) -> None:
    p = t.path
    if t.max_parallel and not t.for_each:
        diags.error(
            "invalid-for-each",
            f"{p}.max_parallel",
            "max_parallel on a task bounds its for_each instances: set for_each too "
            "(the workflow's max_parallel bounds tasks)",
        )
    if t.repeat is not None:
        n = t.repeat.max_iterations
        if n is not None and not 1 <= n <= MAX_ITERATIONS:
            diags.error(
                "invalid-repeat",
                f"{p}.repeat.max_iterations",
                f"max_iterations must be within 1..{MAX_ITERATIONS:,}",
            )
    _workflow(t, diags)
    _combinations(t, diags)


def _workflow(t: Task, diags: Diagnostics) -> None:
    p = t.path
    if t.type == WORKFLOW_TYPE:
        if not t.workflow:
            diags.error(
                "builtin-invalid",
                f"{p}.workflow",
                f"{WORKFLOW_TYPE} needs workflow: NAME or NAME@VERSION (a registered workflow)",
            )
            return
        ref = parse_workflow_ref(t.workflow)
        if isinstance(ref, str):
            diags.error("invalid-workflow-ref", f"{p}.workflow", ref)
    elif t.workflow:
        diags.error(
            "invalid-workflow-ref",
            f"{p}.workflow",
            f"workflow is read only by type {WORKFLOW_TYPE} (this task's type is {echo(t.type)})",
        )


def _combinations(t: Task, diags: Diagnostics) -> None:
    p = t.path
    if t.dynamic:
        if t.for_each:
            _unsupported(diags, f"{p}.dynamic", "dynamic with for_each")
        if t.repeat is not None:
            _unsupported(diags, f"{p}.dynamic", "dynamic with repeat")
        if t.type.startswith("builtin."):
            _unsupported(diags, f"{p}.dynamic", f"dynamic on {t.type} (a worker writes sub-plans)")
    if t.type in _WAITING_BUILTINS:
        if t.for_each:
            _unsupported(diags, f"{p}.for_each", f"for_each on {t.type}")
        if t.repeat is not None:
            _unsupported(diags, f"{p}.repeat", f"repeat on {t.type}")


def _unsupported(diags: Diagnostics, path: str, what: str) -> None:
    diags.error("unsupported-combination", path, f"{what} is not supported")
