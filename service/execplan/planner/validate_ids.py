"""Names and identifiers: workflow name, task ids (unique), input and secret names,
and the length of every name (limits.MAX_NAME_CHARS).

Task ids are `[A-Za-z_][A-Za-z0-9_]*` so that `tasks.ID` is valid CEL; input names
follow the same rule for `workflow.inputs.NAME`. Workflow names are
`[a-z0-9][a-z0-9._-]*` (safe in URLs, file names and metric labels).
"""

from __future__ import annotations

import re
from itertools import compress
from operator import attrgetter

from execplan.planner import limits
from execplan.planner.diagnostics import Diagnostics, child, echo
from execplan.planner.model import Workflow

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
WORKFLOW_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_ALL_IDENTS = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]*)(?:\n[A-Za-z_][A-Za-z0-9_]*)*|")


def task_index(wf: Workflow) -> dict[str, int]:
    """Task id -> index of its first declaration (duplicates are reported elsewhere)."""
    index: dict[str, int] = {}
    for t in wf.tasks:
        if t is not None and t.id and t.id not in index:
            index[t.id] = t.index
    return index


def check(wf: Workflow, ids: dict[str, int], diags: Diagnostics) -> None:
    _lengths(wf, diags)
    if wf.name and not WORKFLOW_NAME.fullmatch(wf.name):
        diags.error(
            "invalid-id", "name", f"workflow name {echo(wf.name)} must match [a-z0-9][a-z0-9._-]*"
        )
    for name in wf.inputs:
        if not IDENT.fullmatch(name):
            diags.error(
                "invalid-id", child("inputs", name), f"input name {echo(name)} is not an identifier"
            )
    fullmatch = IDENT.fullmatch
    tasks = [t for t in wf.tasks if t is not None]
    # The usual case, checked in C: every id an identifier (one regex over them all,
    # newline-separated; an id holding a newline fails it too) and none repeated.
    present = [t.id for t in tasks if t.id]
    if _ALL_IDENTS.fullmatch("\n".join(present)) and len(ids) == len(present):
        tasks = [t for t in tasks if t.secrets]  # only secret names are left to check
    for t in tasks:
        if t.id and not fullmatch(t.id):
            diags.error(
                "invalid-id",
                f"{t.path}.id",
                f"task id {echo(t.id)} must match [A-Za-z_][A-Za-z0-9_]*",
            )
        first = ids.get(t.id)
        if t.id and first is not None and first != t.index:
            diags.error(
                "duplicate-id",
                f"{t.path}.id",
                f"task id {echo(t.id)} is already used by tasks[{first}]",
            )
        for j, secret in enumerate(t.secrets):
            if secret is not None and not fullmatch(secret):
                diags.error(
                    "invalid-id",
                    f"{t.path}.secrets[{j}]",
                    f"secret name {echo(secret)} must match [A-Za-z_][A-Za-z0-9_]*",
                )


def _lengths(wf: Workflow, diags: Diagnostics) -> None:
    most = limits.MAX_NAME_CHARS
    long: list[tuple[str, str, str]] = []  # (path, what, name) of each name too long
    for path, what, name in (
        ("name", "workflow name", wf.name),
        ("version", "version", wf.version),
    ):
        if len(name) > most:
            long.append((path, what, name))
    long += [(child("inputs", n), "input name", n) for n in wf.inputs if len(n) > most]
    long += [(child("outputs", n), "output name", n) for n in wf.outputs if len(n) > most]
    # Task ids and types, the bulk, measured in C; a task's paths are formatted only
    # when one of its names is too long (200k f-strings cost ~0.1 s at 100k tasks).
    tasks = [t for t in wf.tasks if t is not None]
    suspects = {
        t.index
        for names in (map(_get_id, tasks), map(_get_type, tasks))
        for t in compress(tasks, map(most.__lt__, map(len, names)))
    }
    suspects.update(t.index for t in wf.beyond_plain() if t.secrets or t.fallback or t.compensation)
    for index in sorted(suspects):
        t = wf.tasks[index]
        assert t is not None
        names = [(f"{t.path}.id", "task id", t.id), (f"{t.path}.type", "task type", t.type)]
        for side, spec in (("fallback", t.fallback), ("compensation", t.compensation)):
            if spec is not None:
                names.append((f"{t.path}.{side}.type", f"{side} type", spec.type))
        names += [
            (f"{t.path}.secrets[{j}]", "secret name", s) for j, s in enumerate(t.secrets) if s
        ]
        long += [(path, what, name) for path, what, name in names if len(name) > most]
    for path, what, name in long:
        diags.error("name-too-long", path, f"{what} {echo(name)} is longer than {most} characters")


_get_id = attrgetter("id")
_get_type = attrgetter("type")
