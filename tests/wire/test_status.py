"""The error table: codes, google.rpc details, and what a real client receives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import grpc
import pytest
from execplan import errors
from execplan.wire.status import (
    DOMAIN,
    TABLE,
    mapping_for,
    stream_errors,
    to_rpc_status,
    unary_errors,
)
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

CODES = [
    (errors.InvalidArgument("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (errors.WorkflowInvalid("x"), grpc.StatusCode.INVALID_ARGUMENT),
    (errors.LimitExceeded("x"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Overloaded("x", 1.5), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.NotFound("x"), grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION),
    (errors.StaleToken("x"), grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
    (errors.StoreError("x"), grpc.StatusCode.UNAVAILABLE),
    (errors.ConcurrencyConflict("x"), grpc.StatusCode.ABORTED),
    (errors.ExecplanError("x"), grpc.StatusCode.INTERNAL),
]


@pytest.mark.parametrize(("error", "code"), CODES, ids=lambda v: type(v).__name__)
def test_each_error_maps_to_its_code(error: errors.ExecplanError, code: grpc.StatusCode) -> None:
    assert mapping_for(error).code == code
    assert to_rpc_status(error).code == code.value[0]


def test_every_error_class_has_a_row() -> None:
    def subclasses(cls: type[errors.ExecplanError]) -> set[type[errors.ExecplanError]]:
        found: set[type[errors.ExecplanError]] = set()
        for sub in cls.__subclasses__():
            found |= {sub, *subclasses(sub)}
        return found

    assert subclasses(errors.ExecplanError) <= set(TABLE)


def test_subclass_without_row_inherits_parent() -> None:
    class Gone(errors.NotFound):
        pass

    assert mapping_for(Gone("x")).code == grpc.StatusCode.NOT_FOUND


def _unpack(st: status_pb2.Status, cls: Any) -> list[Any]:
    found = []
    for detail in st.details:
        msg = cls()
        if detail.Unpack(msg):
            found.append(msg)
    return found


def test_workflow_invalid_has_bad_request_and_error_info() -> None:
    err = errors.WorkflowInvalid(
        "workflow invalid",
        [
            errors.FieldViolation(
                "tasks[3].depends_on[0]", "unknown task 'x'", "unknown-dependency"
            ),
            errors.FieldViolation("name", "must not be empty"),
        ],
    )
    st = to_rpc_status(err)
    assert st.code == code_pb2.INVALID_ARGUMENT
    assert st.message == "workflow invalid"
    (bad,) = _unpack(st, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("tasks[3].depends_on[0]", "unknown-dependency: unknown task 'x'"),
        ("name", "must not be empty"),
    ]
    (info,) = _unpack(st, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("WORKFLOW_INVALID", DOMAIN)


def test_limit_has_quota_failure() -> None:
    err = errors.LimitExceeded("too big", [errors.FieldViolation("tasks", "> 50000", "too-many")])
    (quota,) = _unpack(to_rpc_status(err), error_details_pb2.QuotaFailure)
    assert [(v.subject, v.description) for v in quota.violations] == [
        ("tasks", "too-many: > 50000")
    ]


def test_details_and_message_stay_under_the_trailer_limit() -> None:
    """gRPC clients refuse trailers over 8 KiB (the status then arrives as
    RESOURCE_EXHAUSTED): however many and however long the violations, the encoded
    status stays well under it, and the last violation says what was left out."""
    many = [
        errors.FieldViolation(f"tasks[{i}].depends_on[0]" + "x" * 500, "é" * 1000, "code")
        for i in range(10_000)
    ]
    for error in (errors.WorkflowInvalid("🙂" * 10_000, many), errors.LimitExceeded("x", many)):
        st = to_rpc_status(error)
        assert len(st.message.encode()) < 500
        # What goes on the wire: details base64 (4/3), message percent-encoded (x3).
        assert st.ByteSize() * 4 / 3 + len(st.message.encode()) * 3 < 6 * 1024
        kind = (
            error_details_pb2.BadRequest
            if isinstance(error, errors.InvalidArgument)
            else error_details_pb2.QuotaFailure
        )
        (detail,) = _unpack(st, kind)
        listed = list(
            detail.field_violations
            if isinstance(detail, error_details_pb2.BadRequest)
            else detail.violations
        )
        assert listed[-1].description.endswith("more violations not shown")
        assert len(listed) > 2


def test_overloaded_has_retry_info() -> None:
    (retry,) = _unpack(to_rpc_status(errors.Overloaded("busy", 2.25)), error_details_pb2.RetryInfo)
    assert retry.retry_delay.ToMilliseconds() == 2250


# --- through a real server --------------------------------------------------------

_Ctx = grpc.aio.ServicerContext[Any, Any]


class _Handlers:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    @unary_errors
    async def unary(self, request: bytes, context: _Ctx) -> bytes:
        raise self.exc

    @stream_errors
    async def stream(self, request: bytes, context: _Ctx) -> AsyncGenerator[bytes, None]:
        yield b"first"
        raise self.exc


async def _call(exc: BaseException, streaming: bool) -> tuple[grpc.aio.AioRpcError, list[bytes]]:
    handlers = _Handlers(exc)
    method: Any = (
        grpc.unary_stream_rpc_method_handler(handlers.stream)
        if streaming
        else grpc.unary_unary_rpc_method_handler(handlers.unary)
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.Svc", {"M": method})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    received: list[bytes] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                # Untyped on purpose: raw bytes, no serializers.
                stream: Any = channel.unary_stream("/test.Svc/M")
                unary: Any = channel.unary_unary("/test.Svc/M")
                if streaming:
                    async for item in stream(b""):
                        received.append(item)
                else:
                    await unary(b"")
        return info.value, received
    finally:
        await server.stop(None)


@pytest.mark.parametrize("streaming", [False, True])
async def test_client_decodes_bad_request(streaming: bool) -> None:
    exc = errors.InvalidArgument("bad", [errors.FieldViolation("definition", "required")])
    err, received = await _call(exc, streaming)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert received == ([b"first"] if streaming else [])
    st = rpc_status.from_call(err)
    assert st is not None
    (bad,) = _unpack(st, error_details_pb2.BadRequest)
    assert bad.field_violations[0].field == "definition"


@pytest.mark.parametrize("streaming", [False, True])
async def test_unexpected_error_is_internal_without_traceback(
    streaming: bool, caplog: pytest.LogCaptureFixture
) -> None:
    err, _ = await _call(ZeroDivisionError("secret detail"), streaming)
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "secret detail" not in (err.details() or "")
    assert "Traceback" not in (err.details() or "")
    assert "incident" in (err.details() or "")
    assert any(r.exc_info for r in caplog.records)  # the traceback went to the log


def native_panic() -> BaseException:
    """A real pyo3 PanicException (a BaseException), raised by the `cel` library on a
    parse error past column 65,535."""
    import cel  # noqa: PLC0415

    try:
        cel.compile("(" * 100_000)
    except BaseException as exc:  # a PanicException is not an Exception
        assert errors.is_native_panic(exc)
        return exc
    raise AssertionError("the library did not panic")


@pytest.mark.parametrize("streaming", [False, True])
async def test_a_native_panic_in_a_handler_is_internal(streaming: bool) -> None:
    err, _ = await _call(native_panic(), streaming)
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "incident" in (err.details() or "")


async def test_other_base_exceptions_are_not_swallowed() -> None:
    assert not errors.is_native_panic(KeyboardInterrupt())
    assert not errors.is_native_panic(asyncio.CancelledError())


async def test_stream_handler_finally_runs_when_client_cancels() -> None:
    cleaned = asyncio.Event()

    class Endless:
        @stream_errors
        async def stream(self, request: bytes, context: _Ctx) -> AsyncGenerator[bytes, None]:
            try:
                while True:
                    yield b"tick"
                    await asyncio.sleep(0.01)
            finally:
                cleaned.set()

    server = grpc.aio.server()
    handler: Any = grpc.unary_stream_rpc_method_handler(Endless().stream)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.Svc", {"M": handler})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stream: Any = channel.unary_stream("/test.Svc/M")
            call = stream(b"")
            assert await call.read() == b"tick"
            call.cancel()
            await asyncio.wait_for(cleaned.wait(), 5)
    finally:
        await server.stop(None)
