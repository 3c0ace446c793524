"""The rules of `builtin.http` inputs, shared by the planner and the executor.

    inputs:
      method: POST                        # GET (default), HEAD, POST, PUT, PATCH, DELETE, OPTIONS
      url: "https://api.example.com/v1/items/${{ workflow.inputs.id }}"
      query: {page: "${{ workflow.inputs.page }}"}       # appended, URL-encoded
      headers: {Authorization: "Bearer ${{ secrets.api_key }}"}
      body: {name: "${{ workflow.inputs.name }}"}       # JSON; a string is sent as is
      expected_status: [200, "2xx"]        # default 2xx
      max_response_bytes: 1048576          # default 1 MiB, at most 8 MiB
      timeout: 30s                         # default: start_to_close, else 30s
      usage: {tokens_in: body.usage.prompt_tokens}   # counted from the response (usage_map.py)

Only outbound to what the workflow names: the url's scheme, host and port must be
literal text in the workflow, ending at the first `/` or `?` after the host;
expressions may fill in only the path and the query. The planner refuses anything
else, and the executor checks the final URL's origin against the plan's before it
sends (`origin_of`). An operator can narrow that further with `execplan serve
--http-allow ORIGIN` (only listed origins may be called at all).

Secrets: `${{ secrets.NAME }}` may appear only in header values, and NAME must be in
the task's `secrets`. The planner keeps such a header as literal text; the executor
substitutes the value just before sending, so resolved inputs, events, logs, cache
keys and errors only ever hold the reference.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
INPUT_KEYS = frozenset(
    {
        "method",
        "url",
        "query",
        "headers",
        "body",
        "expected_status",
        "max_response_bytes",
        "timeout",
        "usage",  # what the response says the call used: usage_map.py
    }
)
SCHEMES = ("http", "https")
DEFAULT_MAX_RESPONSE_BYTES = 1 << 20
MAX_RESPONSE_BYTES = 8 << 20
DEFAULT_TIMEOUT_MS = 30_000
MAX_TIMEOUT_MS = 600_000
MAX_URL_CHARS = 8192
MAX_HEADERS = 64
MAX_HEADER_CHARS = 8192
# Statuses that are worth another attempt: timeouts, throttling, server errors.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

SECRET_REF = re.compile(r"\$\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# RFC 9110 token characters.
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_STATUS_CLASS = re.compile(r"([1-5])xx")


class HttpRuleError(ValueError):
    """An input that breaks a rule; the message is one line."""


def origin_of(url: str) -> str:
    """`scheme://host[:port]` of an absolute http(s) URL, lower-cased; raises
    HttpRuleError for anything else (no userinfo: credentials go in headers)."""
    if len(url) > MAX_URL_CHARS:
        raise HttpRuleError(f"url is longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise HttpRuleError(f"invalid url: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise HttpRuleError("url must start with http:// or https://")
    if "@" in parts.netloc:
        raise HttpRuleError("url must not carry credentials (user@host): use a header secret")
    host = (parts.hostname or "").lower()
    if not host:
        raise HttpRuleError("url has no host")
    if any(c in host for c in "\\ \t\r\n%"):
        raise HttpRuleError("url host has characters a host cannot have")
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}" + (f":{port}" if port is not None else "")


def literal_origin(prefix: str, whole: bool) -> str:
    """The origin named by the literal text before a url's first expression.

    `whole` is True when the url has no expression at all. Otherwise the prefix
    must reach past the host: to a `/` or `?` that ends the authority."""
    if not whole:
        scheme_end = prefix.find("://")
        rest = prefix[scheme_end + 3 :] if scheme_end >= 0 else ""
        if scheme_end < 0 or not any(c in rest for c in "/?#"):
            raise HttpRuleError(
                "the url's scheme and host must be literal, up to the first / after the "
                "host: expressions may fill in only the path and the query"
            )
    return origin_of(prefix if whole else prefix[: _authority_end(prefix)])


def _authority_end(text: str) -> int:
    start = text.find("://") + 3
    ends = [i for i in (text.find(c, start) for c in "/?#") if i >= 0]
    return min(ends)


def secret_names(text: str) -> list[str]:
    return SECRET_REF.findall(text)


def substitute_secrets(text: str, values: dict[str, str]) -> str:
    """`text` with every `${{ secrets.NAME }}` replaced; KeyError names a missing one."""
    return SECRET_REF.sub(lambda m: values[m[1]], text)


def check_header_name(name: str) -> None:
    if not HEADER_NAME.fullmatch(name) or len(name) > 256:
        raise HttpRuleError(f"invalid header name {name[:64]!r}")


def check_header_value(value: str) -> None:
    if len(value) > MAX_HEADER_CHARS:
        raise HttpRuleError(f"a header value is longer than {MAX_HEADER_CHARS} characters")
    if any(c in value for c in "\r\n\0"):
        raise HttpRuleError("a header value must not contain CR, LF or NUL")


def check_method(method: object) -> str:
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise HttpRuleError(f"method must be one of {', '.join(METHODS)}")
    return method.upper()


def status_matcher(expected: object) -> frozenset[int]:
    """The statuses a list like `[200, "2xx"]` accepts (default: every 2xx)."""
    if expected is None:
        return frozenset(range(200, 300))
    if not isinstance(expected, list) or not expected:
        raise HttpRuleError('expected_status must be a non-empty list such as [200, "2xx"]')
    codes: set[int] = set()
    for item in expected:
        if isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599:
            codes.add(item)
        elif isinstance(item, str) and item.isdigit() and 100 <= int(item) <= 599:
            codes.add(int(item))
        elif isinstance(item, str) and (m := _STATUS_CLASS.fullmatch(item.lower())):
            base = int(m[1]) * 100
            codes.update(range(base, base + 100))
        else:
            raise HttpRuleError(f"expected_status entry {str(item)[:32]!r}: use 100..599 or 2xx")
    return frozenset(codes)


def check_max_response_bytes(value: object) -> int:
    if value is None:
        return DEFAULT_MAX_RESPONSE_BYTES
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not 1 <= value <= MAX_RESPONSE_BYTES
    ):
        raise HttpRuleError(f"max_response_bytes must be an integer within 1..{MAX_RESPONSE_BYTES}")
    return value
