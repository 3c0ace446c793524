"""Built-in task types (`builtin.*`) run inside the executor and need certain inputs.

- `builtin.sleep`: `inputs.duration` (a duration string or an expression);
- `builtin.wait_for_event`: `inputs.event` (the event name), optional `inputs.timeout`;
- `builtin.workflow`: a child execution; its `workflow` field is checked by
  `validate_runtime` and its inputs are the child's (anything goes);
- `builtin.http`: `inputs.url` and the rest (`builtin_http.py`);
- any other `builtin.*` type is `builtin-invalid`.
Literal durations are parsed here so a typo fails at compile time, not at run time.
"""

from __future__ import annotations

from execplan.planner import builtin_http
from execplan.planner.diagnostics import Diagnostics, echo
from execplan.planner.durations import parse_duration
from execplan.planner.expressions import OPEN
from execplan.planner.model import Task, Workflow

BUILTIN_PREFIX = "builtin."
BUILTINS = {
    "builtin.sleep": "BUILTIN_KIND_SLEEP",
    "builtin.wait_for_event": "BUILTIN_KIND_WAIT_FOR_EVENT",
    "builtin.workflow": "BUILTIN_KIND_WORKFLOW",
    "builtin.http": "BUILTIN_KIND_HTTP",
}


def builtin_kind(type_name: str) -> str:
    return BUILTINS.get(type_name, "BUILTIN_KIND_NONE")


def _duration_input(t: Task, name: str, required: bool, diags: Diagnostics) -> None:
    path = f"{t.path}.inputs.{name}"
    if name not in t.inputs:
        if required:
            diags.error("builtin-invalid", f"{t.path}.inputs", f"{t.type} needs inputs.{name}")
        return
    v = t.inputs[name]
    if type(v) is not str:
        diags.error("builtin-invalid", path, f"{name} must be a duration string such as 30s")
    elif OPEN not in v:
        try:
            parse_duration(v)
        except ValueError as exc:
            diags.error("invalid-duration", path, str(exc))


def check(wf: Workflow, diags: Diagnostics) -> None:
    if not any(tp.startswith(BUILTIN_PREFIX) for tp in wf.task_types()):
        return  # the usual workflow: no built-in to check
    for t in wf.tasks:
        if t is None or not t.type.startswith(BUILTIN_PREFIX):
            continue
        if t.type == "builtin.sleep":
            _duration_input(t, "duration", True, diags)
        elif t.type == "builtin.wait_for_event":
            event = t.inputs.get("event")
            if event is None or event == "":
                diags.error("builtin-invalid", f"{t.path}.inputs", f"{t.type} needs inputs.event")
            elif type(event) is not str:
                diags.error("builtin-invalid", f"{t.path}.inputs.event", "event must be a string")
            _duration_input(t, "timeout", False, diags)
        elif t.type == builtin_http.TYPE:
            builtin_http.check(t, diags)
        elif t.type != "builtin.workflow":
            known = ", ".join(sorted(BUILTINS))
            diags.error(
                "builtin-invalid",
                f"{t.path}.type",
                f"unknown built-in {echo(t.type)}: expected {known}",
            )
