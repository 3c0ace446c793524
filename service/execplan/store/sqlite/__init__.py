"""SQLite backend of the store port: `SqliteStore(path)`; see `store.py`."""

from .store import SqliteStore
from .writer import WriterStats

__all__ = ["SqliteStore", "WriterStats"]
