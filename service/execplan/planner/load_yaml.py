"""YAML text -> JSON-like document, built from libyaml's events and bounded while it
is built.

    ok, doc = load_yaml(text, diags)

libyaml (through PyYAML's `CParser`) does the parsing; this module replaces PyYAML's
composer and constructor, which first build a node graph of the whole document (~600
bytes per value: 100,000 tasks took 4.5 s and 770 MiB before anything could be
counted, a million took 38 s and 2.6 GiB), and which share the objects of an alias,
so a 600-byte document of nested aliases (`&a1 [*a0, *a0, ...]`, nine levels) became
10^9 values as soon as anything walked it. Here each value is built once, straight
from its event, and counted as it is built; the build stops at the first limit:

- `limit-document-values`: more than limits.MAX_DOCUMENT_VALUES values, where an
  alias counts as every value under its anchor (the bomb stops after two events);
- `limit-document-depth`: lists/maps nested deeper than limits.MAX_DOCUMENT_DEPTH,
  an alias's depth included;
- `limit-tasks`: the top-level `tasks` list passing limits.MAX_TASKS items.

It also reports what PyYAML accepts silently or answers with an internal error:

- `duplicate-key`: a key written twice in one mapping (PyYAML keeps the last), with
  both line numbers; keys brought in by a `<<` merge may be overridden, as YAML says;
- `invalid-number`: an int or float literal longer than limits.MAX_NUMBER_CHARS
  (a 5,000-digit integer made int() raise: exit 70 / INTERNAL);
- `invalid-syntax`: a recursive alias (`&a [*a]`), a tag other than the standard
  scalar, list and map ones, and every libyaml syntax error.

Scalars resolve exactly as in PyYAML's SafeLoader (YAML 1.1: `yes` is true, `1:30`
is 90, `2001-12-14` a date, `<<` a merge key), by the same resolvers and
constructors. A document of nothing is None, as `yaml.safe_load` gives.
"""

from __future__ import annotations

from typing import Any

import yaml
from execplan.planner import limits
from execplan.planner.diagnostics import Diagnostics, child, clip, echo
from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_TAG = "tag:yaml.org,2002:"
STR, MERGE, VALUE = _TAG + "str", _TAG + "merge", _TAG + "value"
_NUMBERS = frozenset({_TAG + "int", _TAG + "float"})
_SCALAR_TAGS = frozenset(
    {STR, _TAG + "null", _TAG + "bool", _TAG + "binary", _TAG + "timestamp", *_NUMBERS}
)
_SEQ_TAGS = frozenset({None, "!", _TAG + "seq"})
_MAP_TAGS = frozenset({None, "!", _TAG + "map"})
_RESOLVERS: dict[str, list[tuple[str, Any]]] = _Loader.yaml_implicit_resolvers
_CONSTRUCTORS: dict[str, Any] = _Loader.yaml_constructors


class _Stop(Exception):
    """The build stopped; the diagnostic is already reported."""


class _MergeKey:
    """The `<<` key of a mapping (never a value of the document)."""


MERGE_KEY = _MergeKey()


class _Frame:
    """An open list or map: what it holds so far and where it is in the document."""

    __slots__ = (
        "anchor",
        "height",
        "key",
        "key_line",
        "lines",
        "merges",
        "segment",
        "start",
        "value",
    )

    def __init__(self, value: list[Any] | dict[Any, Any], segment: object, start: int) -> None:
        self.value = value
        self.segment = segment  # key or index in the parent (None for the root)
        self.start = start  # the value count when it opened
        self.anchor: str | None = None
        self.height = 1  # levels of lists/maps from here down
        self.key: object = _NO_KEY  # a map's pending key
        self.key_line = 0
        self.lines: dict[object, int] = {}  # a map's own keys -> line (duplicates)
        self.merges: list[tuple[object, int]] = []  # a map's `<<` values


_NO_KEY = object()


