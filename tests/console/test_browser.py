"""The web console in a real headless Chromium against a real server and worker:
load the list, open an execution, watch it turn green live, drag the time-travel
slider, cancel one, and a read-only (viewer) token that sees no actions."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest
from execplan.v1 import execution_pb2 as ex

from .conftest import ConsoleEnv, console_env

GATED = """
name: console-gated
tasks:
  - id: prepare
    type: console.step
  - id: work
    type: console.gate
    depends_on: [prepare]
  - id: report
    type: console.step
    depends_on: [work]
outputs:
  done: "${{ tasks.report.output.ok }}"
"""

WAITING = """
name: console-waiting
tasks:
  - id: approval
    type: builtin.wait_for_event
    inputs: {event: approved, timeout: 10m}
"""


def tone(page: Any, task: str) -> Any:
    return page.locator(f'[data-testid="graph"] [data-task="{task}"]')


async def test_list_open_live_green_and_time_travel(tmp_path: Path, browser: Any) -> None:
    gate = asyncio.Event()

    async def gated(inputs: dict[str, Any]) -> dict[str, Any]:
        await gate.wait()
        return {"ok": True}

    async with console_env(tmp_path) as env:
        env.worker({"console.step": lambda inputs: {"ok": True}, "console.gate": gated})
        execution_id = await env.start(GATED)
        page = await env.page(browser)
        await page.goto(env.url)
        row = page.locator(f'[data-testid="executions"] tr[data-id="{execution_id}"]')
        await row.locator('[data-state="RUNNING"]').wait_for()
        await row.click()
        await page.wait_for_url(f"**/executions/{execution_id}")
        await tone(page, "work").and_(page.locator('[data-tone="running"]')).wait_for()
        assert await tone(page, "report").get_attribute("data-tone") == "pending"

        # The open tab costs the server one stream and nothing else while it waits.
        await _settled(env, execution_id)
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        await asyncio.sleep(1.5)
        assert requests == []
        assert env.executor.engine.hub.watchers(execution_id) == 1

        gate.set()  # the worker finishes: the page turns green without a reload
        await page.locator('h1 [data-state="SUCCEEDED"]').wait_for(timeout=10_000)
        for task in ("prepare", "work", "report"):
            assert await tone(page, task).get_attribute("data-tone") == "succeeded"
        await page.locator('[data-testid="summary"]').get_by_text('"done": true').wait_for()

        # Time travel: drag the slider to the start; the graph shows that moment.
        slider = page.get_by_test_id("slider")
        box = await slider.bounding_box()
        await page.mouse.click(box["x"] + 2, box["y"] + box["height"] / 2)
        await page.get_by_test_id("slider-label").get_by_text("as of").wait_for()
        await tone(page, "report").and_(page.locator('[data-tone="pending"]')).wait_for()
        label = await page.get_by_test_id("slider-label").inner_text()
        assert "#1 " in label or "#2 " in label, label
        await page.get_by_text("back to live").click()
        await tone(page, "report").and_(page.locator('[data-tone="succeeded"]')).wait_for()

        # A task's panel: worker, attempts, output.
        await tone(page, "work").click()
        panel = page.get_by_test_id("task-panel")
        await panel.get_by_text('"ok": true').wait_for()
        assert (await panel.get_by_test_id("task-state").inner_text()).lower() == "succeeded"
        await page.close()
        await _no_watchers(env, execution_id)
        assert page.errors == []


async def _settled(env: ConsoleEnv, execution_id: str) -> None:
    """Until the execution's events stop arriving (the gate holds `work`)."""
    last = -1
    while True:
        current = (await env.client.get(execution_id)).last_sequence
        if current == last:
            return
        last = current
        await asyncio.sleep(0.3)


