"""A server with its web console on 127.0.0.1:0, SDK workers, and headless Chromium.

The browser is Debian's `chromium` (or $EXECPLAN_CHROMIUM), driven by Playwright
for Python with `executable_path`: Playwright's own browser download is not used.
The console must be built (`npm run build --prefix clients/web`, done by .ci/run
and the README's setup); a missing build or browser fails with how to get it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from execplan.client import ExecutorClient
from execplan.config import ServerConfig
from execplan.console.assets import BUILD_HINT, Assets
from execplan.server import ExecplanServer, ExecutorComponent, PlannerComponent

if TYPE_CHECKING:
    from tests.support.server import FAST, Env, stop_worker
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support.server import FAST, Env, stop_worker

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    path = os.environ.get("EXECPLAN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(
            "no Chromium for the console tests: apt-get install -y chromium "
            "(or set EXECPLAN_CHROMIUM to a Chromium binary)"
        )
    return path


@dataclass
class ConsoleEnv(Env):
    url: str = ""

    async def page(self, browser: Any, token: str | None = None) -> Any:
        """A new tab (1440x900) with the console open, signed in with `token`."""
        context = await browser.new_context(viewport={"width": 1440, "height": 900})
        if token is not None:
            await context.add_init_script(f"sessionStorage.setItem('execplan.token', {token!r})")
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.errors = errors
        return page


@contextlib.asynccontextmanager
async def console_env(
    tmp_path: Path, token: str | None = None, **config: Any
) -> AsyncIterator[ConsoleEnv]:
    """A started server with its console; `token`: what the env's client and
    workers send (for servers started with `auth_tokens=...`)."""
    if not Assets.load().built:
        pytest.fail(BUILD_HINT)
    options: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "db_path": str(tmp_path / "execplan.db"),
        "grace_seconds": 1,
        "ui_listen": "127.0.0.1:0",
    }
    server_config = ServerConfig(**(options | config))
    executor = ExecutorComponent(server_config.db_path, config=FAST, silence_ms=3_000)
    async with ExecplanServer(server_config, [executor, PlannerComponent(server_config)]) as server:
        client = ExecutorClient(server.address, token=token)
        channel = grpc.aio.insecure_channel(server.address)
        env = ConsoleEnv(server, executor, client, channel, url=server.console.url)
        try:
            yield env
        finally:
            for worker, task in env.workers:
                await stop_worker(worker, task)
            await client.close()
            await channel.close()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright  # noqa: PLC0415

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()
