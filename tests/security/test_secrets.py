"""Secrets reach the worker inside its dispatch, and a builtin.http request's header,
and nowhere else: a canary value is absent from the SQLite database (and its WAL),
every log record (text and JSON, at DEBUG), stdout/stderr and every exported span
after a run, even though the HTTP server echoes it back in its response."""

from __future__ import annotations

import asyncio
import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from execplan.client import ExecutorClient, from_struct
from execplan.config import ServerConfig
from execplan.executor.runtime.engine import EngineConfig
from execplan.executor.runtime.secrets import FileSecrets, SecretsFileError, provider_for
from execplan.logs import JsonFormatter
from execplan.server import Component, ExecplanServer, ExecutorComponent, PlannerComponent
from execplan.v1 import execution_pb2
from execplan.worker import Worker
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

if TYPE_CHECKING:
    from tests.support.http_server import TestHttpServer
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support.http_server import TestHttpServer

CANARY = "canary-9f2c1e7d-do-not-log"

WORKFLOW = """
name: secretive
tasks:
  - {id: first, type: sec.use, secrets: [canary], retry: {max_attempts: 2, initial_interval: 10ms}}
  - {id: second, type: sec.use, secrets: [canary, missing], depends_on: [first]}
  - id: call
    type: builtin.http
    depends_on: [second]
    secrets: [canary]
    inputs:
      url: "ORIGIN/echo-auth"
      headers: {Authorization: "Bearer ${{ secrets.canary }}"}
outputs:
  echoed: "${{ tasks.call.output.body.auth }}"
"""


@pytest.fixture
def all_logs() -> Iterator[io.StringIO]:
    """Every record of every logger at DEBUG, formatted as text and as JSON."""
    stream = io.StringIO()
    text, structured = logging.StreamHandler(stream), logging.StreamHandler(stream)
    structured.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old = root.level
    root.addHandler(text)
    root.addHandler(structured)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(text)
        root.removeHandler(structured)
        root.setLevel(old)


def secrets_file(tmp_path: Path, mode: int = 0o600) -> Path:
    path = tmp_path / "secrets.yaml"
    path.write_text(f"canary: {CANARY}\nother: x\n")
    path.chmod(mode)
    return path


async def test_canary_secret_reaches_only_the_worker(
    tmp_path: Path, all_logs: io.StringIO, capfd: pytest.CaptureFixture[str]
) -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    db = tmp_path / "execplan.db"
    config = ServerConfig(listen="127.0.0.1:0", db_path=str(db), grace_seconds=1, tracing=True)
    executor = ExecutorComponent(
        str(db),
        # A checkpoint after every event: checkpoints are searched too.
        config=EngineConfig(checkpoint_every=1, ack_deadline_ms=2_000),
        secrets=FileSecrets(secrets_file(tmp_path)),
        tracer_provider=tracer_provider,
    )
    components: list[Component] = [executor, PlannerComponent(config)]
    received: list[dict[str, str]] = []

    def use(inputs: dict[str, Any], ctx: Any) -> dict[str, Any]:
        received.append(ctx.secrets)
        if len(received) == 1:
            raise RuntimeError("first attempt fails, so errors and retries are logged too")
        return {"secret_length": len(ctx.secrets["canary"])}

    web = TestHttpServer().__enter__()
    async with ExecplanServer(config, components, tracer_provider=tracer_provider) as server:
        worker = Worker(server.address)
        worker.task("sec.use")(use)
        running = asyncio.create_task(worker.serve())
        try:
            async with ExecutorClient(server.address) as client:
                started = await client.start(source=WORKFLOW.replace("ORIGIN", web.origin))
                async with asyncio.timeout(20):
                    async for event in client.watch(started.execution_id):
                        if event.HasField("execution_completed"):
                            break
                done = await client.get(started.execution_id)
                history = [e async for e in client.history(started.execution_id)]
            stored_while_running = _store_files(db)
        finally:
            await worker.stop()
            running.cancel()
            web.__exit__(None, None, None)
    assert done.state == execution_pb2.EXECUTION_STATE_SUCCEEDED, done.error
    # The HTTP call sent the secret, and the server echoed it: what came back is masked.
    assert [r.headers["Authorization"] for r in web.requests] == [f"Bearer {CANARY}"]
    assert from_struct(done.outputs) == {"echoed": "Bearer [secret:canary]"}
    assert received == [{"canary": CANARY}] * 3  # `missing` is simply absent
    assert history and all(CANARY not in str(e) for e in history)

    out, err = capfd.readouterr()
    places = {
        "logs": all_logs.getvalue(),
        "stdout": out,
        "stderr": err,
        "spans": "\n".join(s.to_json() for s in spans.get_finished_spans()),
    }
    assert places["logs"] and places["spans"], "nothing captured: the test proves nothing"
    for name, text in (stored_while_running | _store_files(db)).items():
        places[name] = places.get(name, "") + text
    # Strings are stored verbatim (not compressed), so grepping the files means something.
    assert "sec.use" in places["execplan.db"] + places.get("execplan.db-wal", "")
    leaks = [where for where, text in places.items() if CANARY in text]
    assert not leaks, f"the canary secret leaked into {leaks}"


def _store_files(db: Path) -> dict[str, str]:
    found = {}
    for suffix in ("", "-wal", "-shm", "-journal"):
        path = Path(f"{db}{suffix}")
        if path.exists():
            found[path.name] = path.read_bytes().decode("latin-1")
    return found


def test_file_provider_warns_on_group_or_world_access(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "execplan.secrets"):
        provider = FileSecrets(secrets_file(tmp_path, 0o600))
        assert not caplog.records
        assert provider.resolve(("canary", "nope")) == {"canary": CANARY}
        FileSecrets(secrets_file(tmp_path, 0o644))
    assert "chmod 600" in caplog.text
    assert CANARY not in caplog.text and CANARY not in repr(provider)


@pytest.mark.parametrize("content", [f"- {CANARY}\n", f"canary: [{CANARY}]\n", "{{{" + CANARY])
def test_bad_secrets_file_errors_never_quote_values(tmp_path: Path, content: str) -> None:
    path = tmp_path / "secrets.yaml"
    path.write_text(content)
    with pytest.raises(SecretsFileError) as info:
        FileSecrets(path)
    assert CANARY not in str(info.value)
    assert info.value.__cause__ is None  # no parser message quoting the file


def test_provider_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECPLAN_SECRET_CANARY", "from-env")
    assert provider_for(None).resolve(("canary",)) == {"canary": "from-env"}
    assert provider_for(str(secrets_file(tmp_path))).resolve(("canary",)) == {"canary": CANARY}
    assert os.environ["EXECPLAN_SECRET_CANARY"] == "from-env"