async def _no_watchers(env: ConsoleEnv, execution_id: str) -> None:
    async with asyncio.timeout(5):
        while env.executor.engine.hub.watchers(execution_id):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_cancel_from_the_console(tmp_path: Path, browser: Any) -> None:
    async with console_env(tmp_path) as env:
        execution_id = await env.start(WAITING)
        page = await env.page(browser)
        await page.goto(f"{env.url}executions/{execution_id}")
        await tone(page, "approval").and_(page.locator('[data-tone="waiting"]')).wait_for()
        await page.locator('[data-action="cancel"]').click()
        await page.get_by_label("Reason").fill("not needed")
        await page.get_by_test_id("confirm").click()
        await page.locator('h1 [data-state="CANCELLED"]').wait_for(timeout=10_000)
        assert (await env.client.get(execution_id)).state == ex.EXECUTION_STATE_CANCELLED
        await page.get_by_text("cancel requested").first.wait_for()
        assert await page.locator('[data-action="cancel"]').is_disabled()
        assert page.errors == []


def _token_file(tmp_path: Path, tokens: dict[str, str]) -> str:
    path = tmp_path / "tokens.txt"
    path.write_text(
        "".join(
            f"{role}-user {role} sha256:{hashlib.sha256(token.encode()).hexdigest()}\n"
            for role, token in tokens.items()
        )
    )
    return str(path)


async def test_a_viewer_token_sees_no_actions(tmp_path: Path, browser: Any) -> None:
    tokens = {"viewer": "tok-viewer", "client": "tok-client"}
    auth = _token_file(tmp_path, tokens)
    async with console_env(tmp_path, token=tokens["client"], auth_tokens=auth) as env:
        execution_id = await env.start(WAITING)

        # No token yet: the console asks for one; a wrong one is refused clearly.
        page = await env.page(browser)
        await page.goto(env.url)
        form = page.get_by_test_id("signin")
        await form.get_by_placeholder("Token").fill("wrong")
        await form.get_by_role("button", name="Sign in").click()
        await form.get_by_text("unknown bearer token").wait_for()
        await form.get_by_placeholder("Token").fill(tokens["viewer"])
        await form.get_by_role("button", name="Sign in").click()
        await page.get_by_test_id("who").get_by_text("viewer").wait_for()

        await page.locator(f'tr[data-id="{execution_id}"]').click()
        await tone(page, "approval").and_(page.locator('[data-tone="waiting"]')).wait_for()
        await page.get_by_test_id("read-only").wait_for()
        for action in ("pause", "send-event", "cancel", "terminate"):
            button = page.locator(f'[data-action="{action}"]')
            assert await button.is_disabled(), action
            assert "viewer" in (await button.get_attribute("title") or "")
        # Replay is a read: a viewer may run it.
        await page.locator('[data-action="replay"]').click()
        await page.get_by_test_id("replay-result").get_by_text("Deterministic").wait_for()

        # The same page with a client token offers the actions, and they work.
        client = await env.page(browser, token=tokens["client"])
        await client.goto(f"{env.url}executions/{execution_id}")
        await client.get_by_test_id("who").get_by_text("client").wait_for()
        await client.locator('[data-action="send-event"]').click()
        await client.get_by_label("Name").fill("approved")
        await client.get_by_label("Data (JSON, optional)").fill('{"by": "ada"}')
        await client.get_by_test_id("confirm").click()
        await client.locator('h1 [data-state="SUCCEEDED"]').wait_for(timeout=10_000)
        # ... and the viewer's tab followed along live.
        await page.locator('h1 [data-state="SUCCEEDED"]').wait_for(timeout=10_000)
        assert page.errors == [] and client.errors == []


