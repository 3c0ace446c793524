"""Secret providers: resolve secret names to values at dispatch time only.

Values never enter events, checkpoints or logs; the dispatch message is the only
place they appear (runtime/acting.py). Two providers:

    EnvironmentSecrets()                 EXECPLAN_SECRET_<NAME> variables (the default)
    FileSecrets("/etc/execplan/secrets.yaml")
                                         a JSON or YAML map name -> value, read once;
                                         warns when group or others may read the file

`provider_for(secrets_file)` picks one for the server configuration. A provider
never puts a value into an exception or a log line: a missing secret is simply
absent from the dispatch, and the worker decides what that means.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

log = logging.getLogger("execplan.secrets")


class SecretsFileError(ValueError):
    """The secrets file is unreadable or not a flat map; never contains a value."""


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


class FileSecrets:
    """A JSON or YAML file holding `{name: value}`; loaded when constructed."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._values = _load(self.path)
        mode = self.path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "secrets file %s is accessible to group or others (mode %o); chmod 600 it",
                self.path,
                stat.S_IMODE(mode),
            )

    def resolve(self, names: tuple[str, ...]) -> dict[str, str]:
        return {name: self._values[name] for name in names if name in self._values}

    def __repr__(self) -> str:  # never the values
        return f"FileSecrets({str(self.path)!r}, {len(self._values)} names)"


def _load(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretsFileError(f"cannot read secrets file {path}: {type(exc).__name__}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else _yaml(text)
    except ValueError:
        # `from None` and no parser message: both can quote the file's content.
        raise SecretsFileError(f"secrets file {path} is not valid JSON/YAML") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str | int | float) for k, v in data.items()
    ):
        raise SecretsFileError(f"secrets file {path} must map names to string values")
    return {k: str(v) for k, v in data.items()}


def _yaml(text: str) -> object:
    import yaml  # noqa: PLC0415

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise ValueError("invalid YAML") from None


def provider_for(secrets_file: str | None) -> SecretProvider:
    """The file provider when a file is configured, else the environment one."""
    return FileSecrets(secrets_file) if secrets_file else EnvironmentSecrets()
