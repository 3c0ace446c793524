"""Coded diagnostics: what every planner phase reports instead of raising.

A `Diagnostic` names a stable `code` (e.g. "unknown-dependency"), the exact field
`path` in the document (`tasks[3].depends_on[0]`), a one-line human `message` and a
`severity` ("error" or "warning"). Phases append to a `Diagnostics` collector and keep
going, so one compile reports every problem at once; `sorted_diagnostics` gives the
order every caller sees: by path (numbers compared as numbers, so `tasks[2]` comes
before `tasks[10]`), then code, then message.

Codes (errors unless noted):

    invalid-syntax            the text is not YAML/JSON
    limit-document-size       text larger than parse.MAX_DOCUMENT_BYTES (64 MiB)
    limit-tasks               more than parse.MAX_TASKS (100,000) tasks
    unknown-field             a field the proto does not have (with a did-you-mean hint)
    invalid-type              wrong JSON type, out-of-range number, non-string map key
    missing-required          workflow name, task id/type, fallback/compensation type
    unknown-enum              on_failure, input type, breaker on_open not recognised
    unknown-trigger           trigger not one of all_success/all_done/one_success/all_failed
    invalid-duration          not `250ms`/`1h30m`/`"1.500s"` (also builtin durations)
    invalid-quantity          cpu/memory not a Kubernetes quantity, gpu < 0
    invalid-retry             max_attempts < 1, backoff_coefficient < 1, jitter outside
                              0..1, max_interval < initial_interval
    invalid-circuit-breaker   failure_threshold/half_open_max_calls < 1, rate outside 0..1
    invalid-id                task id, input name, secret name, workflow name
    duplicate-id              a task id used twice (points at the later one)
    unknown-dependency        depends_on names no task
    self-dependency           depends_on itself, or inputs/when read the task itself
    cycle                     one per cycle: message `a > b > c > a`, path at the
                              depends_on entry (or expression) that closes it
    invalid-template          unclosed or empty `${{ }}`
    invalid-expression        CEL does not parse (one-line message with position)
    expression-too-large      an expression over MAX_EXPRESSION_BYTES (16 KiB)
    expression-too-deep       brackets nested over 32, or over 500 chained operators,
                              accesses and calls (expressions.py, "Bounds")
    expression-too-costly     more than 2 nested comprehensions (all, exists, map, ...)
    unknown-reference         unknown task / undeclared input / tasks.x.<not a field> /
                              unknown variable
    dynamic-reference         tasks[k] or workflow.inputs[k] with a non-literal key
    invalid-input-default     default does not match the input's declared type
    required-input-undeclared a required input without a type
    required-input-default    (warning) a required input's default is never used
    builtin-invalid           builtin.sleep without duration, builtin.wait_for_event
                              without event, unknown builtin.*
    unreachable               a trigger rule that can never fire (validate_reachability)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

ERROR = "error"
WARNING = "warning"

_DIGITS = re.compile(r"(\d+)")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem found in a workflow document."""

    code: str
    path: str
    message: str
    severity: str = ERROR

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR


def _natural(path: str) -> tuple[tuple[int, int | str], ...]:
    # Each chunk is tagged so ints and strs never get compared with each other.
    return tuple(
        (1, int(chunk)) if chunk.isdigit() else (0, chunk) for chunk in _DIGITS.split(path) if chunk
    )


def sort_key(d: Diagnostic) -> tuple[tuple[tuple[int, int | str], ...], str, str]:
    return (_natural(d.path), d.code, d.message)


def sorted_diagnostics(diags: Iterable[Diagnostic]) -> tuple[Diagnostic, ...]:
    """Deduplicated and in the natural (path, code, message) order."""
    return tuple(sorted(set(diags), key=sort_key))


@lru_cache(maxsize=4096)
def _suffix(key: str) -> str:
    if _IDENT.fullmatch(key):
        return "." + key
    quoted = key.replace("\\", "\\\\").replace('"', '\\"')
    return f'["{quoted}"]'


def child(path: str, key: str) -> str:
    """Path of a map entry or field: `a.b`, or `a["odd key"]` when not an identifier."""
    suffix = _suffix(key)
    if not path and suffix[0] == ".":
        return key
    return path + suffix


class Diagnostics:
    """Append-only collector shared by the phases of one compile."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []

    def error(self, code: str, path: str, message: str) -> None:
        self.items.append(Diagnostic(code, path, message, ERROR))

    def warning(self, code: str, path: str, message: str) -> None:
        self.items.append(Diagnostic(code, path, message, WARNING))

    @property
    def has_errors(self) -> bool:
        return any(d.severity == ERROR for d in self.items)
