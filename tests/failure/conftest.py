"""An in-process server (real SQLite file, port 0) for failure-handling tests.

The environment of tests/support/server.py with shorter engine graces, plus helpers
that reduce a history to the exact event kinds of one task.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from execplan.executor.runtime.engine import EngineConfig

if TYPE_CHECKING:
    from tests.support import server
    from tests.support.history import BACKOFF, RUN, execution_kinds, task_kinds
    from tests.support.server import environment, finish
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support import server
    from support.history import BACKOFF, RUN, execution_kinds, task_kinds
    from support.server import environment, finish

__all__ = ["BACKOFF", "FAST", "RUN", "Env", "execution_kinds", "finish", "task_kinds"]

FAST = EngineConfig(
    ack_deadline_ms=1_000, reconnect_grace_ms=300, recovery_grace_ms=300, heartbeat_interval_ms=100
)


class Env(server.Env):
    async def kinds(self, execution_id: str, task_id: str) -> list[str]:
        return task_kinds(await self.history(execution_id), task_id)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    async with environment(Env, tmp_path, FAST) as environment_:
        yield environment_
