"""The builtin.http client against a real local HTTP server: statuses, retries'
error types, secret headers (never in what comes back), the response size cap while
streaming, timeouts, redirects not followed, the fixed origin and the allow-list."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from execplan.httpcall import rules
from execplan.httpcall.client import HttpCaller, HttpOutcome, build_request

if TYPE_CHECKING:
    from tests.support.http_server import TestHttpServer
else:  # tests/ is on sys.path: see tests/support/__init__.py
    from support.http_server import TestHttpServer

SECRET = "s3cr3t-value-123"


@pytest.fixture
def server() -> Iterator[TestHttpServer]:
    with TestHttpServer() as s:
        yield s


@pytest.fixture
async def caller() -> AsyncIterator[HttpCaller]:
    c = HttpCaller(max_concurrent=4)
    yield c
    await c.close()


async def call(caller: HttpCaller, server: TestHttpServer, path: str, **inputs: Any) -> HttpOutcome:
    request = build_request({"url": server.url(path), **inputs}, server.origin, 5_000)
    return await caller.call(request, {"api_key": SECRET})


async def test_json_response_is_the_output(caller: HttpCaller, server: TestHttpServer) -> None:
    out = await call(caller, server, "/json", method="POST", query={"page": 2, "q": "a b"},
                     body={"model": "m", "n": 1})  # fmt: skip
    assert out.error is None
    output: Any = out.output
    assert output["status"] == 200
    assert output["headers"]["content-type"] == "application/json"
    assert output["body"] == {"ok": True, "method": "POST", "query": {"page": "2", "q": "a b"},
                              "body": {"model": "m", "n": 1}}  # fmt: skip
    text = await call(caller, server, "/json", method="PUT", body="plain text")
    assert text.output["body"]["body"] == "plain text"  # type: ignore[index]


async def test_secret_headers_are_sent_and_never_returned(
    caller: HttpCaller, server: TestHttpServer
) -> None:
    out = await call(caller, server, "/echo-auth",
                     headers={"Authorization": "Bearer ${{ secrets.api_key }}"})  # fmt: skip
    assert server.requests[-1].headers["Authorization"] == f"Bearer {SECRET}"
    assert out.output["body"] == {"auth": "Bearer [secret:api_key]"}  # type: ignore[index]
    assert SECRET not in repr(out)
    missing = build_request(
        {"url": server.url("/json"), "headers": {"X": "${{ secrets.nope }}"}}, server.origin, 5_000
    )
    failed = await caller.call(missing, {})
    assert failed.error is not None and failed.error.type == "SecretNotFound"


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [(503, "HttpStatus", True), (500, "HttpStatus", True), (408, "HttpStatus", True),
     (404, "HttpStatus", False), (400, "HttpStatus", False)],
)  # fmt: skip
async def test_unexpected_statuses_fail(
    caller: HttpCaller, server: TestHttpServer, status: int, kind: str, retryable: bool
) -> None:
    out = await call(caller, server, f"/status/{status}")
    assert out.error is not None
    assert (out.error.type, out.error.retryable) == (kind, retryable)
    assert out.error.message.startswith(f"GET {server.origin}/status/{status}: {status} ")


async def test_expected_statuses_succeed(caller: HttpCaller, server: TestHttpServer) -> None:
    out = await call(caller, server, "/status/404", expected_status=[200, 404])
    assert out.error is None and out.output["status"] == 404  # type: ignore[index]


async def test_429_carries_retry_after(caller: HttpCaller, server: TestHttpServer) -> None:
    out = await call(caller, server, "/status/429?after=7")
    assert out.error is not None
    assert (out.error.type, out.error.retryable, out.error.retry_after_ms) == (
        "RateLimited",
        True,
        7000,
    )


@pytest.mark.parametrize("chunked", ["0", "1"])
async def test_the_size_cap_holds_while_streaming(
    caller: HttpCaller, server: TestHttpServer, chunked: str
) -> None:
    out = await call(
        caller, server, f"/big/{2 << 20}?chunked={chunked}", max_response_bytes=1 << 20
    )
    assert out.error is not None and out.error.type == "ResponseTooLarge"
    assert not out.error.retryable
    ok = await call(caller, server, f"/big/{1 << 20}?chunked={chunked}", max_response_bytes=1 << 20)
    assert ok.error is None and len(ok.output["body"]) == 1 << 20  # type: ignore[index]


async def test_timeouts_and_unreachable_hosts_are_retryable(
    caller: HttpCaller, server: TestHttpServer
) -> None:
    out = await call(caller, server, "/slow/3000", timeout="300ms")
    assert out.error is not None and (out.error.type, out.error.retryable) == ("HttpTimeout", True)
    gone = build_request({"url": "http://127.0.0.1:9/x"}, "http://127.0.0.1:9", 2_000)
    failed = await caller.call(gone, {})
    assert failed.error is not None and (failed.error.type, failed.error.retryable) == (
        "HttpError",
        True,
    )


async def test_redirects_are_not_followed(caller: HttpCaller, server: TestHttpServer) -> None:
    out = await call(caller, server, "/redirect")
    assert out.error is not None and out.error.type == "HttpStatus" and not out.error.retryable
    assert [r.path for r in server.requests] == ["/redirect"]


def test_the_url_must_stay_on_the_plans_origin(server: TestHttpServer) -> None:
    for url in ("http://127.0.0.2:1/x", "https://evil.example/x", "http://user@127.0.0.1/x"):
        with pytest.raises(rules.HttpRuleError):
            build_request({"url": url}, server.origin, 5_000)
    with pytest.raises(rules.HttpRuleError):
        build_request({"url": server.url("/"), "method": "BREW"}, server.origin, 5_000)
    with pytest.raises(rules.HttpRuleError):
        build_request({"url": server.url("/"), "headers": {"A": "x\ny"}}, server.origin, 5_000)


async def test_the_allow_list_refuses_other_origins(server: TestHttpServer) -> None:
    caller = HttpCaller(allow=frozenset({"https://api.example.com"}))
    try:
        out = await caller.call(
            build_request({"url": server.url("/json")}, server.origin, 5_000), {}
        )
        assert out.error is not None and out.error.type == "HttpOriginNotAllowed"
        assert server.requests == []
    finally:
        await caller.close()