async def test_plans_workers_and_breakers_pages(tmp_path: Path, browser: Any) -> None:
    async with console_env(tmp_path) as env:
        env.worker({"console.step": lambda inputs: {"ok": True}}, worker_id="w-console", slots=4)
        plan = await env.client.compile(GATED.replace("console.gate", "console.step"))
        await env.client.register_plan(plan)
        page = await env.page(browser)
        await page.goto(f"{env.url}plans")
        await (
            page.get_by_test_id("plans")
            .locator("tr", has_text="console-gated")
            .locator("a")
            .click()
        )
        await page.wait_for_url("**/plans/sha256*")
        await page.locator('[data-testid="graph"] [data-task="report"]').wait_for()
        await page.get_by_test_id("start-form").get_by_role("button", name="Start").click()
        await page.wait_for_url("**/executions/**")
        await page.locator('h1 [data-state="SUCCEEDED"]').wait_for(timeout=10_000)

        await page.get_by_role("link", name="Workers").click()
        row = page.get_by_test_id("workers").locator("tr", has_text="w-console")
        await row.get_by_text("0/4").wait_for()
        await env.client.set_rate_limit("openai-rpm", 60, 60_000, burst=10)
        await page.get_by_role("link", name="Breakers").click()
        await page.get_by_test_id("breakers").wait_for()
        limits = page.get_by_test_id("rate-limits").locator("tr", has_text="openai-rpm")
        await limits.get_by_text("60/m").wait_for()
        assert await limits.locator("td").nth(2).inner_text() == "10"
        assert await limits.locator("td").nth(3).inner_text() == "server"
        assert page.errors == []


@pytest.mark.parametrize("host", ["evil.example:80"])
async def test_rpcs_refuse_other_hosts_and_origins(tmp_path: Path, host: str) -> None:
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    async with console_env(tmp_path) as env:
        url = f"{env.url}execplan.v1.ExecutorService/ListExecutions"

        def post(headers: dict[str, str]) -> int:
            request = urllib.request.Request(
                url, b"{}", {"content-type": "application/json", **headers}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return int(response.status)
            except urllib.error.HTTPError as error:
                return error.code

        assert await asyncio.to_thread(post, {}) == 200
        # DNS rebinding: a loopback console answers only loopback host names.
        assert await asyncio.to_thread(post, {"host": host}) == 421
        # Another site's page: the browser sends its Origin.
        assert await asyncio.to_thread(post, {"origin": "http://evil.example"}) == 403


BUDGETED = """
name: console-budget
budget: {cost: 1, tokens: 5000}
tasks:
  - {id: ask, type: console.llm}
  - {id: more, type: console.llm, depends_on: [ask], estimate: {cost: 0.5}}
"""


async def test_usage_and_the_budget_show_live(tmp_path: Path, browser: Any) -> None:
    from execplan.worker import TaskContext  # noqa: PLC0415

    async def llm(inputs: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
        ctx.usage(tokens_in=1200, tokens_out=300, cost=0.75)
        return {"ok": True}

    async with console_env(tmp_path) as env:
        env.worker({"console.llm": llm})
        execution_id = await env.start(BUDGETED)
        page = await env.page(browser)
        await page.goto(f"{env.url}executions/{execution_id}")
        await page.locator('h1 [data-state="PAUSED"]').wait_for(timeout=10_000)
        usage = page.get_by_test_id("execution-usage")
        await usage.get_by_text("cost 0.75 · tokens_in 1,200 · tokens_out 300").wait_for()
        budget = page.get_by_test_id("budget")
        assert "0.75" in await budget.locator('[data-limit="cost"]').inner_text()
        assert "1,500" in await budget.locator('[data-limit="tokens"]').inner_text()
        held = await page.get_by_test_id("budget-exceeded").inner_text()
        assert "0.5 estimated for more would exceed the budget of 1" in held
        await tone(page, "ask").click()
        panel = page.get_by_test_id("task-panel")
        await panel.get_by_test_id("task-usage").get_by_text("cost 0.75").wait_for()
        await page.get_by_label("Close task").click()
        # Raised and resumed elsewhere: the page follows live.
        await env.client.set_budget(execution_id, cost=5, resume=True)
        await page.locator('h1 [data-state="SUCCEEDED"]').wait_for(timeout=10_000)
        await usage.get_by_text("cost 1.5 · tokens_in 2,400 · tokens_out 600").wait_for()
        assert await page.get_by_test_id("budget-exceeded").count() == 0
        await page.get_by_text("budget changed").first.wait_for()
        assert page.errors == []
