"""`execplan` command line: one module per command group.

Each module in `COMMAND_MODULES` exposes `register(subparsers)`, which adds its
commands and sets `handler=<function(args) -> exit code>` on each. A listed module
that does not exist yet is skipped, so a new group (e.g. `executions`: run, watch,
get, ls, ...) appears by creating `execplan/cli/<name>.py`; nothing else to edit.

Every failure prints exactly one line `execplan: <reason>` on stderr (plus, for
invalid workflows, one `path: message` line per diagnostic) and exits non-zero:
1 for a failed operation, 2 for bad usage or unreadable input, 130 for Ctrl-C.
Set EXECPLAN_DEBUG=1 to get the traceback of an unexpected error instead.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import Any

from execplan.cli.common import EXIT_FAILURE, CliError, Parser, rpc_error_lines
from execplan.errors import ExecplanError, is_native_panic

COMMAND_MODULES = (
    "planning",
    "executions",
    "search",
    "schedules",
    "workers",
    "serve",
    "replay",
    "breakers",
    "limits",
    "inventory",
    "usage",
)

EXIT_INTERNAL = 70  # EX_SOFTWARE

# Commands whose parser is built from their own module alone: importing and
# registering every module costs `execplan plan FILE` ~40 ms (the other modules
# pull in the client's rendering and protobuf modules). Any other first argument,
# `--help` included, builds the whole parser.
ALONE = {"plan": "planning", "validate": "planning"}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; for a command in ALONE, of its module only
    (its usage, help and errors are the same)."""
    parser = Parser(
        prog="execplan",
        description="Compile declarative workflows into execution plans and run them.",
    )
    parser.add_argument("--version", action=_VersionAction)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    alone = ALONE.get(command or "")
    for name in COMMAND_MODULES if alone is None else (alone,):
        qualified = f"{__name__}.{name}"
        if importlib.util.find_spec(qualified) is None:
            continue
        importlib.import_module(qualified).register(subparsers)
    return parser


class _VersionAction(argparse._VersionAction):
    """argparse's `version` action with the version looked up only when asked for:
    importlib.metadata (and the email, zipfile, csv modules it pulls in) cost every
    command ~20 ms of start-up."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        self.version = f"execplan {_version()}"
        super().__call__(parser, namespace, values, option_string)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("execplan")
    except PackageNotFoundError:  # running from a source tree without installing
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(argv[0] if argv else None).parse_args(argv)
        code: int = args.handler(args)
        return code
    except CliError as exc:
        _say(str(exc), *exc.details)
        return exc.exit_code
    except ExecplanError as exc:
        _say(str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `execplan plan x.yaml | head`: the reader left; not an error worth a word.
        sys.stderr.close()
        return EXIT_FAILURE
    except Exception as exc:
        if _is_rpc_error(exc):
            _say(*rpc_error_lines(exc))
            return EXIT_FAILURE
        return _internal(exc)
    except BaseException as exc:  # a Rust panic in a native library is not an Exception
        if not is_native_panic(exc):
            raise
        return _internal(exc)


def _is_rpc_error(exc: Exception) -> bool:
    """A gRPC error, without importing grpc: a command that made no RPC (`plan`,
    `validate`) never loaded it, and importing it costs ~50 ms of every start."""
    grpc = sys.modules.get("grpc")
    return grpc is not None and isinstance(exc, grpc.RpcError)


def _internal(exc: BaseException) -> int:
    if os.environ.get("EXECPLAN_DEBUG"):
        raise exc
    _say(f"internal error: {type(exc).__name__}: {exc} (EXECPLAN_DEBUG=1 for details)")
    return EXIT_INTERNAL


def _say(first: str, *rest: str) -> None:
    print(f"execplan: {first}", file=sys.stderr)
    for line in rest:
        print(line, file=sys.stderr)
