"""The HTTP client of `builtin.http`: one request, bounded in time, size and
concurrency, that never lets a secret out.

    caller = HttpCaller(max_concurrent=32, allow=frozenset())   # allow: empty = any origin
    request = build_request(inputs, plan_origin, default_timeout_ms=30_000)
    outcome = await caller.call(request, secrets={"api_key": "..."})
    outcome.output   # {"status": 200, "headers": {...}, "body": <JSON or text>}
    outcome.error    # HttpFailure(type, message, retryable, retry_after_ms)
    await caller.close()

httpx does the HTTP (HTTP/1.1, TLS, connection pooling, streaming). Around it:

- the final URL's origin must equal the one the plan names (`rules.origin_of`), and
  the operator's allow-list when there is one; redirects are not followed (a 3xx is
  a status like any other), so a request never leaves for another origin;
- `${{ secrets.NAME }}` in header values is replaced only here, just before sending;
  secret values are masked (`[secret:NAME]`) in everything returned: the output
  body, headers and error messages, in case a server echoes them back;
- the response is read as a stream and abandoned past `max_response_bytes`
  (`ResponseTooLarge`); the whole exchange is bounded by `timeout`;
- statuses outside `expected_status` fail the attempt: 429 is `RateLimited` with the
  server's Retry-After (the executor backs off the task's rate-limit keys), 408, 425
  and 5xx are `HttpStatus` and retried, other statuses are `HttpStatus` and not.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from execplan.httpcall import rules

MAX_ERROR_BODY_CHARS = 300
MAX_RESPONSE_HEADERS = 64
PARSE_OFF_LOOP_BYTES = 256 << 10


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    url: str
    headers: dict[str, str]  # values may hold `${{ secrets.NAME }}`
    query: dict[str, str] = field(default_factory=dict)
    body: object = None
    has_body: bool = False
    expected: frozenset[int] = frozenset(range(200, 300))
    max_response_bytes: int = rules.DEFAULT_MAX_RESPONSE_BYTES
    timeout_ms: int = rules.DEFAULT_TIMEOUT_MS


@dataclass(frozen=True, slots=True)
class HttpFailure:
    type: str
    message: str
    retryable: bool
    retry_after_ms: int | None = None


@dataclass(frozen=True, slots=True)
class HttpOutcome:
    output: object = None
    error: HttpFailure | None = None


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value, separators=(",", ":"))


def build_request(
    inputs: Mapping[str, Any], plan_origin: str, default_timeout_ms: int
) -> HttpRequest:
    """The request the resolved `inputs` describe; HttpRuleError for a bad one (a
    method or status list from an expression, a URL that left the plan's origin)."""
    from execplan.planner.durations import parse_duration  # noqa: PLC0415

    url = inputs.get("url")
    if not isinstance(url, str):
        raise rules.HttpRuleError("url must be a string")
    origin = rules.origin_of(url)
    if origin != plan_origin:
        raise rules.HttpRuleError(f"url left the origin the workflow names ({plan_origin})")
    headers: dict[str, str] = {}
    raw_headers = inputs.get("headers") or {}
    if not isinstance(raw_headers, dict):
        raise rules.HttpRuleError("headers must be a map of names to strings")
    for name, value in raw_headers.items():
        rules.check_header_name(name)
        text = _text(value)
        rules.check_header_value(text)
        headers[name] = text
    query = inputs.get("query") or {}
    if not isinstance(query, dict):
        raise rules.HttpRuleError("query must be a map of names to values")
    timeout = inputs.get("timeout")
    timeout_ms = default_timeout_ms
    if timeout is not None:
        try:
            timeout_ms = parse_duration(str(timeout))
        except ValueError as exc:
            raise rules.HttpRuleError(f"timeout: {exc}") from None
    if not 0 < timeout_ms <= rules.MAX_TIMEOUT_MS:
        raise rules.HttpRuleError("timeout must be within 1ms..10m")
    size = inputs.get("max_response_bytes")
    if isinstance(size, float) and size.is_integer():
        size = int(size)
    return HttpRequest(
        method=rules.check_method(inputs.get("method", "GET")),
        url=url,
        headers=headers,
        query={str(k): _text(v) for k, v in query.items()},
        body=inputs.get("body"),
        has_body="body" in inputs and inputs["body"] is not None,
        expected=rules.status_matcher(inputs.get("expected_status")),
        max_response_bytes=rules.check_max_response_bytes(size),
        timeout_ms=timeout_ms,
    )


def _retry_after_ms(value: str | None) -> int | None:
    """Retry-After as seconds or an HTTP date, in ms (at most an hour)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(int(value), 3600) * 1000
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, min(math.ceil((when.timestamp() - time.time()) * 1000), 3_600_000))


class _Masker:
    def __init__(self, secrets: Mapping[str, str]) -> None:
        # Longest first, so a secret containing another is masked whole.
        self._pairs = sorted(
            ((v, f"[secret:{k}]") for k, v in secrets.items() if v), key=lambda p: -len(p[0])
        )

    def text(self, s: str) -> str:
        for value, mask in self._pairs:
            if value in s:
                s = s.replace(value, mask)
        return s


class HttpCaller:
    """Sends `builtin.http` requests; one per executor, closed on shutdown."""

    def __init__(self, max_concurrent: int = 32, allow: frozenset[str] = frozenset()) -> None:
        self._allow = allow
        self._limit = asyncio.Semaphore(max_concurrent)
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,  # no proxy or netrc from the environment: only what the plan names
            limits=httpx.Limits(max_connections=max_concurrent),
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def call(self, request: HttpRequest, secrets: Mapping[str, str]) -> HttpOutcome:
        mask = _Masker(secrets)
        origin = rules.origin_of(request.url)
        if self._allow and origin not in self._allow:
            return _fail(
                "HttpOriginNotAllowed",
                f"{origin} is not in this server's --http-allow list",
                retryable=False,
            )
        try:
            headers = {
                k: rules.substitute_secrets(v, dict(secrets)) for k, v in request.headers.items()
            }
        except KeyError as exc:
            return _fail("SecretNotFound", f"secret {exc.args[0]} is not available", retryable=True)
        what = (
            f"{request.method} {origin}{httpx.URL(request.url).raw_path.decode('ascii', 'replace')}"
        )
        async with self._limit:
            try:
                async with asyncio.timeout(request.timeout_ms / 1000):
                    return await self._send(request, headers, mask, what)
            except TimeoutError:
                return _fail(
                    "HttpTimeout",
                    f"{mask.text(what)}: no answer within {request.timeout_ms} ms",
                    retryable=True,
                )
            except httpx.HTTPError as exc:
                # The message names the failure (connect, TLS, protocol), never a header.
                reason = mask.text(str(exc) or type(exc).__name__)
                return _fail(
                    "HttpError",
                    f"{mask.text(what)}: {type(exc).__name__}: {reason}",
                    retryable=True,
                )

    async def _send(
        self, request: HttpRequest, headers: dict[str, str], mask: _Masker, what: str
    ) -> HttpOutcome:
        if not any(k.lower() == "accept-encoding" for k in headers):
            headers = {**headers, "Accept-Encoding": "identity"}
        kwargs: dict[str, Any] = {"headers": headers, "params": request.query or None}
        if request.has_body:
            if isinstance(request.body, str):
                kwargs["content"] = request.body.encode()
            else:
                kwargs["json"] = request.body
        async with self._client.stream(request.method, request.url, **kwargs) as response:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > request.max_response_bytes:
                return _too_large(what, request.max_response_bytes, mask)
            chunks: list[bytes] = []
            total = 0
            # Decoded bytes are counted (we ask for identity; a server may compress
            # anyway): the cap bounds what we hold, whatever came over the wire.
            async for chunk in response.aiter_bytes():
                total += len(chunk)
                if total > request.max_response_bytes:
                    return _too_large(what, request.max_response_bytes, mask)
                chunks.append(chunk)
        raw = b"".join(chunks)
        text = mask.text(raw.decode(response.encoding or "utf-8", "replace"))
        status = response.status_code
        if status not in request.expected:
            return _status_failure(status, response, text, mask.text(what))
        body: object = text
        if "json" in response.headers.get("content-type", "").lower() and text.strip():
            try:
                body = await (
                    asyncio.to_thread(json.loads, text)
                    if len(text) > PARSE_OFF_LOOP_BYTES
                    else _now(json.loads(text))
                )
            except ValueError:
                body = text
        out_headers = {}
        for name, value in list(response.headers.items())[:MAX_RESPONSE_HEADERS]:
            if name.lower() not in ("set-cookie", "authorization"):
                out_headers[name.lower()] = mask.text(value)
        return HttpOutcome({"status": status, "headers": out_headers, "body": body})


async def _now(value: object) -> object:
    return value


def _too_large(what: str, cap: int, mask: _Masker) -> HttpOutcome:
    return _fail(
        "ResponseTooLarge",
        f"{mask.text(what)}: the response is larger than max_response_bytes ({cap})",
        retryable=False,
    )


def _status_failure(status: int, response: httpx.Response, text: str, what: str) -> HttpOutcome:
    reason = response.reason_phrase or ""
    snippet = " ".join(text.split())[:MAX_ERROR_BODY_CHARS]
    message = f"{what}: {status} {reason}".rstrip() + (f": {snippet}" if snippet else "")
    if status == 429:
        wait = _retry_after_ms(response.headers.get("retry-after"))
        return _fail("RateLimited", message, retryable=True, retry_after_ms=wait or 1000)
    return _fail(
        "HttpStatus", message, retryable=status in rules.RETRYABLE_STATUSES or status >= 500
    )


def _fail(
    kind: str, message: str, *, retryable: bool, retry_after_ms: int | None = None
) -> HttpOutcome:
    return HttpOutcome(error=HttpFailure(kind, message, retryable, retry_after_ms))
