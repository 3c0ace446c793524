"""Shared fixtures: a real execplan server on a free port, and a channel to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from execplan.config import ServerConfig
from execplan.server import ExecplanServer


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ExecplanServer]:
    """`execplan serve` as built by the composition root, on 127.0.0.1:0."""
    config = ServerConfig(
        listen="127.0.0.1:0", db_path=str(tmp_path / "execplan.db"), grace_seconds=1
    )
    async with ExecplanServer(config) as srv:
        yield srv


@pytest.fixture
async def channel(server: ExecplanServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(server.address) as ch:
        yield ch
