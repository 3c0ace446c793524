"""The layers only point down: every import of the server's packages, read from the
source (the AST, so imports inside functions count too), against the rules below.

    server.py, cli/        compose and present everything
    console/               the web console's HTTP app: presents the wire, nothing below
    wire/                  gRPC: servicers, codecs, status mapping
    executor/              the runtime; names only the store's port
      decide/              the pure core: no asyncio, no I/O
    store/  planner/       the bottom: they import neither the executor nor the wire
    flow/  httpcall/       pure rules (rates, keys, capacity; builtin.http) any layer uses

A failure names the module, the line and the import that crosses a layer.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "service" / "execplan"

# package prefix -> module prefixes it must not import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "execplan.executor": (
        "execplan.wire",
        "execplan.server",
        "execplan.cli",
        "execplan.logs",
        "grpc",
        "grpc_health",
        "grpc_reflection",
        "grpc_status",
        "execplan.store.sqlite",
        "execplan.store.postgres",
        "execplan.store.memory",
    ),
    "execplan.executor.decide": ("asyncio",),
    "execplan.store": (
        "execplan.executor",
        "execplan.wire",
        "execplan.planner",
        "execplan.server",
        "execplan.cli",
        "grpc",
    ),
    "execplan.planner": (
        "execplan.executor",
        "execplan.store",
        "execplan.wire",
        "execplan.server",
        "execplan.cli",
        "grpc",
    ),
    "execplan.logs": ("execplan.executor", "execplan.wire", "execplan.store"),
    # Pure rules every layer shares: they import none of the layers.
    "execplan.flow": (
        "execplan.executor",
        "execplan.wire",
        "execplan.store",
        "execplan.planner",
        "execplan.server",
        "execplan.cli",
        "grpc",
    ),
    # Pure: the attribute values and the filter language the store compiles.
    "execplan.search": (
        "asyncio",
        "execplan.executor",
        "execplan.store",
        "execplan.wire",
        "execplan.server",
        "execplan.cli",
        "grpc",
    ),
    # builtin.http: uses the planner's duration parser, the one home of that rule.
    "execplan.httpcall": (
        "execplan.executor",
        "execplan.wire",
        "execplan.store",
        "execplan.server",
        "execplan.cli",
        "grpc",
    ),
    # Schedules start runs through a Starter (the engine, wired in server.py) and keep
    # their rows in the store's port.
    "execplan.schedules": (
        "execplan.executor",
        "execplan.wire",
        "execplan.server",
        "execplan.cli",
        "grpc",
        "execplan.store.sqlite",
        "execplan.store.postgres",
        "execplan.store.memory",
    ),
    # Retention deletes through the store's port; the engine's caches are told by a
    # callback wired in server.py.
    "execplan.retention": (
        "execplan.executor",
        "execplan.wire",
        "execplan.server",
        "execplan.cli",
        "grpc",
        "execplan.store.sqlite",
        "execplan.store.postgres",
        "execplan.store.memory",
    ),
    "execplan.console": ("execplan.executor", "execplan.store", "execplan.planner", "grpc"),
}
# Names a package must not import from an allowed module (concrete stores by name).
FORBIDDEN_NAMES: dict[str, frozenset[str]] = {
    "execplan.executor": frozenset({"SqliteStore", "PostgresStore", "MemoryStore", "open_store"}),
}


def _modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _imports(module: str, path: Path) -> Iterator[tuple[int, str, str]]:
    """(line, imported module, imported name or "") of every import in a file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ""
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # `from execplan.store import sqlite` imports the module execplan.store.sqlite
                yield node.lineno, base, alias.name


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _violations(module: str, path: Path) -> list[str]:
    found = []
    for package, forbidden in FORBIDDEN.items():
        if not _within(module, package):
            continue
        names = FORBIDDEN_NAMES.get(package, frozenset())
        for line, imported, name in _imports(module, path):
            targets = [imported, f"{imported}.{name}" if name else imported]
            if any(_within(t, f) for t in targets for f in forbidden) or name in names:
                shown = f"{imported}.{name}" if name else imported
                found.append(f"{path.name}:{line}: {module} imports {shown}")
    return found


MODULES = list(_modules())


def test_every_package_is_covered() -> None:
    assert {m for m, _ in MODULES if m.count(".") == 1} >= {
        "execplan.executor",
        "execplan.store",
        "execplan.planner",
        "execplan.logs",
        "execplan.search",
        "execplan.schedules",
    }


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_imports_point_down(module: str, path: Path) -> None:
    violations = _violations(module, path)
    assert not violations, "\n".join(violations)


def test_the_check_sees_a_crossing(tmp_path: Path) -> None:
    bad = tmp_path / "engine.py"
    bad.write_text(
        "import asyncio\n"
        "def f():\n"
        "    from execplan.wire.status import unary_errors\n"
        "    from execplan.store import SqliteStore\n"
        "    from ...store.postgres import PostgresStore\n"
    )
    assert len(_violations("execplan.executor.runtime.engine", bad)) == 3
    assert len(_violations("execplan.executor.decide.machine", bad)) == 4
