"""The planner: a pure compiler from workflow documents to execution plans.

    compile_source(text, fmt="auto") -> CompileResult      YAML or JSON text
    compile_document(doc) -> CompileResult                 parsed JSON-like document
    validate_source(text, fmt="auto") -> tuple[Diagnostic, ...]
    render_text(plan) / render_dot(plan) / render_mermaid(plan) -> str
    text_lines(plan) / dot_lines(plan) / mermaid_lines(plan) -> Iterator[str]   the same, by line

`CompileResult.plan` is None iff some diagnostic is an error; diagnostics are always
sorted (path in natural order, then code, then message), at most 100 of them, errors
chosen before warnings, and when more were found a last `diagnostics-truncated`
entry says how many (see `diagnostics.py`). The planner does no I/O,
reads no clock, environment or randomness and never mutates its input, so the same
document always yields the same `Plan` and `plan_id`. `execplan.wire.plan_codec`
turns a `Plan` into `execplan.v1.ExecutionPlan`.

Every input is bounded before the expensive work: `limits.py` for the document
(size, values, depth, tasks, numbers, checked while it is parsed by `load_yaml` /
`load_json`), `expressions.py` for expressions (size, nesting, operator chains,
comprehensions, checked before the CEL library sees them), `diagnostics.py` for
what comes back (echoed values cut, at most 100 diagnostics).

See `compile.py` for the phases, `expressions.py` for the expression helpers the
executor reuses, `durations.py` for `parse_duration`, `resolve.py` for the default
policies and `validate_reachability.py` for the unreachable rule.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from execplan.planner import compile as _compile
from execplan.planner import parse as _parse
from execplan.planner import source as _source
from execplan.planner.diagnostics import Diagnostic, Diagnostics
from execplan.planner.plan import (
    FORMAT_VERSION,
    Binding,
    BindingList,
    BindingStruct,
    BindingValue,
    Expression,
    Literal,
    Plan,
    PlanEdge,
    PlanInput,
    PlanNode,
    PlanOutput,
    PlanSideTask,
    ResolvedCircuitBreaker,
    ResolvedRetryPolicy,
    ResolvedTimeouts,
    ResourceBinding,
    Template,
)
from execplan.planner.render import (
    dot_lines,
    mermaid_lines,
    render_dot,
    render_mermaid,
    render_text,
    text_lines,
)

FORMATS = ("auto", "yaml", "json")


@dataclass(frozen=True, slots=True)
class CompileResult:
    plan: Plan | None
    diagnostics: tuple[Diagnostic, ...]

    @property
    def ok(self) -> bool:
        return self.plan is not None

    @property
    def limit_exceeded(self) -> bool:
        return any(d.code.startswith("limit-") for d in self.diagnostics)

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity == "error")


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic GC: compiling allocates millions of acyclic objects, and the
    collections they trigger made a 100k-task compile ~1.5x slower.

    When it resumes, every object the plan is made of is young: the next young
    collection would walk them all (~0.15 s at 100k tasks) and the middle one again,
    to find no garbage. So they go straight to the oldest generation, which only
    the occasional full collection walks: `freeze()` + `unfreeze()` moves every
    tracked object there at once (list splices, no walk). Done only when nothing
    in the process is frozen, since unfreeze() would thaw that too."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc.get_freeze_count() == 0:
            gc.freeze()
            gc.unfreeze()
        if was_enabled:
            gc.enable()


def _run_source(source: str, fmt: str, build: bool) -> CompileResult:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")
    diags = Diagnostics()
    plan = None
    with _no_gc():
        ok, doc = _source.load(source, fmt, diags)
        if ok:
            wf = _parse.build_workflow(doc, diags)
            # The model holds what it needs of the document: free it before the plan
            # is built (~70 MB less at the peak for 100k tasks).
            del doc
            plan = _compile.compile_workflow(wf, diags, build=build)
            del wf
        else:
            del doc
    return CompileResult(plan, diags.report())


def compile_source(source: str, fmt: str = "auto") -> CompileResult:
    """Compile YAML or JSON text; `fmt` "auto" means JSON if it starts with `{`."""
    return _run_source(source, fmt, build=True)


def compile_document(doc: object) -> CompileResult:
    """Compile an already parsed document (e.g. `MessageToDict` of a Workflow proto)."""
    diags = Diagnostics()
    with _no_gc():
        plan = _compile.compile_document(doc, diags)
    return CompileResult(plan, diags.report())


def validate_source(source: str, fmt: str = "auto") -> tuple[Diagnostic, ...]:
    """Every diagnostic for `source`, without building the plan."""
    return _run_source(source, fmt, build=False).diagnostics


__all__ = [
    "FORMAT_VERSION",
    "Binding",
    "BindingList",
    "BindingStruct",
    "BindingValue",
    "CompileResult",
    "Diagnostic",
    "Expression",
    "Literal",
    "Plan",
    "PlanEdge",
    "PlanInput",
    "PlanNode",
    "PlanOutput",
    "PlanSideTask",
    "ResolvedCircuitBreaker",
    "ResolvedRetryPolicy",
    "ResolvedTimeouts",
    "ResourceBinding",
    "Template",
    "compile_document",
    "compile_source",
    "dot_lines",
    "mermaid_lines",
    "render_dot",
    "render_mermaid",
    "render_text",
    "text_lines",
    "validate_source",
]
