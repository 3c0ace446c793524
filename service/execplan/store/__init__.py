"""Persistence of executions: the `Store` port and its backends.

    from execplan.store import open_store, Append, StoredEvent
    store = open_store("sqlite:///var/lib/execplan/execplan.db")  # or "memory:" or a path
    await store.open()

Modules: `port` (the interfaces and their records), `checks` (validation every
backend shares), `group_commit` (the queue both SQL writers drain), `sql` (the queries
and `Store` methods both SQL backends share), `memory` (MemoryStore), `sqlite/`
(SqliteStore: WAL, one writer with group commit, separate readers, versioned
migrations), `postgres/` (PostgresStore: asyncpg, one writer connection with group
commit, a read pool, advisory-locked migrations, and the `ReplicaStore` port).
"""

from __future__ import annotations

from execplan.errors import StoreError

from .memory import MemoryStore
from .port import (
    TERMINAL_STATES,
    Append,
    ExecutionRecord,
    Snapshot,
    Store,
    StoredEvent,
    decode_cursor,
    page_cursor,
)
from .sqlite import SqliteStore

__all__ = [
    "TERMINAL_STATES",
    "Append",
    "ExecutionRecord",
    "MemoryStore",
    "Snapshot",
    "SqliteStore",
    "Store",
    "StoredEvent",
    "decode_cursor",
    "open_store",
    "page_cursor",
]


def open_store(url_or_path: str) -> Store:
    """Build (not open) the store a URL names.

    "memory:" -> MemoryStore; "sqlite:///abs/path" or "sqlite://rel/path" or a plain
    path -> SqliteStore; "postgresql://..." or "postgres://..." -> PostgresStore (the
    URL is the asyncpg/libpq DSN).
    """
    if url_or_path == "memory:" or url_or_path.startswith("memory://"):
        return MemoryStore()
    if url_or_path.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore  # noqa: PLC0415  (asyncpg only when used)

        return PostgresStore(url_or_path)
    if url_or_path.startswith("sqlite:"):
        path = url_or_path.removeprefix("sqlite:").removeprefix("//")
        if not path:
            raise StoreError(f"no file path in store URL {url_or_path!r}")
        return SqliteStore(path)
    if "://" in url_or_path:
        raise StoreError(f"unsupported store URL {url_or_path!r}")
    return SqliteStore(url_or_path)
