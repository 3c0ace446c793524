"""An in-process execplan server (real SQLite file, port 0) and SDK workers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.support.server import FAST, Env, environment
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support.server import FAST, Env, environment

__all__ = ["FAST", "Env"]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with environment(Env, tmp_path, FAST) as environment_:
        yield environment_
