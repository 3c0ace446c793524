"""CEL expressions as Python values: `plan.output["items"]`, `item`, `output.approved`.

An `Expr` is the source of one CEL expression. Member access and indexing build
longer ones (`Expr("tasks.plan").output["items"][0]` is `tasks.plan.output.items[0]`);
where a value goes into `inputs` or `outputs` it becomes the whole-string form
`${{ source }}` (so it keeps its CEL type), and where a field is bare CEL (`when`,
`for_each`, `repeat.until`) it is the source itself. Anything else CEL can say is
written as text: `Expr("output.score >= 0.8")` or `expr("size(item) > 0")`.
"""

from __future__ import annotations

import json
import re

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Expr:
    """The source of a CEL expression (see the module docstring)."""

    __slots__ = ("source",)

    def __init__(self, source: str) -> None:
        if not isinstance(source, str) or not source.strip():
            raise ValueError("an expression needs a non-empty CEL source")
        self.source = source

    def __getattr__(self, name: str) -> Expr:
        if name.startswith("__"):
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, key: str | int) -> Expr:
        if isinstance(key, bool) or not isinstance(key, str | int):
            raise TypeError(f"index an expression with a str or an int, not {type(key).__name__}")
        if isinstance(key, int):
            return Expr(f"{self.source}[{key}]")
        if _IDENT.fullmatch(key):
            return Expr(f"{self.source}.{key}")
        return Expr(f"{self.source}[{json.dumps(key)}]")

    def template(self) -> str:
        """The whole-string form used in inputs and outputs: `${{ source }}`."""
        return "${{ " + self.source + " }}"

    def __str__(self) -> str:
        return self.source

    def __repr__(self) -> str:
        return f"Expr({self.source!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expr) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)


def expr(source: str) -> Expr:
    """`Expr(source)`: a CEL expression written as text."""
    return Expr(source)


# The runtime variables (docs/runtime-plans.md): each is defined only on some tasks.
item = Expr("item")  # the for_each item of this instance
index = Expr("index")  # its position in the list
iteration = Expr("iteration")  # the repeat iteration, 0-based
previous = Expr("previous")  # the previous iteration's output (null at first)
output = Expr("output")  # this iteration's output, in repeat.until only
