"""Expressions: `${{ }}` templates and CEL, shared by the planner and the executor.

Where expressions appear:

- `when` is a bare CEL expression (a `${{ expr }}` wrapper is tolerated).
- input, fallback/compensation input and workflow output values are JSON values whose
  strings may embed `${{ expr }}`. A string that is exactly one `${{ expr }}` is an
  *expression* (its value keeps its CEL type); any other string containing `${{` is a
  *template* (string interpolation); strings without `${{` are literals.

Public helpers (the executor reuses them):

- `split_template(text) -> tuple[str | ExprPart, ...]`: text pieces and `ExprPart`s in
  order; raises `TemplateError` on an unclosed `${{`. Closing `}}` inside CEL string
  literals or nested map literals does not end the expression.
- `is_plain(text) -> bool`: no `${{` at all (fast path, no parsing).
- `compile_cel(source) -> str | None`: None when the source parses, else a one-line
  error message. Cached by source string.
- `analyze_expression(source) -> Analysis`: what the expression reads, found with a
  small CEL tokenizer (the `cel` package only reports top-level variable names):
  `tasks.ID` / `tasks["ID"]` -> `reads_tasks`, `workflow.inputs.NAME` (or `["NAME"]`)
  -> `reads_inputs`, `execution` -> `reads_execution`, plus `problems` (code, message)
  for references the planner rejects whatever the workflow: unknown top-level
  variables, `tasks.x.foo` with foo not in TASK_FIELDS, `workflow.foo` other than
  `inputs`, and dynamic access (`tasks[k]`, bare `tasks`) that hides what is read.
  Comprehension variables (`list.exists(x, ...)`, `cel.bind(x, ...)`) are allowed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cel

TASK_FIELDS = frozenset({"output", "status", "error", "attempts"})
ROOTS = frozenset({"workflow", "tasks", "execution"})
# Names that may stand alone without being variables: literals and type names.
_BUILTIN_NAMES = frozenset(
    {
        "true",
        "false",
        "null",
        "in",
        "int",
        "uint",
        "double",
        "string",
        "bytes",
        "bool",
        "list",
        "map",
        "type",
        "null_type",
        "dyn",
        "google",
    }
)
_MACROS = frozenset(
    {"all", "exists", "exists_one", "map", "filter", "bind", "transformList", "transformMap"}
)

OPEN = "${{"
CLOSE = "}}"


class TemplateError(ValueError):
    """A `${{` without its closing `}}`, or an empty `${{ }}`."""


@dataclass(frozen=True, slots=True)
class ExprPart:
    """One `${{ source }}` segment of a template (source stripped of outer spaces)."""

    source: str


@dataclass(frozen=True, slots=True)
class Analysis:
    reads_tasks: tuple[str, ...]
    reads_inputs: tuple[str, ...]
    reads_execution: bool
    problems: tuple[tuple[str, str], ...]  # (code, message)


def is_plain(text: str) -> bool:
    return OPEN not in text


def _skip_string(text: str, i: int) -> int:
    """Index just past the CEL string literal whose quote is at text[i]."""
    q = text[i]
    triple = text.startswith(q * 3, i)
    end_quote = q * 3 if triple else q
    j = i + (3 if triple else 1)
    raw = (i > 0 and text[i - 1] in "rR") or (i > 1 and text[i - 2] in "rR" and text[i - 1] in "bB")
    n = len(text)
    while j < n:
        c = text[j]
        if c == "\\" and not raw:
            j += 2
            continue
        if text.startswith(end_quote, j):
            return j + len(end_quote)
        if c == "\n" and not triple:
            break
        j += 1
    raise TemplateError("unterminated string literal inside ${{ }}")


def _find_close(text: str, start: int) -> int:
    """Index of the `}}` closing an expression that starts at `start`, or -1."""
    depth = 0
    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if c in "'\"":
            i = _skip_string(text, i)
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            if depth == 0:
                return i if text.startswith(CLOSE, i) else -1
            depth -= 1
        i += 1
    return -1


@lru_cache(maxsize=65536)
def split_template(text: str) -> tuple[str | ExprPart, ...]:
    parts: list[str | ExprPart] = []
    pos = 0
    while True:
        at = text.find(OPEN, pos)
        if at < 0:
            if pos < len(text):
                parts.append(text[pos:])
            return tuple(parts)
        if at > pos:
            parts.append(text[pos:at])
        end = _find_close(text, at + len(OPEN))
        if end < 0:
            raise TemplateError(f"'${{{{' at offset {at} is not closed by '}}}}'")
        source = text[at + len(OPEN) : end].strip()
        if not source:
            raise TemplateError(f"empty '${{{{ }}}}' at offset {at}")
        parts.append(ExprPart(source))
        pos = end + len(CLOSE)


@lru_cache(maxsize=65536)
def compile_cel(source: str) -> str | None:
    try:
        cel.compile(source)
    except Exception as exc:  # the binding raises ValueError; anything else is a bad parse too
        msg = str(exc)
        for line in msg.splitlines():
            if "ERROR:" in line:
                return line[line.index("ERROR:") + len("ERROR:") :].strip()
        return msg.splitlines()[0] if msg else "expression does not parse"
    return None


# --- tokenizer ------------------------------------------------------------------------
# Token kinds: "id" (identifier), "str" (string literal, value decoded naively),
# "p" (punctuation, one char), "num" (number). Enough to follow member chains.


def _tokens(src: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    i = 0
    n = len(src)
    while i < n:
        c = src[i]
        if c.isspace():
            i += 1
        elif c == "/" and src.startswith("//", i):
            nl = src.find("\n", i)
            i = n if nl < 0 else nl
        elif c in "'\"":
            start = i
            try:
                i = _skip_string(src, i)
            except TemplateError:
                i = n
            body = src[start:i]
            q = 3 if body[:3] in ("'''", '"""') else 1
            out.append(("str", body[q : len(body) - q]))
        elif c.isalpha() or c == "_":
            j = i + 1
            while j < n and (src[j].isalnum() or src[j] == "_"):
                j += 1
            word = src[i:j]
            # r"..", b"..", rb"..": a prefix glued to a quote is part of the literal.
            if j < n and src[j] in "'\"" and word.lower() in ("r", "b", "rb", "br"):
                i = j
                continue
            out.append(("id", word))
            i = j
        elif c.isdigit():
            j = i + 1
            while j < n and (src[j].isalnum() or src[j] in "._"):
                if src[j] == "." and not (j + 1 < n and src[j + 1].isdigit()):
                    break
                j += 1
            out.append(("num", src[i:j]))
            i = j
        elif c == "`":  # quoted field name: `a.\`b-c\``
            j = src.find("`", i + 1)
            j = n if j < 0 else j + 1
            out.append(("id", src[i + 1 : j - 1]))
            i = j
        else:
            out.append(("p", c))
            i += 1
    return out


