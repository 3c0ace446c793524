"""Tasks that can never run because of their trigger rule (`unreachable`).

Runs after the graph is known to be acyclic, in topological order. The rule:

1. `one_success` or `all_failed` on a task with no upstream can never be satisfied
   (there is nothing to succeed or fail).
2. `all_failed` is unreachable unless `on_failure: continue`. Under `fail_fast` (the
   default) and `compensate`, the first task that fails for good stops all forward
   dispatching, so no cleanup branch can start after it; a task with a fallback that
   succeeds counts as succeeded (the fallback's output stands in), so fallbacks do not
   help either. Use `on_failure: continue` for `all_failed` cleanup branches.
3. Unreachable tasks end SKIPPED, which propagates: `all_success` (the default) is
   unreachable when any upstream is; `one_success` when every upstream is;
   `all_failed` when any upstream is (skipped is not failed). `all_done` accepts any
   terminal state, so it stays reachable.
`when` conditions are run-time values and are not considered.
"""

from __future__ import annotations

from operator import attrgetter

from execplan.planner.diagnostics import Diagnostics, echo
from execplan.planner.model import Task

ALL_FAILED = "TRIGGER_RULE_ALL_FAILED"
ONE_SUCCESS = "TRIGGER_RULE_ONE_SUCCESS"
ALL_DONE = "TRIGGER_RULE_ALL_DONE"
_DEFAULT_TRIGGERS = frozenset({"", "TRIGGER_RULE_ALL_SUCCESS"})
_trigger = attrgetter("trigger")


def check(
    tasks: tuple[Task | None, ...],
    order: list[int],
    pred: list[list[int]],
    on_failure: str,
    diags: Diagnostics,
) -> None:
    if set(map(_trigger, filter(None, tasks))) <= _DEFAULT_TRIGGERS:
        # Every trigger all_success: rules 1 and 2 never apply and no root is dead,
        # so nothing is (rule 3). The usual workflow, told in C.
        return
    dead = [False] * len(tasks)
    is_dead = dead.__getitem__
    keeps_going = on_failure == "ON_FAILURE_CONTINUE"
    for u in order:
        t = tasks[u]
        if t is None or (t.trigger in ("", "TRIGGER_RULE_ALL_SUCCESS") and not pred[u]):
            continue  # the common case: a root with the default trigger
        ups = pred[u]
        trigger = t.trigger
        reason = ""
        if trigger in (ONE_SUCCESS, ALL_FAILED) and not ups:
            reason = f"trigger {trigger.removeprefix('TRIGGER_RULE_').lower()} needs an upstream"
        elif trigger == ALL_FAILED and not keeps_going:
            reason = (
                "trigger all_failed never fires unless on_failure is continue: "
                "a failure stops the execution first"
            )
        elif trigger == ALL_DONE:
            continue
        else:
            if not any(map(is_dead, ups)):  # the usual case, checked in C
                continue
            dead_ups = [tasks[p] for p in ups if dead[p]]
            if dead_ups and (trigger != ONE_SUCCESS or len(dead_ups) == len(ups)):
                first = dead_ups[0]
                name = first.id if first is not None else "?"
                dead[u] = True
                diags.error(
                    "unreachable",
                    t.path,
                    f"task {echo(t.id)} can never run: upstream {echo(name)} never runs",
                )
            continue
        dead[u] = True
        diags.error(
            "unreachable", f"{t.path}.trigger", f"task {echo(t.id)} can never run: {reason}"
        )
