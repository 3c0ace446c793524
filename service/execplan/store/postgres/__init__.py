"""PostgreSQL backend of the store port (asyncpg): see `store.py`."""

from .store import PostgresStore

__all__ = ["PostgresStore"]
