"""`builtin.http` in the planner: its inputs checked, its headers compiled.

The rules themselves (methods, the fixed origin, statuses, secret references) live
in `execplan.httpcall.rules`, which the executor applies again before sending. Here
they become diagnostics (`builtin-invalid`, at the exact input's path) and header
values that reference secrets stay literal text in the plan, so a secret's value is
never part of a resolved input.
"""

from __future__ import annotations

from collections.abc import Sequence

from execplan.httpcall import rules, usage_map
from execplan.planner import expressions as ex
from execplan.planner.bindings import Refs, compile_bindings, compile_value
from execplan.planner.diagnostics import Diagnostics, child, echo
from execplan.planner.durations import parse_duration
from execplan.planner.model import Task
from execplan.planner.plan import Binding, BindingStruct, Literal

TYPE = "builtin.http"


def _bad(diags: Diagnostics, path: str, message: str) -> None:
    diags.error("builtin-invalid", path, message)


def _strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def check(t: Task, diags: Diagnostics) -> None:
    p = f"{t.path}.inputs"
    for key in t.inputs:
        if key not in rules.INPUT_KEYS:
            _bad(
                diags,
                child(p, key),
                f"unknown input {echo(key)}: {TYPE} reads " + ", ".join(sorted(rules.INPUT_KEYS)),
            )
    if t.resources is not None or t.placement is not None:
        where = "resources" if t.resources is not None else "placement"
        _bad(diags, f"{t.path}.{where}", f"{TYPE} runs in the executor: {where} does not apply")
    _url(t, f"{p}.url", diags)
    method = t.inputs.get("method")
    if isinstance(method, str) and ex.OPEN not in method:
        try:
            rules.check_method(method)
        except rules.HttpRuleError as exc:
            _bad(diags, f"{p}.method", str(exc))
    elif method is not None and not isinstance(method, str):
        _bad(diags, f"{p}.method", "method must be a string such as POST")
    _headers(t, f"{p}.headers", diags)
    query = t.inputs.get("query")
    if query is not None and not isinstance(query, dict):
        _bad(diags, f"{p}.query", "query must be a map of names to values")
    for key in ("url", "query", "body", "method"):
        for text in _strings(t.inputs.get(key)):
            if rules.secret_names(text):
                _bad(diags, f"{p}.{key}", "secrets may appear only in header values")
                break
    _literals(t, p, diags)


def _url(t: Task, path: str, diags: Diagnostics) -> None:
    url = t.inputs.get("url")
    if url is None or url == "":
        _bad(diags, f"{t.path}.inputs", f"{TYPE} needs inputs.url")
        return
    if not isinstance(url, str):
        _bad(diags, path, "url must be a string")
        return
    try:
        pieces = ex.split_template(url)
    except ex.TemplateError:
        return  # the bindings phase reports it
    prefix = ""
    for piece in pieces:
        if not isinstance(piece, str):
            break
        prefix += piece
    try:
        rules.literal_origin(prefix, whole=len(pieces) <= 1 and ex.OPEN not in url)
    except rules.HttpRuleError as exc:
        _bad(diags, path, str(exc))


def _headers(t: Task, path: str, diags: Diagnostics) -> None:
    headers = t.inputs.get("headers")
    if headers is None:
        return
    if not isinstance(headers, dict):
        _bad(diags, path, "headers must be a map of names to strings")
        return
    if len(headers) > rules.MAX_HEADERS:
        _bad(diags, path, f"{len(headers)} headers; at most {rules.MAX_HEADERS} are allowed")
        return
    declared = {s for s in t.secrets if s}
    for name, value in headers.items():
        where = child(path, name)
        try:
            rules.check_header_name(name)
        except rules.HttpRuleError as exc:
            _bad(diags, where, str(exc))
        if not isinstance(value, str):
            _bad(diags, where, "a header value must be a string")
            continue
        names = rules.secret_names(value)
        if not names:
            if ex.OPEN not in value:
                try:
                    rules.check_header_value(value)
                except rules.HttpRuleError as exc:
                    _bad(diags, where, str(exc))
            continue
        if ex.OPEN in rules.SECRET_REF.sub("", value):
            _bad(diags, where, "a header that reads a secret may hold only text and secrets")
        for secret in names:
            if secret not in declared:
                _bad(diags, where, f"secrets.{secret} is not listed in the task's secrets")


def _literals(t: Task, p: str, diags: Diagnostics) -> None:
    """Inputs whose literal values can be checked now rather than at run time."""
    mapping = t.inputs.get(usage_map.KEY)
    if mapping is not None and not any(ex.OPEN in s for s in _strings(mapping)):
        try:
            usage_map.parse(mapping)
        except rules.HttpRuleError as exc:
            _bad(diags, f"{p}.{usage_map.KEY}", str(exc))
    expected = t.inputs.get("expected_status")
    if expected is not None and not (isinstance(expected, str) and ex.OPEN in expected):
        try:
            rules.status_matcher(expected)
        except rules.HttpRuleError as exc:
            _bad(diags, f"{p}.expected_status", str(exc))
    size = t.inputs.get("max_response_bytes")
    if size is not None and not (isinstance(size, str) and ex.OPEN in size):
        try:
            rules.check_max_response_bytes(size)
        except rules.HttpRuleError as exc:
            _bad(diags, f"{p}.max_response_bytes", str(exc))
    timeout = t.inputs.get("timeout")
    if timeout is not None and not (isinstance(timeout, str) and ex.OPEN in timeout):
        if not isinstance(timeout, str):
            _bad(diags, f"{p}.timeout", "timeout must be a duration string such as 30s")
            return
        try:
            ms = parse_duration(timeout)
        except ValueError as exc:
            diags.error("invalid-duration", f"{p}.timeout", str(exc))
            return
        if not 0 < ms <= rules.MAX_TIMEOUT_MS:
            _bad(diags, f"{p}.timeout", "timeout must be within 1ms..10m")


def compile_inputs(t: Task, diags: Diagnostics, refs: Refs) -> Sequence[Binding]:
    """The task's bindings; header values that read secrets stay literal text."""
    headers = t.inputs.get("headers")
    if not isinstance(headers, dict) or not any(
        isinstance(v, str) and rules.secret_names(v) for v in headers.values()
    ):
        return compile_bindings(t.inputs, f"{t.path}.inputs", diags, refs)
    rest = {k: v for k, v in t.inputs.items() if k != "headers"}
    path = f"{t.path}.inputs.headers"
    fields = []
    for name in sorted(headers):
        value = headers[name]
        if isinstance(value, str) and rules.secret_names(value):
            fields.append(Binding(name, Literal(value)))
        else:
            fields.append(Binding(name, compile_value(value, child(path, name), diags, refs)))
    header_binding = Binding("headers", BindingStruct(tuple(fields)))
    out = [*compile_bindings(rest, f"{t.path}.inputs", diags, refs), header_binding]
    return tuple(sorted(out, key=lambda b: b.name))
