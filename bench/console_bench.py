"""Web console performance in headless Chromium against a real `execplan serve`.

    .venv/bin/python bench/console_bench.py [--executions 10000] [--tasks 1000]

1. The executions list with N executions in the store: time to the first page,
   to each of the next pages, and the longest main-thread gap (frame) while a burst
   of executions changes state under the open list (WatchExecutions).
2. The graph of a plan of `--tasks` tasks: navigation to every node in the DOM
   (GetPlan, dagre layout, SVG render), and dagre's share of it; then the same plan
   as a running execution's page.
Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from execplan.client import ExecutorClient
from playwright.async_api import async_playwright

ROOT = Path(__file__).resolve().parent.parent
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
QUICK = """
name: bench-quick-{n}
tasks:
  - id: nap
    type: builtin.sleep
    inputs: {{duration: 1ms}}
"""
# Collects the longest gap between animation frames (a janky list shows long gaps).
FRAME_PROBE = """
window.__gaps = []; let last = performance.now();
function tick(t) {
  window.__gaps.push(t - last); last = t; window.__raf = requestAnimationFrame(tick);
}
window.__raf = requestAnimationFrame(tick);
"""


def wide_plan(tasks: int, width: int = 40) -> str:
    """`tasks` tasks in layers of `width`, each depending on two tasks of the layer before."""
    lines = ["name: bench-graph", "tasks:"]
    for i in range(tasks):
        layer = i // width
        lines.append(f"  - id: t{i}")
        lines.append("    type: builtin.sleep")
        lines.append("    inputs: {duration: 10m}")
        if layer:
            before = range((layer - 1) * width, layer * width)
            deps = sorted({before[i % width], before[(i * 7 + 3) % width]})
            lines.append(f"    depends_on: [{', '.join(f't{d}' for d in deps)}]")
    return "\n".join(lines) + "\n"


def line_of(path: Path, prefix: str) -> str:
    for _ in range(600):
        if path.exists():
            for line in path.read_text().splitlines():
                if line.startswith(prefix):
                    return line[len(prefix) :]
        time.sleep(0.05)
    raise RuntimeError(f"server did not print {prefix!r}")


async def fill(client: ExecutorClient, count: int) -> float:
    started = time.perf_counter()
    sem = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with sem:
            await client.start(source=QUICK.format(n=i % 20))

    await asyncio.gather(*(one(i) for i in range(count)))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=1000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp())
    out = work / "serve.out"
    command = [str(ROOT / ".venv/bin/execplan"), "serve", "--listen", "127.0.0.1:0"]
    command += ["--ui-listen", "127.0.0.1:0", "--db", str(work / "db"), "--log-level", "warning"]
    server = subprocess.Popen(command, stdout=out.open("w"), stderr=subprocess.DEVNULL)
    try:
        address = line_of(out, "execplan listening on ")
        url = line_of(out, "execplan console on ")
        rows = asyncio.run(measure(address, url, args.executions, args.tasks))
    finally:
        server.terminate()
        server.wait(20)
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    print(f"\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs\n")
    print("| measurement | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


async def measure(address: str, url: str, executions: int, tasks: int) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    async with grpc.aio.insecure_channel(address) as channel:
        client = ExecutorClient(channel=channel)
        took = await fill(client, executions)
        rows.append((f"store {executions:,} executions (64 concurrent starts)", f"{took:.1f} s"))
        path = (
            os.environ.get("EXECPLAN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
        )
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=path, args=ARGS)
            page = await browser.new_page(viewport={"width": 1440, "height": 900})
            rows += await list_rows(page, url, client, executions)
            rows += await graph_rows(page, url, client, tasks)
            await browser.close()
    return rows


async def list_rows(
    page: Any, url: str, client: ExecutorClient, executions: int
) -> list[tuple[str, str]]:
    rows = []
    table = '[data-testid="executions"] tbody tr'
    t0 = time.perf_counter()
    await page.goto(url)
    await page.locator(table).nth(49).wait_for()
    cold = (time.perf_counter() - t0) * 1000
    rows.append(("list: first page of 50 rendered (cold load)", f"{cold:.0f} ms"))
    pages = []
    for _ in range(5):
        first = await page.locator(table).first.get_attribute("data-id")
        t0 = time.perf_counter()
        await page.get_by_test_id("older").click()
        await page.locator(f'{table}[data-id="{first}"]').wait_for(state="detached")
        pages.append((time.perf_counter() - t0) * 1000)
    rows.append(("list: next page (median of 5)", f"{sorted(pages)[2]:.0f} ms"))
    await page.goto(url)
    await page.locator(table).nth(49).wait_for()
    await page.evaluate(FRAME_PROBE)
    burst = max(1000, executions // 10)
    took = await fill(client, burst)
    await asyncio.sleep(1.0)
    gaps = sorted((await page.evaluate("cancelAnimationFrame(window.__raf), window.__gaps"))[2:])
    p50, p99 = gaps[len(gaps) // 2], gaps[int(len(gaps) * 0.99)]
    rows.append(
        (
            f"list open during {burst:,} more starts ({burst / took:.0f}/s, live updates)",
            f"frame gap p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {gaps[-1]:.0f} ms",
        )
    )
    return rows


async def graph_rows(
    page: Any, url: str, client: ExecutorClient, tasks: int
) -> list[tuple[str, str]]:
    rows = []
    plan = await client.compile(wide_plan(tasks))
    await client.register_plan(plan)
    t0 = time.perf_counter()
    await page.goto(f"{url}plans/{plan.plan_id}")
    await page.locator(f'[data-testid="graph"] [data-task="t{tasks - 1}"]').wait_for()
    total = (time.perf_counter() - t0) * 1000
    dagre = (await page.locator(".facts").inner_text()).split("laid out in ")[-1]
    rows.append(
        (
            f"graph of a {tasks:,}-task plan ({len(plan.edges):,} edges), navigation to all drawn",
            f"{total:.0f} ms ({dagre} of it dagre)",
        )
    )
    execution = (await client.start(plan_id=plan.plan_id)).execution_id
    await asyncio.sleep(1.0)
    t0 = time.perf_counter()
    await page.goto(f"{url}executions/{execution}")
    await page.locator('[data-testid="graph"] [data-tone="waiting"]').first.wait_for()
    took = (time.perf_counter() - t0) * 1000
    rows.append((f"execution page of that plan ({tasks:,} tasks running)", f"{took:.0f} ms"))
    return rows


if __name__ == "__main__":
    main()
