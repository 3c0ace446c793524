"""The store contract against MemoryStore."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from execplan.errors import StoreError
from execplan.store import MemoryStore, SqliteStore, Store, open_store

from .contract import StoreContract
from .ops_contract import OpsContract


class TestMemoryStore(StoreContract, OpsContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[Store]:
        store = MemoryStore()
        await store.open()
        yield store
        await store.close()


def test_open_store_urls() -> None:
    assert isinstance(open_store("memory:"), MemoryStore)
    sqlite = open_store("sqlite:///tmp/x.db")
    assert isinstance(sqlite, SqliteStore)
    assert sqlite.path == "/tmp/x.db"
    relative = open_store("sqlite://data/x.db")
    assert isinstance(relative, SqliteStore)
    assert relative.path == "data/x.db"
    plain = open_store("/var/lib/execplan.db")
    assert isinstance(plain, SqliteStore)
    assert plain.path == "/var/lib/execplan.db"
    with pytest.raises(StoreError):
        open_store("mongodb://x")