def _bound_variables(toks: list[tuple[str, str]]) -> set[str]:
    """Comprehension / bind variables: `.exists(x, ...)`, `.all(i, v, ...)`, `bind(x, ..`."""
    bound: set[str] = set()
    for k in range(len(toks) - 3):
        is_macro = toks[k][0] == "id" and toks[k][1] in _MACROS and toks[k + 1] == ("p", "(")
        if is_macro and toks[k + 2][0] == "id" and toks[k + 3] == ("p", ","):
            bound.add(toks[k + 2][1])
            if k + 5 < len(toks) and toks[k + 4][0] == "id" and toks[k + 5] == ("p", ","):
                bound.add(toks[k + 4][1])
    return bound


def _member(toks: list[tuple[str, str]], k: int) -> tuple[str | None, int, bool]:
    """Key accessed at toks[k] (`.name` or `["name"]`): (key, next index, dynamic)."""
    if k < len(toks) and toks[k] == ("p", "."):
        if k + 1 < len(toks) and toks[k + 1][0] == "id":
            return toks[k + 1][1], k + 2, False
        return None, k + 1, False
    if k < len(toks) and toks[k] == ("p", "["):
        if k + 2 < len(toks) and toks[k + 1][0] == "str" and toks[k + 2] == ("p", "]"):
            return toks[k + 1][1], k + 3, False
        return None, k + 1, True
    return None, k, False


@lru_cache(maxsize=65536)
def analyze_expression(source: str) -> Analysis:
    toks = _tokens(source)
    bound = _bound_variables(toks)
    tasks: set[str] = set()
    inputs: set[str] = set()
    reads_execution = False
    problems: list[tuple[str, str]] = []
    for k, (kind, word) in enumerate(toks):
        if kind != "id" or (k > 0 and toks[k - 1] == ("p", ".")):
            continue
        if k + 1 < len(toks) and toks[k + 1] == ("p", "("):
            continue  # a global function call such as size(...) or has(...)
        if word == "execution":
            reads_execution = True
        elif word == "tasks":
            task, nxt, _ = _member(toks, k + 1)
            if task is None:
                problems.append(
                    (
                        "dynamic-reference",
                        'read tasks by a literal id (tasks.ID or tasks["ID"]): '
                        "the planner must know which tasks an expression reads",
                    )
                )
                continue
            tasks.add(task)
            field, _, _ = _member(toks, nxt)
            if field is not None and field not in TASK_FIELDS:
                problems.append(
                    (
                        "unknown-reference",
                        f"tasks.{task}.{field}: a task has only {', '.join(sorted(TASK_FIELDS))}",
                    )
                )
        elif word == "workflow":
            field, nxt, _ = _member(toks, k + 1)
            if field != "inputs":
                what = "workflow" if field is None else f"workflow.{field}"
                problems.append(("unknown-reference", f"{what}: only workflow.inputs is defined"))
                continue
            name, _, _ = _member(toks, nxt)
            if name is None:
                problems.append(
                    (
                        "dynamic-reference",
                        "read inputs by a literal name (workflow.inputs.NAME)",
                    )
                )
            else:
                inputs.add(name)
        elif word not in bound and word not in _BUILTIN_NAMES:
            problems.append(
                (
                    "unknown-reference",
                    f"unknown variable {word!r}: expressions read workflow, tasks, execution",
                )
            )
    return Analysis(tuple(sorted(tasks)), tuple(sorted(inputs)), reads_execution, tuple(problems))
