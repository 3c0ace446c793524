"""Screenshots of every console page for docs/console.md, from a real server and
the sample worker running the examples.

    .venv/bin/python scripts/console_screenshots.py [OUT_DIR]   (default docs/console)

Needs the console built (npm run build --prefix clients/web) and Chromium
(apt-get install -y chromium, or $EXECPLAN_CHROMIUM).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.async_api import Page, async_playwright

ROOT = Path(__file__).resolve().parent.parent
CLI = [str(ROOT / ".venv/bin/execplan")]
ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def run(address: str, *args: str) -> str:
    out = subprocess.run(
        [*CLI, *args, "--address", address], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return out.stdout.strip()


def wait_line(path: Path, prefix: str) -> str:
    for _ in range(300):
        for line in path.read_text().splitlines() if path.exists() else ():
            if line.startswith(prefix):
                return line[len(prefix) :]
        time.sleep(0.05)
    raise RuntimeError(f"no {prefix!r} in {path}")


async def shoot(page: Page, url: str, out: Path, ready: str, after: float = 0.6) -> None:
    """Open `url` ("" = stay), wait for `ready`, let transitions settle, screenshot."""
    if url:
        await page.goto(url)
    await page.locator(ready).first.wait_for()
    await asyncio.sleep(after)
    await page.screenshot(path=str(out))
    print("wrote", out)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp())
    serve_out = work / "serve.out"
    command = [*CLI, "serve", "--listen", "127.0.0.1:0", "--ui-listen", "127.0.0.1:0"]
    server = subprocess.Popen(
        [*command, "--db", str(work / "db")], stdout=serve_out.open("w"), stderr=subprocess.DEVNULL
    )
    worker = None
    try:
        address = wait_line(serve_out, "execplan listening on ")
        url = wait_line(serve_out, "execplan console on ")
        worker = subprocess.Popen(
            [*CLI, "worker", "examples/workers.py", "--address", address, "--slots", "8"],
            cwd=ROOT,
            stderr=subprocess.DEVNULL,
        )
        saga, waiting = run_examples(address)
        asyncio.run(capture(url, out, saga, waiting))
    finally:
        for proc in (worker, server):
            if proc is not None:
                proc.terminate()
                proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def run_examples(address: str) -> tuple[str, str]:
    """Runs the examples; returns the ids of a compensated saga and a waiting runbook."""
    ex = "examples/"
    for name in ("Ada", "Grace", "Linus"):
        run(address, "run", ex + "hello.yaml", "--input", f"name={name}", "--wait")
    run(address, "run", ex + "ml_pipeline.yaml", "--wait")
    run(address, "run", ex + "etl.yaml", "--input", "day=2026-11-26", "--input", "refunds=0")
    run(address, "run", ex + "order_saga.yaml", "--input", "order_id=o-1")
    saga = run(
        address,
        "run",
        ex + "order_saga.yaml",
        "--input",
        "order_id=o-2",
        "--input",
        "ship_fail=true",
    )
    run(address, "run", ex + "research_agents.yaml", "--input", "question=Why is the sky blue?")
    waiting = run(address, "run", ex + "incident_runbook.yaml", "--input", "service=checkout")
    # Flow control for the breakers page: one run, one answered from the cache, then a
    # server bucket so tight that the next questions wait for it.
    question = "question=Why is the sky blue?"
    run(address, "run", ex + "llm_quota.yaml", "--input", question, "--wait")
    run(address, "run", ex + "llm_quota.yaml", "--input", question, "--wait")
    run(address, "limits", "set", "llm-rpm", "--rate", "1/m", "--burst", "1")
    for other in ("What is a quota?", "Why rate limits?", "Who pays per token?"):
        run(address, "run", ex + "llm_quota.yaml", "--input", f"question={other}")
    time.sleep(1.5)
    return saga, waiting


async def capture(url: str, out: Path, saga: str, waiting: str) -> None:
    async with async_playwright() as playwright:
        path = (
            os.environ.get("EXECPLAN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
        )
        browser = await playwright.chromium.launch(executable_path=path, args=ARGS)
        page = await browser.new_page(viewport={"width": 1440, "height": 900})
        await shoot(page, url, out / "executions.png", '[data-testid="executions"] tbody tr')
        await page.goto(f"{url}executions/{saga}")
        await page.locator('h1 [data-state="COMPENSATED"]').wait_for()
        await page.locator('[data-task="ship"]').click()
        await shoot(page, "", out / "execution.png", '[data-testid="task-panel"]')
        await page.goto(f"{url}executions/{waiting}")
        await page.locator('[data-tone="waiting"]').wait_for()
        box = await page.get_by_test_id("slider").bounding_box()
        assert box is not None
        await page.mouse.click(box["x"] + box["width"] * 0.45, box["y"] + box["height"] / 2)
        await shoot(page, "", out / "time-travel.png", '[data-testid="slider-label"] >> text=as of')
        await shoot(page, f"{url}plans", out / "plans.png", '[data-testid="plans"] tbody tr')
        row = page.get_by_test_id("plans").locator("tr", has_text="ml-pipeline")
        await row.locator("a").first.click()
        await shoot(page, "", out / "plan.png", '[data-testid="start-form"]')
        await shoot(page, f"{url}workers", out / "workers.png", '[data-testid="workers"] tbody tr')
        await shoot(page, f"{url}breakers", out / "breakers.png", '[data-testid="waiting-tasks"]')
        await browser.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs/console")
