"""Fixtures of the replicas suite: the session PostgreSQL server of tests/store/pg.py
(one server per session, shared with tests/store)."""

from store.pg import pg_dsn, pg_server  # type: ignore[import-not-found]

__all__ = ["pg_dsn", "pg_server"]
