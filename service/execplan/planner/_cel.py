"""The `cel` package without its interactive shell.

`cel`'s `__init__` imports `cel.cli`, the library's REPL (typer, rich, prompt_toolkit,
pygments: ~0.15 s, half of what `execplan plan` spends starting up), which nothing
in execplan uses. An empty `cel.cli` in `sys.modules` first makes that import free;
the extension itself (`cel.cel`) and its standard library load as usual. In a
process that imported `cel` before this module, nothing changes.

    from execplan.planner._cel import cel
"""

from __future__ import annotations

import sys
import types

sys.modules.setdefault("cel.cli", types.ModuleType("cel.cli"))

import cel  # noqa: E402  (after the stub, on purpose)

__all__ = ["cel"]