class _Builder:
    def __init__(self, loader: Any, diags: Diagnostics) -> None:
        self.loader = loader
        self.diags = diags
        self.stack: list[_Frame] = []
        self.count = 0
        # anchor -> (value, values under it, height); size None while still open.
        self.anchors: dict[str, tuple[object, int | None, int]] = {}
        self.tasks: list[Any] | None = None  # the top-level `tasks` list, once open
        self.root: object = None

    # --- where we are ------------------------------------------------------------------

    def path(self, key: object = _NO_KEY) -> str:
        """The path of the value being read (or of `key` in the innermost map)."""
        segments = [f.segment for f in self.stack[1:]]
        if self.stack:
            top = self.stack[-1]
            if key is not _NO_KEY:
                segments.append(key)
            elif type(top.value) is list:
                segments.append(len(top.value))
            elif top.key is not _NO_KEY and top.key is not MERGE_KEY:
                segments.append(top.key)
        out = ""
        for seg in segments:
            if type(seg) is int:
                out += f"[{seg}]"
            else:
                out = child(out, seg if type(seg) is str else echo(seg))
        return out

    def stop(self, code: str, message: str, path: str | None = None) -> _Stop:
        self.diags.error(code, self.path() if path is None else path, message)
        return _Stop()

    # --- the event loop ------------------------------------------------------------------

    def run(self) -> tuple[bool, object]:
        get = self.loader.get_event
        get()  # StreamStartEvent
        event = get()
        if type(event) is StreamEndEvent:
            return True, None
        assert type(event) is DocumentStartEvent
        max_values = limits.MAX_DOCUMENT_VALUES
        while True:
            event = get()
            kind = type(event)
            if kind is ScalarEvent:
                self.count += 1
                value = self.scalar(event)
                if event.anchor is not None:
                    self.anchors[event.anchor] = (value, 1, 0)
                self.add(value, 0, event)
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                self.count += 1
                self.open(event, kind is MappingStartEvent)
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                frame = self.stack.pop()
                value = frame.value
                if frame.merges:
                    value = self.merged(frame)
                if frame.anchor is not None:
                    self.anchors[frame.anchor] = (value, self.count - frame.start, frame.height)
                self.add(value, frame.height, event)
            elif kind is AliasEvent:
                self.alias(event)
            else:
                assert kind is DocumentEndEvent
                break
            if self.count > max_values:
                raise self.stop(
                    "limit-document-values",
                    f"the document has more than {max_values:,} values "
                    "(aliases count as what they repeat)",
                )
        event = get()
        if type(event) is not StreamEndEvent:
            line = event.start_mark.line + 1
            raise self.stop(
                "invalid-syntax", f"expected one document, found another on line {line}", ""
            )
        return True, self.root

    def open(self, event: Any, is_map: bool) -> None:
        if event.tag not in (_MAP_TAGS if is_map else _SEQ_TAGS):
            raise self.stop("invalid-syntax", _unsupported(event.tag))
        parent = self.stack[-1] if self.stack else None
        if parent is None:
            segment: object = None
        elif type(parent.value) is list:
            segment = len(parent.value)
        elif parent.key is _NO_KEY:
            raise self.stop("invalid-syntax", "a list or map cannot be a key here")
        elif parent.key is MERGE_KEY:
            segment = "<<"  # as written: a path never shows the marker object
        else:
            segment = parent.key
        if len(self.stack) >= limits.MAX_DOCUMENT_DEPTH:
            raise self.stop(  # before the push: the path names the list/map opening
                "limit-document-depth",
                f"lists and maps nest more than {limits.MAX_DOCUMENT_DEPTH} levels deep",
            )
        frame = _Frame({} if is_map else [], segment, self.count - 1)
        frame.anchor = event.anchor
        if frame.anchor is not None:
            self.anchors[frame.anchor] = (frame.value, None, 0)
        self.stack.append(frame)
        if segment == "tasks" and len(self.stack) == 2 and not is_map:
            self.tasks = frame.value  # type: ignore[assignment]

    def alias(self, event: Any) -> None:
        found = self.anchors.get(event.anchor)
        if found is None:
            raise self.stop("invalid-syntax", f"alias *{clip(event.anchor)} is not defined")
        value, size, height = found
        if size is None:
            raise self.stop(
                "invalid-syntax",
                f"alias *{clip(event.anchor)} is inside its own anchor (a recursive structure)",
            )
        self.count += size
        if len(self.stack) + height > limits.MAX_DOCUMENT_DEPTH:
            raise self.stop(
                "limit-document-depth",
                f"alias *{clip(event.anchor)} nests lists and maps more than "
                f"{limits.MAX_DOCUMENT_DEPTH} levels deep here",
            )
        self.add(value, height, event)

    def add(self, value: object, height: int, event: Any) -> None:
        """Put a finished value into the open list or map (or make it the root)."""
        if not self.stack:
            self.root = value
            return
        frame = self.stack[-1]
        container = frame.value
        merging = frame.key is MERGE_KEY and type(container) is dict
        if merging:
            # A merged map's keys land in this map, one level up: a list of maps
            # (`<<: [*a, *b]`) adds nothing of its own either.
            height -= 1 if type(value) is list else 0
        if frame.height <= height:
            frame.height = height + (0 if merging else 1)
        if type(container) is list:
            container.append(value)
            if container is self.tasks and len(container) > limits.MAX_TASKS:
                raise self.stop(
                    "limit-tasks",
                    f"more than {limits.MAX_TASKS:,} tasks; at most "
                    f"{limits.MAX_TASKS:,} are allowed",
                    "tasks",
                )
            return
        key = frame.key
        if key is _NO_KEY:  # this value is a key
            if value is not MERGE_KEY:
                try:
                    hash(value)
                except TypeError:
                    raise self.stop("invalid-syntax", "a list or map cannot be a key") from None
            frame.key = value
            frame.key_line = event.start_mark.line + 1
            return
        frame.key = _NO_KEY
        if key is MERGE_KEY:
            frame.merges.append((value, frame.key_line))
            return
        assert type(container) is dict
        if key in container:
            first = frame.lines[key]
            self.diags.error(
                "duplicate-key",
                self.path(key),
                f"key {echo(key)} is written twice in this mapping "
                f"(line {first} and line {frame.key_line}); the first would be lost",
            )
        frame.lines[key] = frame.key_line
        container[key] = value

    def merged(self, frame: _Frame) -> dict[Any, Any]:
        """A map with its `<<` merges: its own keys override merged ones, and a map
        earlier in a merge overrides a later one (YAML's merge key, as PyYAML does)."""
        sources: list[dict[Any, Any]] = []
        for value, line in frame.merges:
            for source in value if type(value) is list else [value]:
                if type(source) is not dict:
                    raise self.stop(
                        "invalid-syntax",
                        f"the merge (<<) on line {line} needs a map or a list of maps",
                        self.path(),
                    )
                sources.append(source)
        out: dict[Any, Any] = {}
        for source in reversed(sources):
            out.update(source)
        out.update(frame.value)
        return out

    def scalar(self, event: Any) -> object:
        tag = event.tag
        value: str = event.value
        if tag is None or tag == "!":
            if not event.implicit[0]:
                return value  # quoted, or `!`: a string
            for candidate, pattern in _RESOLVERS.get(value[0] if value else "", ()):
                if pattern.match(value):
                    tag = candidate
                    break
            else:
                return value
        if tag == STR:
            return value
        reading_key = bool(self.stack) and self.stack[-1].key is _NO_KEY
        if reading_key and type(self.stack[-1].value) is dict:
            if tag == MERGE:
                return MERGE_KEY
            if tag == VALUE:
                return value  # the `=` key is a plain string key
        if tag not in _SCALAR_TAGS:
            raise self.stop("invalid-syntax", _unsupported(tag))
        if tag in _NUMBERS and len(value) > limits.MAX_NUMBER_CHARS:
            self.diags.error(
                "invalid-number",
                self.path(),
                f"a number of {len(value):,} characters; at most "
                f"{limits.MAX_NUMBER_CHARS} (quote it to keep it as text)",
            )
            return None
        node = yaml.ScalarNode(tag, value, event.start_mark, event.end_mark, event.style)
        try:
            return _CONSTRUCTORS[tag](self.loader, node)
        except (yaml.YAMLError, ValueError) as exc:
            raise self.stop(
                "invalid-syntax", f"invalid {tag[len(_TAG) :]} {echo(value)}: {exc}"
            ) from exc


def _unsupported(tag: str) -> str:
    return (
        f"unsupported YAML tag {echo(tag)}: a workflow holds plain data "
        "(maps, lists, strings, numbers, booleans, null)"
    )


def load_yaml(source: str, diags: Diagnostics) -> tuple[bool, object]:
    """(True, document), or (False, None) after reporting why (see module docstring)."""
    loader = _Loader(source)
    try:
        return _Builder(loader, diags).run()
    except _Stop:
        return False, None
    except yaml.YAMLError as exc:
        message = " ".join(str(exc).split())
        diags.error("invalid-syntax", "", f"invalid YAML: {message}")
        return False, None
    finally:
        loader.dispose()
