"""Secret providers: resolve secret names to values at dispatch time only.

Values never enter events, checkpoints or logs; the dispatch message is the only
place they appear. The default provider reads `EXECPLAN_SECRET_<NAME>` variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol


class SecretProvider(Protocol):
    def resolve(self, names: tuple[str, ...]) -> dict[str, str]: ...


class EnvironmentSecrets:
    def __init__(self, environ: Mapping[str, str] | None = None, prefix: str = "EXECPLAN_SECRET_"):
        self._environ = environ if environ is not None else os.environ
        self._prefix = prefix

    def resolve(self, names: tuple[str, ...]) -> dict[str, str]:
        found = {}
        for name in names:
            value = self._environ.get(self._prefix + name.upper())
            if value is not None:
                found[name] = value
        return found
