"""JSON text -> document, bounded before and while it is parsed.

    ok, doc = load_json(text, diags)

The stdlib's C decoder does the parsing (~20x faster than anything in Python); around
it:

- `limit-document-values`: before parsing, the values are counted from the text:
  `{`, `[` and `,` outside strings are a lower bound of the values (each comma
  starts one more). The three str.count calls cost ~15 ms for 15 MB; only when they
  exceed limits.MAX_DOCUMENT_VALUES are the strings cut out (a regex, ~0.7 s for
  34 MB) to see whether the excess was inside strings.
- `limit-document-depth`: the decoder recurses once per level and raises
  RecursionError near Python's recursion limit; values are then held to
  limits.MAX_DOCUMENT_DEPTH by `parse.json_value`.
- `duplicate-key`: an object that names a key twice (the decoder keeps the last).
  First told without a hook per object (which cost ~25% of the parse, ~0.05 s at
  15 MB): every `:` of the text is either the one after a key or inside a string,
  and orjson writes the document back with one `:` per key it kept and every
  string's own, so the counts are equal exactly when no key was lost. Only when
  they differ (or the text has a `\\u` escape, which could spell a `:`, or orjson
  cannot write the document back) is it parsed again with a pairs hook that spots
  the objects; the paths are then found by a walk over the lists and objects of the
  parsed document (only when there was one). JSON gets no line numbers: the C
  decoder does not report positions.
- `invalid-number`: Python's int() refuses more than 4,300 digits, and the decoder
  raises a ValueError for such a literal; the document is then parsed again with a
  bounded int parser so each one is reported at its path by `parse.json_value`.
- `invalid-syntax` for a `\\uD800`-`\\uDFFF` escape that is not half of a pair:
  the decoder keeps it as a lone surrogate, which is no character (YAML refuses
  it) and which no UTF-8 text, so no plan message, can hold. Looked for only when
  the text has such an escape.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import orjson
from execplan.planner import limits
from execplan.planner.diagnostics import Diagnostics, child, echo

# A string literal, or an unterminated one up to the end of the text. Possessive and
# always matching from a quote, so the scan is linear: the textbook
# '"[^"\\]*(?:\\.[^"\\]*)*"' restarts at every quote of an unterminated string and took
# 5.9 s for 48 KB of '"\\' (quadratic).
_STRING = re.compile(r'"(?:[^"\\]|\\[\s\S]?)*+(?:"|\Z)')
# An escape of a surrogate (U+D800..U+DFFF), one of a pair or not.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class LongNumber:
    """An integer literal too long to convert; `parse.json_value` reports it."""

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits


def _values_lower_bound(text: str) -> int:
    def count(t: str) -> int:
        return t.count("{") + t.count("[") + t.count(",")

    n = count(text)
    if n > limits.MAX_DOCUMENT_VALUES:
        n = count(_STRING.sub("", text))
    return n


def _bounded_int(literal: str) -> int | LongNumber:
    if len(literal) > limits.MAX_NUMBER_CHARS:
        return LongNumber(len(literal))
    return int(literal)


def _no_key_lost(source: str, doc: object) -> bool:
    """True when no object of `source` names a key twice (see the module docstring);
    False also when that cannot be told this way."""
    if "\\u" in source:
        return False
    try:
        written = orjson.dumps(doc)
    except orjson.JSONEncodeError:  # an int past 64 bits, a lone surrogate, deep nesting
        return False
    return source.count(":") == written.count(b":")


def load_json(source: str, diags: Diagnostics) -> tuple[bool, object]:
    """(True, document), or (False, None) after reporting why (see module docstring)."""
    if _values_lower_bound(source) > limits.MAX_DOCUMENT_VALUES:
        diags.error(
            "limit-document-values",
            "",
            f"the document has more than {limits.MAX_DOCUMENT_VALUES:,} values",
        )
        return False, None
    # id of an object -> (the object, the keys written twice). The object is held so
    # that its id is not reused: an object that is itself a value lost to a key
    # written twice is freed during the parse, and a later object at its address
    # would be reported in its place (which then depended on the heap's state).
    repeated: dict[int, tuple[dict[str, object], list[str]]] = {}

    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        obj = dict(items)
        if len(obj) != len(items):
            counts: dict[str, int] = {}
            for key, _ in items:
                counts[key] = counts.get(key, 0) + 1
            repeated[id(obj)] = (obj, [key for key, n in counts.items() if n > 1])
        return obj

    try:
        try:
            doc = json.loads(source)
            if not _no_key_lost(source, doc):
                doc = json.loads(source, object_pairs_hook=pairs)
        except json.JSONDecodeError:
            raise
        except ValueError:  # an integer literal past int()'s 4,300 digits
            repeated.clear()
            doc = json.loads(source, object_pairs_hook=pairs, parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        diags.error("invalid-syntax", "", f"invalid JSON: {exc}")
        return False, None
    except RecursionError:
        diags.error(
            "limit-document-depth",
            "",
            f"lists and maps nest more than {limits.MAX_DOCUMENT_DEPTH} levels deep",
        )
        return False, None
    if _SURROGATE_ESCAPE.search(source) is not None:
        lone = _lone_surrogate(doc)
        if lone is not None:
            diags.error(
                "invalid-syntax",
                "",
                f"invalid JSON: the escape {lone} is half of a UTF-16 surrogate pair "
                "without its other half: not a character",
            )
            return False, None
    if repeated:
        for path, obj in _objects(doc):
            found = repeated.get(id(obj))
            for key in found[1] if found is not None else ():
                diags.error(
                    "duplicate-key",
                    child(path, key),
                    f"key {echo(key)} is written twice in this object; the first would be lost",
                )
    return True, doc


def _lone_surrogate(doc: object) -> str | None:
    """The first lone surrogate in a key or a string of `doc`, as its `\\uXXXX`
    escape (without recursion)."""
    todo: list[object] = [doc]
    while todo:
        value = todo.pop()
        if type(value) is dict:
            todo.extend(value)
            todo.extend(value.values())
        elif type(value) is list:
            todo.extend(value)
        elif type(value) is str and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                return f"\\u{ord(value[exc.start]):04x}"
    return None


def _objects(doc: object) -> Iterator[tuple[str, dict[str, object]]]:
    """Every object in `doc` with its path, without recursion (lists and objects
    only: the path of a scalar is never built)."""
    todo: list[tuple[str, object]] = [("", doc)]
    while todo:
        path, value = todo.pop()
        if type(value) is dict:
            yield path, value
            items = value.items()
        elif type(value) is list:
            items = enumerate(value)  # type: ignore[assignment]
        else:
            continue
        for key, item in items:
            if type(item) is dict or type(item) is list:
                todo.append((f"{path}[{key}]" if type(key) is int else child(path, key), item))
