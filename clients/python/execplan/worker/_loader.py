"""Find a Worker by "module:attr", as `execplan worker MODULE[:ATTR]` does."""

from __future__ import annotations

import importlib

from ._worker import Worker


def load_worker(spec: str) -> Worker:
    """Import "pkg.mod:attr" (attr defaults to `worker`) and return that Worker."""
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise ValueError(f"expected MODULE[:ATTR], got {spec!r}")
    module = importlib.import_module(module_name)
    obj: object = module
    for part in (attr or "worker").split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ValueError(f"{module_name!r} has no attribute {attr or 'worker'!r}") from exc
    if not isinstance(obj, Worker):
        raise TypeError(f"{spec!r} is a {type(obj).__name__}, not an execplan Worker")
    return obj
