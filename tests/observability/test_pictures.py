"""`execplan get ID --format dot|mermaid`: the plan's graph coloured by task state."""

from __future__ import annotations

import asyncio
from typing import Any

from execplan.cli import main
from execplan.cli.pictures import COLOURS

from .conftest import Env


async def test_get_renders_dot_and_mermaid(env: Env, capsys: Any) -> None:
    execution_id = await env.start("etl.yaml", {"day": "2026-11-26", "refunds": 0})
    await env.finish(execution_id)
    address = env.server.address
    code = await asyncio.to_thread(
        main, ["get", execution_id, "--format", "mermaid", "--address", address]
    )
    mermaid = capsys.readouterr().out
    assert code == 0
    assert mermaid.startswith("flowchart LR\n")
    assert f"classDef succeeded fill:{COLOURS['SUCCEEDED'][0]}" in mermaid
    assert "classDef skipped" in mermaid  # refunds=0 skips its transform and load
    assert "-->" in mermaid or "-.->" in mermaid or "==>" in mermaid
    code = await asyncio.to_thread(
        main, ["get", execution_id, "--format", "dot", "--at", "2", "--address", address]
    )
    dot = capsys.readouterr().out
    assert code == 0
    assert dot.startswith("digraph ")
    assert f'fillcolor="{COLOURS["PENDING"][0]}"' in dot  # as of event 2 most are pending
    assert "->" in dot
