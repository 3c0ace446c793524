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
- `check_expression_bounds(source) -> tuple[code, message] | None`: the size, nesting,
  depth and comprehension bounds (see "Bounds" below). The one gate in front of the
  `cel` library: the planner reports its answer as a diagnostic and the executor must
  refuse to compile any source it rejects.
- `compile_cel(source) -> str | None`: None when the source parses, else a one-line
  error message (also for a source over the bounds, which never reaches `cel`).
- `analyze_expression(source) -> Analysis`: what the expression reads, found with a
  small CEL tokenizer (the `cel` package only reports top-level variable names):
  `tasks.ID` / `tasks["ID"]` -> `reads_tasks`, `workflow.inputs.NAME` (or `["NAME"]`)
  -> `reads_inputs`, `execution` -> `reads_execution`, the runtime VARIABLES used
  (`item`, `index`, `iteration`, `previous`, `output`) -> `reads_variables` (where
  each is defined is the caller's rule: `variables.py`), plus `problems` (code, message)
  for references the planner rejects whatever the workflow: unknown top-level
  variables, `tasks.x.foo` with foo not in TASK_FIELDS, `workflow.foo` other than
  `inputs`, and dynamic access (`tasks[k]`, bare `tasks`) that hides what is read.
  Comprehension variables (`list.exists(x, ...)`, `cel.bind(x, ...)`) are allowed.
- `analyze_key_expression(source) -> Analysis`: the same for the expressions of a
  task's flow control (limit, rate-limit, breaker and cache keys, rate-limit units),
  which read `inputs` (the task's resolved inputs), `workflow.inputs` and
  `execution`, and never `tasks` (a key is computed before the task runs, from what
  it was given).

Bounds. The `cel` library (Rust) parses and evaluates recursively on the native
stack: a chain of 15,000 `+ 1` terms or `.b` accesses overflows an 8 MiB stack and
kills the process (SIGSEGV, nothing to catch), and a parse error past column 65,535
panics. So every source is first checked by a linear pre-scan of our own:

    MAX_EXPRESSION_BYTES       16 KiB of UTF-8                 expression-too-large
    MAX_EXPRESSION_NESTING     32 nested (), [] or {}          expression-too-deep
    MAX_EXPRESSION_DEPTH       500 chained operators, `.`/`[]` accesses and calls
                               along any path of the syntax tree   expression-too-deep
    MAX_COMPREHENSION_NESTING  2 nested iterating macros (all, exists, exists_one,
                               map, filter, ...): three nested over 1,000-element
                               lists already cost 10^9 steps     expression-too-costly

The depth is an upper bound computed without parsing: operators and accesses are
counted per comma-separated operand, plus the deepest bracket group inside it. At
~1 KiB of native stack per level when evaluating (measured), 500 levels stay well
inside even a 1 MiB thread stack.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from execplan.errors import is_native_panic
from execplan.planner._cel import cel
from execplan.planner.cache import small_key_cache
from execplan.planner.diagnostics import clip, echo

TASK_FIELDS = frozenset({"output", "status", "error", "attempts"})
ROOTS = frozenset({"workflow", "tasks", "execution"})
# Variables a task's expressions may read at run time, each only where it is defined
# (for_each: item, index; repeat: iteration, previous, and output in until).
VARIABLES = frozenset({"item", "index", "iteration", "previous", "output"})
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
# The macros that iterate over a list or map (`bind` does not).
_ITERATING = _MACROS - {"bind"}

MAX_EXPRESSION_BYTES = 16 * 1024
MAX_EXPRESSION_NESTING = 32
MAX_EXPRESSION_DEPTH = 500
MAX_COMPREHENSION_NESTING = 2


OPEN = "${{"
CLOSE = "}}"


class TemplateError(ValueError):
    """A `${{` without its closing `}}`, an empty `${{ }}`, or (code
    `expression-too-large`) a `${{` whose expression runs past MAX_EXPRESSION_BYTES."""

    def __init__(self, message: str, code: str = "invalid-template") -> None:
        super().__init__(message)
        self.code = code


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
    reads_variables: tuple[str, ...] = ()


def is_plain(text: str) -> bool:
    return OPEN not in text


def _skip_string(text: str, i: int, n: int | None = None) -> int:
    """Index just past the CEL string literal whose quote is at text[i]; -1 when it
    runs past index `n` (a window shorter than the text)."""
    q = text[i]
    triple = text.startswith(q * 3, i)
    end_quote = q * 3 if triple else q
    j = i + (3 if triple else 1)
    raw = (i > 0 and text[i - 1] in "rR") or (i > 1 and text[i - 2] in "rR" and text[i - 1] in "bB")
    n = len(text) if n is None else n
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
    else:
        if n < len(text):
            return -1  # the window ended first
    raise TemplateError("unterminated string literal inside ${{ }}")


def _find_close(text: str, start: int, n: int) -> int:
    """Index of the `}}` closing an expression that starts at `start`; -1 if there is
    none, -2 if the search reached index `n` first (a window shorter than the text)."""
    depth = 0
    i = start
    while i < n:
        c = text[i]
        if c in "'\"":
            i = _skip_string(text, i, n)
            if i < 0:
                return -2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            if depth == 0:
                return i if text.startswith(CLOSE, i) else -1
            depth -= 1
        i += 1
    return -1 if n == len(text) else -2


@small_key_cache(maxsize=32768)
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
        # No expression may be longer than MAX_EXPRESSION_BYTES, so the search for its
        # end stops there: a `${{` in a 50 MB string costs 16 KiB of scanning, not 50 MB.
        start = at + len(OPEN)
        end = _find_close(text, start, min(len(text), start + MAX_EXPRESSION_BYTES + len(CLOSE)))
        if end < 0:
            if end == -2:
                raise TemplateError(
                    f"the expression at offset {at} is longer than {MAX_EXPRESSION_BYTES} bytes",
                    "expression-too-large",
                )
            raise TemplateError(f"'${{{{' at offset {at} is not closed by '}}}}'")
        source = text[at + len(OPEN) : end].strip()
        if not source:
            raise TemplateError(f"empty '${{{{ }}}}' at offset {at}")
        parts.append(ExprPart(source))
        pos = end + len(CLOSE)


# --- bounds ---------------------------------------------------------------------------

_SCAN = re.compile(
    r"""
    (?P<skip>\s+|//[^\n]*)
    |(?P<quote>[rRbB]{0,2}['"])
    |(?P<ident>[A-Za-z_][A-Za-z0-9_]*|`[^`]*`)
    |(?P<number>\d\w*(?:\.\d\w*)?)   # `1.5e3`, `0xFF`, `7u`; never `1.b`: a member access
    |(?P<op>[-+*/%<>=!&|?:]+|\.)
    |(?P<open>[(\[{])
    |(?P<close>[)\]}])
    |(?P<comma>,)
    """,
    re.VERBOSE,
)


def check_expression_bounds(source: str) -> tuple[str, str] | None:
    """(code, message) when `source` is over a bound, else None. Linear time; never
    calls into `cel`. See "Bounds" in the module docstring."""
    n = len(source)
    if (
        n > MAX_EXPRESSION_BYTES
        or len(source.encode("utf-8", "surrogatepass")) > MAX_EXPRESSION_BYTES
    ):
        return (
            "expression-too-large",
            f"expression is longer than {MAX_EXPRESSION_BYTES} bytes "
            f"({n:,} characters); split it or compute the value in a task",
        )
    opens = source.count("(") + source.count("[") + source.count("{")
    if (
        n <= MAX_EXPRESSION_DEPTH  # every counted token is at least one character
        and opens <= MAX_EXPRESSION_NESTING
        and sum(source.count(m) for m in _ITERATING) <= MAX_COMPREHENSION_NESTING
    ):
        return None  # nothing to count: the common case costs a few str.count calls
    return _scan_bounds(source)


def _scan_bounds(source: str) -> tuple[str, str] | None:
    # One frame per open bracket: the enclosing operand's (count, deepest child),
    # the group's deepest operand so far, and whether it opened an iterating macro.
    stack: list[tuple[int, int, int, bool]] = []
    own = child = group = 0  # current operand: its operators, its deepest group
    base = 0  # the operators of every enclosing operand: they are on the same path
    comprehensions = 0
    prev = prev2 = ""  # the last two significant tokens, to spot `.all(`
    pos, n = 0, len(source)
    while pos < n:
        m = _SCAN.match(source, pos)
        if m is None:
            pos += 1  # a character CEL will reject; not ours to report
            continue
        kind = m.lastgroup
        pos = m.end()
        if kind == "skip":
            continue
        if kind == "quote":
            try:
                pos = _skip_string(source, pos - 1)
            except TemplateError:
                break  # unterminated: CEL reports it
        elif kind == "op":
            own += 1
        elif kind == "open":
            own += 1
            macro = m.group() == "(" and prev2 == "." and prev in _ITERATING
            stack.append((own, child, group, macro))
            base += own
            own = child = group = 0
            if len(stack) > MAX_EXPRESSION_NESTING:
                return (
                    "expression-too-deep",
                    f"expression nests brackets more than {MAX_EXPRESSION_NESTING} deep",
                )
            if macro:
                comprehensions += 1
                if comprehensions > MAX_COMPREHENSION_NESTING:
                    return (
                        "expression-too-costly",
                        f"more than {MAX_COMPREHENSION_NESTING} nested comprehensions "
                        f"({prev}(...) inside another); their cost multiplies: "
                        "flatten the data in a task first",
                    )
        elif kind == "close" and stack:
            deepest = max(group, own + child)
            own, child, group, macro = stack.pop()
            base -= own
            child = max(child, deepest)
            comprehensions -= macro
        elif kind == "comma":
            group = max(group, own + child)
            own = child = 0
        if base + own + child > MAX_EXPRESSION_DEPTH:
            return (
                "expression-too-deep",
                f"expression chains more than {MAX_EXPRESSION_DEPTH} operators, "
                "member accesses and calls; shorten it",
            )
        prev2, prev = prev, m.group()
    return None


# A `cel.compile` error message has one `ERROR: <input>:line:col: message` line.
_MAX_ERROR_CHARS = 300


@small_key_cache(maxsize=32768)
def compile_cel(source: str) -> str | None:
    problem = check_expression_bounds(source)
    if problem is not None:
        return problem[1]
    if plainly_parses(source):
        return None
    try:
        cel.compile(source)
    except Exception as exc:  # the binding raises ValueError; anything else is a bad parse too
        return _parse_error(str(exc))
    except BaseException as exc:
        if not is_native_panic(exc):
            raise
        return _parse_error(f"the expression library failed: {exc}")
    return None


# A chain of operands joined by binary operators: names with member accesses
# (`tasks.a.output.value`) and decimal integers that fit an int64, nothing else (no
# literals but those, no calls, brackets, unary operators or `in`). Whitespace is
# CEL's own. Every source this matches parses (tests/planner: a property test
# against the library), so `compile_cel` need not ask the library: ~12 us of
# `cel.compile` per distinct expression, ~0.1 s on the first compile of a workflow
# of 10,000 distinct ones. Anything else, or a name CEL reserves, is for the library.
_SPACE = r"[ \t\r\n]*"
_OPERAND = r"(?:[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*|0|[1-9][0-9]{0,17})"
_OPERATOR = r"(?:[-+*/%]|[=!]=|[<>]=?|&&|\|\|)"
_PLAIN_CEL = re.compile(f"{_SPACE}{_OPERAND}(?:{_SPACE}{_OPERATOR}{_SPACE}{_OPERAND})*{_SPACE}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# CEL's reserved words and the literals spelled as names: left to the library.
_RESERVED = frozenset(
    {
        "as", "break", "const", "continue", "else", "false", "for", "function", "if",
        "import", "in", "let", "loop", "namespace", "null", "package", "return", "true",
        "var", "void", "while",
    }
)  # fmt: skip


def plainly_parses(source: str) -> bool:
    """Whether `source` is one of the expressions that need no parser to be known to
    parse (see _PLAIN_CEL); False says nothing."""
    return _PLAIN_CEL.fullmatch(source) is not None and _RESERVED.isdisjoint(_NAME.findall(source))


def _parse_error(msg: str) -> str:
    for line in msg.splitlines():
        if "ERROR:" in line:
            msg = line[line.index("ERROR:") + len("ERROR:") :].strip()
            break
    else:
        msg = msg.splitlines()[0] if msg else "expression does not parse"
    if len(msg) > _MAX_ERROR_CHARS:
        msg = msg[:_MAX_ERROR_CHARS] + f"…({len(msg)} chars)"
    return msg


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


@small_key_cache(maxsize=32768)
def analyze_expression(source: str) -> Analysis:
    return _analyze(source, key_scope=False)


KEY_ROOTS = frozenset({"inputs", "workflow", "execution"})


@small_key_cache(maxsize=4096)
def analyze_key_expression(source: str) -> Analysis:
    return _analyze(source, key_scope=True)


def _analyze(source: str, *, key_scope: bool) -> Analysis:
    toks = _tokens(source)
    bound = _bound_variables(toks)
    tasks: set[str] = set()
    inputs: set[str] = set()
    variables: set[str] = set()
    reads_execution = False
    problems: list[tuple[str, str]] = []
    for k, (kind, word) in enumerate(toks):
        if kind != "id" or (k > 0 and toks[k - 1] == ("p", ".")):
            continue
        if k + 1 < len(toks) and toks[k + 1] == ("p", "("):
            continue  # a global function call such as size(...) or has(...)
        if word == "execution":
            reads_execution = True
        elif key_scope and word == "inputs":
            continue  # the task's own resolved inputs: any field may be read
        elif key_scope and word == "tasks":
            problems.append(
                (
                    "unknown-reference",
                    "a flow-control key reads inputs, workflow.inputs and execution, "
                    "not tasks: pass what it needs through the task's inputs",
                )
            )
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
                        f"tasks.{clip(task)}.{clip(field)}: a task has only "
                        + ", ".join(sorted(TASK_FIELDS)),
                    )
                )
        elif word == "workflow":
            field, nxt, _ = _member(toks, k + 1)
            if field != "inputs":
                what = "workflow" if field is None else f"workflow.{field}"
                problems.append(
                    ("unknown-reference", f"{clip(what)}: only workflow.inputs is defined")
                )
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
        elif word in bound or word in _BUILTIN_NAMES:
            continue
        elif word in VARIABLES:
            variables.add(word)
        else:
            problems.append(
                (
                    "unknown-reference",
                    f"unknown variable {echo(word)}: "
                    + (
                        "keys read inputs, workflow.inputs, execution"
                        if key_scope
                        else "expressions read workflow, tasks, execution (and item, "
                        "index, iteration, previous, output where defined)"
                    ),
                )
            )
    return Analysis(
        tuple(sorted(tasks)),
        tuple(sorted(inputs)),
        reads_execution,
        tuple(problems),
        tuple(sorted(variables)),
    )


def free_variables(source: str) -> tuple[str, ...]:
    """The top-level variables `source` reads, sorted: identifiers that are neither
    members (`a.b`'s b), function names, comprehension variables nor literals.
    For expressions with their own scope (a task's `estimate` reads `inputs`)."""
    toks = _tokens(source)
    bound = _bound_variables(toks)
    found: set[str] = set()
    for k, (kind, word) in enumerate(toks):
        if kind != "id" or (k > 0 and toks[k - 1] == ("p", ".")):
            continue
        if k + 1 < len(toks) and toks[k + 1] == ("p", "("):
            continue
        if word not in bound and word not in _BUILTIN_NAMES:
            found.add(word)
    return tuple(sorted(found))
