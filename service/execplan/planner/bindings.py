"""Compile JSON values (task inputs, side-task inputs, workflow outputs) to bindings.

`compile_value(value, path, diags, refs)` returns a `plan.BindingValue`: a `Literal`
when nothing inside has `${{`, else an `Expression` (a string that is exactly one
`${{ expr }}`), a `Template`, or a `BindingStruct`/`BindingList` wrapping the parts.
Every expression found is appended to `refs` as `(path, Expression)` so the
reference checker and the graph can see what it reads. Syntax problems
(`invalid-template`, `invalid-expression`) and context-free reference problems
(`unknown-reference`, `dynamic-reference`) are reported here.

`Expression` objects are cached by source, so a source used on 100k tasks is parsed
by CEL once and shared.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from execplan.planner import expressions as ex
from execplan.planner.cache import CACHED_CHARS, small_key_cache
from execplan.planner.diagnostics import Diagnostics, child
from execplan.planner.plan import (
    BindingList,
    Bindings,
    BindingStruct,
    BindingValue,
    Expression,
    Literal,
    Template,
)

Refs = list[tuple[str, Expression]]


@small_key_cache(maxsize=32768)
def _checked(source: str) -> tuple[Expression, tuple[tuple[str, str], ...]]:
    # The bounds first, with their own code: `cel` only ever sees what they allow.
    bound = ex.check_expression_bounds(source)
    if bound is not None:
        return Expression(source), (bound,)
    error = ex.compile_cel(source)
    if error is not None:
        return Expression(source), (("invalid-expression", error),)
    a = ex.analyze_expression(source)
    expr = Expression(source, a.reads_tasks, a.reads_inputs, a.reads_execution, a.reads_variables)
    return expr, a.problems


def compile_expression(source: str, path: str, diags: Diagnostics, refs: Refs) -> Expression:
    expr, problems = _checked(source)
    for code, message in problems:
        diags.error(code, path, message)
    refs.append((path, expr))
    return expr


def _has_expression(value: object) -> bool:
    if type(value) is str:
        return ex.OPEN in value
    if type(value) is dict:
        return any(_has_expression(v) for v in value.values())
    if type(value) is list:
        return any(_has_expression(v) for v in value)
    return False


def compile_value(value: object, path: str, diags: Diagnostics, refs: Refs) -> BindingValue:
    if not _has_expression(value):
        return Literal(value)
    if type(value) is str:
        return _compile_string(value, path, diags, refs)
    if type(value) is dict:
        return BindingStruct(compile_bindings(value, path, diags, refs))
    assert type(value) is list
    return BindingList(
        tuple(compile_value(v, f"{path}[{i}]", diags, refs) for i, v in enumerate(value))
    )


# A compiled string: its value, the expressions inside, and the problems to report at
# each place it occurs. Cached by text: workflows repeat the same strings on many tasks.
_Compiled = tuple[BindingValue, tuple[Expression, ...], tuple[tuple[str, str], ...]]


def _string_uncached(text: str) -> _Compiled:
    try:
        pieces = ex.split_template(text)
    except ex.TemplateError as exc:
        return Literal(text), (), ((exc.code, str(exc)),)
    exprs: list[Expression] = []
    problems: list[tuple[str, str]] = []
    parts: list[str | Expression] = []
    for p in pieces:
        if isinstance(p, str):
            parts.append(p)
            continue
        expr, found = _checked(p.source)
        exprs.append(expr)
        problems.extend(found)
        parts.append(expr)
    value: BindingValue
    if len(parts) == 1 and isinstance(parts[0], Expression):
        value = parts[0]
    else:
        value = Template(tuple(parts))
    return value, tuple(exprs), tuple(problems)


# The hot path (every templated input of every task): lru_cache called directly, with
# the small_key_cache rule (no huge string is kept) inline, saving a Python frame.
_string = lru_cache(maxsize=32768)(_string_uncached)


def _compile_string(text: str, path: str, diags: Diagnostics, refs: Refs) -> BindingValue:
    value, exprs, problems = (_string if len(text) <= CACHED_CHARS else _string_uncached)(text)
    for code, message in problems:
        diags.error(code, path, message)
    for expr in exprs:
        refs.append((path, expr))
    return value


_PLAIN = frozenset({int, float, bool, type(None)})


def compile_bindings(
    values: dict[str, object], path: str, diags: Diagnostics, refs: Refs
) -> Bindings:
    """Bindings sorted by name; a plain literal is kept as its JSON value (`Bindings`)."""
    names = sorted(values)
    out: list[object] = []
    for name in names:
        v = values[name]
        t = type(v)
        if t is str:
            if ex.OPEN in v:  # type: ignore[operator]
                # compile_value's string case, without its dispatch (one per task).
                value = _compile_string(v, child(path, name), diags, refs)  # type: ignore[arg-type]
                out.append(value.value if isinstance(value, Literal) else value)
            else:
                out.append(v)
        elif t in _PLAIN:
            # A plain literal: same as compile_value, without formatting its path.
            out.append(v)
        else:
            value = compile_value(v, child(path, name), diags, refs)
            out.append(value.value if isinstance(value, Literal) else value)
    return Bindings(tuple(names), tuple(out))


def quiet_bindings(
    values: dict[str, object],
    quiet: Callable[[Expression], bool],
    known: dict[str, object] | None = None,
) -> Bindings | None:
    """`compile_bindings(values, ...)` when it would report nothing and every
    expression in `values` is one `quiet` accepts (the caller knows
    it needs no further check at this site: no task, variable or undeclared input
    read); else None, and the caller takes the general way. No path is formatted and
    no reference recorded: the common task (plain literals and a shared expression
    such as `${{ workflow.inputs.size }}`) costs one call instead of six.

    `known` (kept by the caller from task to task) remembers each templated string's
    verdict: its compiled value, or _LOUD; so a string that many tasks share costs
    one lookup after the first."""
    if known is None:
        known = {}
    names = sorted(values)
    out: list[object] = []
    for name in names:
        v = values[name]
        t = type(v)
        if t is str:
            if ex.OPEN in v:  # type: ignore[operator]
                hit = known.get(v)  # type: ignore[call-overload]
                if hit is None:
                    if len(v) > CACHED_CHARS:  # type: ignore[arg-type]
                        return None
                    hit = known[v] = _quiet_string(v, quiet)  # type: ignore[index, arg-type]
                if hit is _LOUD:
                    return None
                out.append(hit)
            else:
                out.append(v)
        elif t in _PLAIN:
            out.append(v)
        else:
            return None
    return Bindings(tuple(names), tuple(out))


_LOUD = object()  # a templated string quiet_bindings leaves to the general way


def _quiet_string(text: str, quiet: Callable[[Expression], bool]) -> object:
    """What `quiet_bindings` appends for a templated string, or _LOUD."""
    value, exprs, problems = _string(text)
    if problems or not all(map(quiet, exprs)):
        return _LOUD
    return value.value if type(value) is Literal else value


def compile_condition(when: str, path: str, diags: Diagnostics, refs: Refs) -> Expression | None:
    """A `when` field: bare CEL; a whole-string `${{ expr }}` wrapper is unwrapped."""
    source = when.strip()
    if not source:
        return None
    if source.startswith(ex.OPEN):
        try:
            pieces = ex.split_template(source)
        except ex.TemplateError as exc:
            diags.error(exc.code, path, str(exc))
            return None
        if len(pieces) == 1 and isinstance(pieces[0], ex.ExprPart):
            source = pieces[0].source
    return compile_expression(source, path, diags, refs)
