"""The one place that runs the `cel` package at run time: compile once, execute, describe.

Used in the server process for expressions cheap enough to run inline, and in the
sandbox child process (executor/expressions/sandbox_child.py) for everything else, so both give
the same values and the same error messages. Imports nothing but `cel`: the child
starts fast.

The binding raises KeyError/TypeError/ValueError for CEL errors, and a Rust panic
surfaces as pyo3's `PanicException`, which derives from BaseException, not
Exception: an `except Exception` would let it through and take down whatever called
(the engine's pump). Both become `CelFailure` here.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import cel
from execplan.errors import is_native_panic

# Programs by source; like planner/cache.py's small_key_cache (not imported: it would
# pull the planner into the sandbox process), long sources are not kept alive.
_CACHED_CHARS = 1024
_compiled = lru_cache(maxsize=65536)(cel.compile)


class CelFailure(Exception):
    """The expression failed (a CEL error, or the library panicked); `str()` says why."""


def _program(source: str) -> Any:
    return _compiled(source) if len(source) <= _CACHED_CHARS else cel.compile(source)


def execute(source: str, context: dict[str, Any]) -> Any:
    """The value of `source` over `context`; raises CelFailure."""
    try:
        return _program(source).execute(context)
    except Exception as error:
        raise CelFailure(describe(error)) from error
    except BaseException as error:
        if not is_native_panic(error):
            raise
        raise CelFailure(f"the expression library failed: {_first_line(error)}") from error


def describe(error: BaseException) -> str:
    if isinstance(error, KeyError):
        return f"no such key {error.args[0]!r}" if error.args else "no such key"
    return _first_line(error)


def _first_line(error: BaseException) -> str:
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__
