"""The filter language of ListExecutions and PurgeExecutions: clauses joined by AND.

    f = parse('customer = "acme" AND state IN (running, paused) AND created_at >= 2026-01-01')
    f.clauses[0]   # Clause("customer", attribute=True, op="=", kind="string", values=("acme",))
    matches(f, record, attributes)                         # what the SQL does, in Python

Grammar (keywords case-insensitive)::

    filter  := clause ( AND clause )*
    clause  := field op value  |  field [NOT] IN "(" value ( "," value )* ")"
    op      := "=" | "!=" | "<" | "<=" | ">" | ">="
    value   := "string" | 'string' | number | true | false | time | word

Fields: `state` (a state name: running, succeeded...), `workflow` (or
`workflow_name`), `execution_id`, `plan_id`, `fairness_key`, `created_at`,
`updated_at`, `finished_at` (only finished executions have one); any other name is a
search attribute, and `attr.NAME` always is (for an attribute named like a field).
Times are RFC 3339 written bare: `2026-01-01`, `2026-01-01T12:00:00Z`,
`2026-01-01T12:00:00.250+02:00`. A bare word is a string (`workflow = nightly`).

Types decide what a clause can match: a string literal matches string attributes, a
number int and double ones (compared as doubles), true/false bool ones, a time time
ones. A clause on an attribute matches only executions that have it with a value of
that type (`customer != "acme"` does not match executions without `customer`).
Strings and bools compare with =, != and IN only; numbers and times with all.

Bounds: at most 4,096 characters, 20 clauses and 100 values in one IN; every error
is INVALID_ARGUMENT naming the field (`filter`) and the column where it went wrong.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from execplan.errors import FieldViolation, InvalidArgument
from execplan.v1 import execution_pb2

from .attributes import MAX_NAME_CHARS, MAX_STRING_BYTES, NAME, SearchValue, format_time

MAX_CHARS = 4096
MAX_CLAUSES = 20
MAX_IN_VALUES = 100

STATES: frozenset[str] = frozenset(
    name.removeprefix("EXECUTION_STATE_")
    for name, _ in execution_pb2.ExecutionState.items()
    if name != "EXECUTION_STATE_UNSPECIFIED"
)
COMPARE = ("=", "!=", "<", "<=", ">", ">=")
EQUALITY = ("=", "!=", "in", "not in")

# field name -> (column, literal kind). "finished_at" is updated_at of a finished one.
COLUMNS: Mapping[str, tuple[str, str]] = {
    "state": ("state", "state"),
    "workflow": ("workflow_name", "string"),
    "workflow_name": ("workflow_name", "string"),
    "execution_id": ("execution_id", "string"),
    "plan_id": ("plan_id", "string"),
    "fairness_key": ("fairness_key", "string"),
    "created_at": ("created_at_ms", "time"),
    "updated_at": ("updated_at_ms", "time"),
    "finished_at": ("updated_at_ms", "time"),
}

Scalar = str | int | float | bool


@dataclass(frozen=True, slots=True)
class Clause:
    """One condition. `field` is a column of the executions index (`attribute`
    False) or a search attribute's name. `kind` is the literal's: "string",
    "number", "bool", "time" (values in ms) or "state" (upper-case names)."""

    field: str
    attribute: bool
    op: str  # one of COMPARE, "in", "not in"
    kind: str
    values: tuple[Scalar, ...]
    # finished_at: only executions in a terminal state match.
    finished: bool = False


@dataclass(frozen=True, slots=True)
class Filter:
    clauses: tuple[Clause, ...] = ()
    text: str = ""

    def __bool__(self) -> bool:
        return bool(self.clauses)


EMPTY = Filter()

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<time>\d{4}-\d{2}-\d{2}(?:[Tt]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:[Zz]|[+-]\d{2}:\d{2}))?)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)
  | (?P<op>!=|<=|>=|==|=|<|>)
  | (?P<punct>[(),])
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "/": "/"}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str
    column: int  # 1-based


def _error(column: int, message: str) -> InvalidArgument:
    return InvalidArgument(
        f"bad filter: {message} (column {column})",
        [FieldViolation("filter", f"column {column}: {message}")],
    )


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise _error(position + 1, f"unexpected character {text[position]!r}")
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(_Token(kind, match.group(), position + 1))
        position = match.end()
    return tokens


def parse(text: str, field: str = "filter") -> Filter:
    """The filter `text` means ("" = no filter); InvalidArgument naming `field`."""
    try:
        return _parse(text)
    except InvalidArgument as exc:
        if field == "filter":
            raise
        renamed = [FieldViolation(field, v.description) for v in exc.violations]
        raise InvalidArgument(str(exc), renamed) from None


def _parse(text: str) -> Filter:
    if len(text) > MAX_CHARS:
        raise _error(MAX_CHARS + 1, f"a filter is at most {MAX_CHARS} characters")
    tokens = _tokens(text)
    if not tokens:
        return EMPTY
    parser = _Parser(tokens, len(text) + 1)
    clauses = [parser.clause()]
    while not parser.at_end():
        parser.keyword("AND")
        if len(clauses) == MAX_CLAUSES:
            raise _error(parser.column(), f"at most {MAX_CLAUSES} clauses")
        clauses.append(parser.clause())
    return Filter(tuple(clauses), text)


class _Parser:
    def __init__(self, tokens: Sequence[_Token], end_column: int) -> None:
        self._tokens = tokens
        self._at = 0
        self._end = end_column

    def at_end(self) -> bool:
        return self._at >= len(self._tokens)

    def column(self) -> int:
        return self._end if self.at_end() else self._tokens[self._at].column

    def _next(self, expected: str) -> _Token:
        if self.at_end():
            raise _error(self._end, f"expected {expected}, found the end")
        token = self._tokens[self._at]
        self._at += 1
        return token

    def _peek_word(self, word: str) -> bool:
        if self.at_end():
            return False
        token = self._tokens[self._at]
        return token.kind == "word" and token.text.upper() == word

    def keyword(self, word: str) -> None:
        token = self._next(word)
        if token.kind != "word" or token.text.upper() != word:
            hint = (
                " (there is no OR: use IN for one of several values)"
                if token.text.upper() == "OR"
                else ""
            )
            raise _error(token.column, f"expected {word}, found {token.text!r}{hint}")

    def clause(self) -> Clause:
        token = self._next("a field name")
        if token.kind != "word" or token.text.upper() in ("AND", "IN", "NOT"):
            raise _error(token.column, f"expected a field name, found {token.text!r}")
        field = _Field.of(token)
        if self._peek_word("NOT") or self._peek_word("IN"):
            negated = self._peek_word("NOT")
            if negated:
                self._at += 1
            self.keyword("IN")
            values = self._list()
            op = "not in" if negated else "in"
        else:
            op_token = self._next("an operator")
            if op_token.kind != "op":
                raise _error(op_token.column, f"expected an operator, found {op_token.text!r}")
            op = "=" if op_token.text == "==" else op_token.text
            values = [self._value()]
        return field.clause(op, values, token.column)

    def _list(self) -> list[_Token]:
        opening = self._next("(")
        if opening.text != "(":
            raise _error(opening.column, f"expected '(', found {opening.text!r}")
        values = [self._value()]
        while True:
            token = self._next("',' or ')'")
            if token.text == ")":
                return values
            if token.text != ",":
                raise _error(token.column, f"expected ',' or ')', found {token.text!r}")
            if len(values) == MAX_IN_VALUES:
                raise _error(token.column, f"at most {MAX_IN_VALUES} values in IN")
            values.append(self._value())

    def _value(self) -> _Token:
        token = self._next("a value")
        if token.kind in ("op", "punct"):
            raise _error(token.column, f"expected a value, found {token.text!r}")
        return token


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    attribute: bool
    kind: str  # the column's literal kind; "" for attributes (decided by the literal)
    finished: bool
    label: str  # as the caller wrote it, for messages

    @classmethod
    def of(cls, token: _Token) -> _Field:
        text = token.text
        if text.startswith("attr."):
            return cls._attribute(text.removeprefix("attr."), token.column, text)
        if "." in text:
            raise _error(token.column, f"unknown field {text!r} (attributes are attr.NAME)")
        known = COLUMNS.get(text.lower())
        if known is not None:
            column, kind = known
            return cls(column, False, kind, text.lower() == "finished_at", text)
        return cls._attribute(text, token.column, text)

    @classmethod
    def _attribute(cls, name: str, column: int, label: str) -> _Field:
        if len(name) > MAX_NAME_CHARS or not NAME.match(name):
            raise _error(column, f"{name[:MAX_NAME_CHARS]!r} is not a search attribute name")
        return cls(name, True, "", False, label)

    def clause(self, op: str, tokens: Sequence[_Token], column: int) -> Clause:
        literals = [_literal(t, self.kind) for t in tokens]
        kinds = {kind for kind, _ in literals}
        if len(kinds) > 1:
            raise _error(tokens[0].column, "the values of one IN must have one type")
        kind = kinds.pop()
        if self.kind and kind != self.kind:
            raise _error(
                tokens[0].column, f"{self.label} compares with a {self.kind}, not a {kind}"
            )
        if kind in ("string", "bool", "state") and op not in EQUALITY:
            raise _error(column, f"a {kind} compares only with =, != and IN")
        return Clause(
            self.name, self.attribute, op, kind, tuple(v for _, v in literals), self.finished
        )


def _literal(token: _Token, column_kind: str) -> tuple[str, Scalar]:
    if token.kind == "string":
        value = _unquote(token)
        if column_kind == "state":
            return "state", _state(value, token)
        if len(value.encode()) > MAX_STRING_BYTES:
            raise _error(token.column, f"a string is at most {MAX_STRING_BYTES} bytes")
        return "string", value
    if token.kind == "number":
        number = float(token.text)
        if not math.isfinite(number):
            raise _error(token.column, f"{token.text} is not a finite number")
        is_int = re.fullmatch(r"-?\d+", token.text) is not None
        return "number", int(token.text) if is_int else number
    if token.kind == "time":
        return "time", _time(token)
    lowered = token.text.lower()
    if column_kind == "state":
        return "state", _state(token.text, token)
    if lowered in ("true", "false"):
        return "bool", lowered == "true"
    return "string", token.text


def _state(text: str, token: _Token) -> str:
    name = text.upper().removeprefix("EXECUTION_STATE_")
    if name not in STATES:
        known = ", ".join(sorted(s.lower() for s in STATES))
        raise _error(token.column, f"unknown state {text!r}; one of {known}")
    return name


def _time(token: _Token) -> int:
    text = token.text.replace("t", "T").replace("z", "Z")
    if "T" not in text:
        text += "T00:00:00Z"
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # fromisoformat takes at most microseconds: cut nanoseconds.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise _error(token.column, f"{token.text!r} is not a valid time: {exc}") from None
    return int(when.astimezone(UTC).timestamp() * 1000)


def _unquote(token: _Token) -> str:
    body = token.text[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        escape = body[i + 1]
        if escape == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[i + 2 : i + 6]):
            out.append(chr(int(body[i + 2 : i + 6], 16)))
            i += 6
        elif escape in _ESCAPES:
            out.append(_ESCAPES[escape])
            i += 2
        else:
            raise _error(token.column + i + 1, f"unknown escape \\{escape}")
    return "".join(out)


# -- evaluation in Python (the memory store; the SQL backends compile the same) -------


def compare(op: str, left: Scalar, values: Sequence[Scalar]) -> bool:
    if op == "in":
        return left in values
    if op == "not in":
        return left not in values
    right = values[0]
    if op == "=":
        return left == right
    if op == "!=":
        return left != right
    if isinstance(left, str | bool) or isinstance(right, str | bool):
        return False  # the parser allows ordering on numbers and times only
    if op == "<":
        return left < right
    if op == "<=":
        return left <= right
    if op == ">":
        return left > right
    return left >= right


def attribute_matches(clause: Clause, value: SearchValue | None) -> bool:
    """Does an execution whose attribute `clause.field` is `value` match `clause`?"""
    if value is None:
        return False
    if clause.kind == "number":
        if value.kind not in ("int", "double"):
            return False
        return compare(clause.op, float(value.value), [float(v) for v in clause.values])
    if value.kind != clause.kind:
        return False
    return compare(clause.op, value.value, clause.values)


def describe(clause: Clause) -> str:
    """A clause written back as text (for messages and tests)."""

    def show(value: Scalar) -> str:
        if clause.kind == "time":
            return format_time(int(value))
        if clause.kind == "string":
            return SearchValue("string", value).text()
        return str(value).lower() if isinstance(value, bool) else str(value)

    shown = [show(v) for v in clause.values]
    if clause.op in ("in", "not in"):
        return f"{clause.field} {clause.op.upper()} ({', '.join(shown)})"
    return f"{clause.field} {clause.op} {shown[0]}"


def matches(
    f: Filter,
    columns: Mapping[str, Scalar],
    attributes: Mapping[str, SearchValue],
    *,
    terminal: bool,
) -> bool:
    """Does an execution match `f`? `columns` holds its index row by column name
    (`state`, `workflow_name`, `created_at_ms`...), `terminal` whether it finished."""
    for clause in f.clauses:
        if clause.attribute:
            if not attribute_matches(clause, attributes.get(clause.field)):
                return False
        elif (clause.finished and not terminal) or not compare(
            clause.op, columns[clause.field], clause.values
        ):
            return False
    return True
