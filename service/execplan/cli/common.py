"""Helpers shared by the command modules: errors, input, addresses, RPC errors."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypedDict

from execplan.config import DEFAULT_LISTEN

if TYPE_CHECKING:
    from execplan.client import ExecplanClientError, ExecutorClient

EXIT_FAILURE = 1
EXIT_USAGE = 2

ADDRESS_ENV = "EXECPLAN_ADDRESS"


class CliError(Exception):
    """Ends the command: `execplan: <message>` on stderr, then `details` lines."""

    def __init__(
        self, message: str, exit_code: int = EXIT_FAILURE, details: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.details = tuple(details)


class Parser(argparse.ArgumentParser):
    """argparse prints usage plus an error over several lines; we want one line."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see '{self.prog} --help')", EXIT_USAGE)


# The server keeps sequence numbers as signed 64-bit integers (docs/contract.md,
# "Integer fields"); the flags check the range here so a typo is a usage error.
MAX_SEQUENCE = 2**63 - 1


def sequence_arg(text: str) -> int:
    """argparse type of `--at N` / `--after N`: an integer 0..2^63-1."""
    shown = text if len(text) <= 40 else f"{text[:40]}…({len(text):,} chars)"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a sequence number, got {shown!r}") from None
    if not 0 <= value <= MAX_SEQUENCE:
        raise argparse.ArgumentTypeError(f"a sequence number is 0..{MAX_SEQUENCE}, not {shown}")
    return value


def add_address_option(parser: argparse.ArgumentParser) -> None:
    """`--address HOST:PORT` for commands that talk to a server."""
    parser.add_argument(
        "--address",
        default=os.environ.get(ADDRESS_ENV, DEFAULT_LISTEN),
        metavar="HOST:PORT",
        help=f"server address (default: ${ADDRESS_ENV} or {DEFAULT_LISTEN})",
    )
    # Empty defaults: the SDK fills each from its EXECPLAN_TLS_*/EXECPLAN_TOKEN variable.
    parser.add_argument("--tls-ca", metavar="PEM", help="CA of the server (enables TLS)")
    parser.add_argument("--tls-cert", metavar="PEM", help="client certificate (mutual TLS)")
    parser.add_argument("--tls-key", metavar="PEM", help="key of --tls-cert")
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        help="bearer token (default: $EXECPLAN_TOKEN; prefer the variable: argv is visible)",
    )


class SecurityOptions(TypedDict):
    tls_ca: str | None
    tls_cert: str | None
    tls_key: str | None
    token: str | None


def security_options(args: argparse.Namespace) -> SecurityOptions:
    """The TLS/token options as ExecutorClient / Worker keyword arguments."""
    return SecurityOptions(
        tls_ca=getattr(args, "tls_ca", None),
        tls_cert=getattr(args, "tls_cert", None),
        tls_key=getattr(args, "tls_key", None),
        token=getattr(args, "token", None),
    )


def run_with_client(
    args: argparse.Namespace, body: Callable[[ExecutorClient], Awaitable[int]]
) -> int:
    """Run `body` with a client; client errors become one-line CliErrors."""
    import asyncio  # noqa: PLC0415  (`plan` and `validate` make no call: ~20 ms less)

    from execplan.client import ExecplanClientError, ExecutorClient  # noqa: PLC0415

    async def main() -> int:
        async with ExecutorClient(args.address, **security_options(args)) as client:
            return await body(client)

    try:
        return asyncio.run(main())
    except ExecplanClientError as exc:
        if exc.code.name == "UNAVAILABLE":
            raise CliError(f"cannot reach a server at {args.address}: {exc.details}") from exc
        raise client_failure(exc) from exc


def client_failure(exc: ExecplanClientError) -> CliError:
    """A refusal from the server as a CliError: its code and details, then one line
    per field violation."""
    lines = [f"{v.field}: {v.description}" for v in exc.violations]
    return CliError(f"{exc.code.name}: {exc.details}", EXIT_FAILURE, lines)


def split_pair(item: str, option: str, form: str) -> tuple[str, str]:
    """`item` (a value of `option`) split at its first `=`; a missing `=` or an empty
    name is exit 2, naming the `form` the option expects (`K=V`, `NAME=VALUE`)."""
    name, eq, value = item.partition("=")
    if not eq or not name:
        raise CliError(f"{option} expects {form}, got {item!r}", EXIT_USAGE)
    return name, value


def read_text(path: str, max_chars: int | None = None) -> str:
    """The contents of `path`, or stdin for `-`; unreadable input is exit 2. With
    `max_chars`, a longer input is exit 1 after reading only that much plus one."""
    try:
        if path == "-":
            text = sys.stdin.read(-1 if max_chars is None else max_chars + 1)
        else:
            with Path(path).open(encoding="utf-8") as file:
                text = file.read(-1 if max_chars is None else max_chars + 1)
        if max_chars is not None and len(text) > max_chars:
            raise CliError(f"{path} is longer than {max_chars:,} characters", EXIT_FAILURE)
        return text
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", EXIT_USAGE) from exc
    except UnicodeDecodeError as exc:
        raise CliError(f"cannot read {path}: not UTF-8 text", EXIT_USAGE) from exc


def rpc_error_lines(err: Any) -> list[str]:
    """A failed RPC as `CODE: message`, then one `field: description` per violation
    found in its `google.rpc.Status` details (BadRequest, QuotaFailure, RetryInfo)."""
    from google.rpc import error_details_pb2  # noqa: PLC0415
    from grpc_status import rpc_status  # noqa: PLC0415

    code = err.code().name if callable(getattr(err, "code", None)) else "UNKNOWN"
    details = err.details() if callable(getattr(err, "details", None)) else str(err)
    lines = [f"{code}: {details}"]
    status = rpc_status.from_call(err) if hasattr(err, "trailing_metadata") else None
    for detail in status.details if status is not None else ():
        bad = error_details_pb2.BadRequest()
        quota = error_details_pb2.QuotaFailure()
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(bad):
            lines += [f"{v.field}: {v.description}" for v in bad.field_violations]
        elif detail.Unpack(quota):
            lines += [f"{v.subject}: {v.description}" for v in quota.violations]
        elif detail.Unpack(retry):
            lines.append(f"retry after {retry.retry_delay.ToTimedelta().total_seconds():g}s")
    return lines
