"""`execplan worker`: run the task handlers of a Python module against a server.

    execplan worker MODULE[:ATTR] [--address HOST:PORT] [--slots N] [--worker-id ID]
                                  [--label KEY=VALUE ...] [--environment ENV]
                                  [--capacity NAME=VALUE ...]

MODULE is a dotted module name (`examples.workers`) or a file (`examples/workers.py`);
ATTR names the `execplan.worker.Worker` in it (default `worker`). The current
directory is put on `sys.path` first, so a project's own modules import as they do
in its tests. SIGTERM/SIGINT drain (finish running attempts, then exit 0); a second
signal stops at once.

`--capacity` declares what tasks' `resources` may take here at once, replacing the
Worker's own declaration: `--capacity cpu=8 --capacity memory=16Gi --capacity gpu=1
--capacity model-slots=2` (without any: the Worker's, by default this machine's cores
and memory and no GPU).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from execplan.cli.common import (
    EXIT_USAGE,
    CliError,
    add_address_option,
    client_failure,
    security_options,
    split_pair,
)

if TYPE_CHECKING:
    from execplan.worker import Worker


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="run the task handlers of a Python module",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", metavar="MODULE[:ATTR]", help="module or .py file, :worker")
    add_address_option(parser)
    parser.add_argument("--slots", type=int, help="attempts run at once (default: the Worker's)")
    parser.add_argument(
        "--log-format", default="text", choices=("text", "json"), help="json: one object a line"
    )
    parser.add_argument("--worker-id", help="stable id (default: host-pid-random)")
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="add a placement label (repeatable)",
    )
    parser.add_argument("--environment", help="the environment placement matches on")
    parser.add_argument(
        "--capacity",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="cpu, memory, gpu or a custom counter this worker offers (repeatable)",
    )
    parser.set_defaults(handler=run_worker)


def module_spec(target: str) -> str:
    """`dir/mod.py[:attr]` -> `mod[:attr]` with `dir` on sys.path; dotted names as given."""
    module, sep, attr = target.partition(":")
    if module.endswith(".py") or os.sep in module:
        path = Path(module)
        if not path.is_file():
            raise CliError(f"no such file: {module}", EXIT_USAGE)
        sys.path.insert(0, str(path.resolve().parent))
        module = path.stem
    return f"{module}{sep}{attr}"


def run_worker(args: argparse.Namespace) -> int:
    from execplan.worker import load_worker  # noqa: PLC0415

    sys.path.insert(0, os.getcwd())
    spec = module_spec(args.target)
    try:
        worker = load_worker(spec)
    except ModuleNotFoundError as exc:
        raise CliError(f"cannot import {args.target}: {exc}", EXIT_USAGE) from exc
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc), EXIT_USAGE) from exc
    _configure(worker, args)
    if not worker.task_types:
        raise CliError(f"{args.target}: the worker has no task handlers", EXIT_USAGE)
    from execplan.logs import configure_logging  # noqa: PLC0415

    configure_logging("info", args.log_format)
    print(
        f"execplan worker {worker.worker_id} -> {worker.address}: "
        f"{len(worker.task_types)} task types, {worker.slots} slots",
        file=sys.stderr,
        flush=True,
    )
    from execplan.client import ExecplanClientError  # noqa: PLC0415

    try:
        worker.run()
    except ExecplanClientError as exc:
        # The server refused the registration (INVALID_ARGUMENT, PERMISSION_DENIED,
        # UNAUTHENTICATED): not a crash of ours, and retrying would not help.
        raise client_failure(exc) from exc
    return 0


def _configure(worker: Worker, args: argparse.Namespace) -> None:
    # --address defaults to $EXECPLAN_ADDRESS, then 127.0.0.1:7070: the same
    # resolution the Worker does itself, so it is safe to always apply.
    worker.address = args.address
    from execplan.client._channel import Security  # noqa: PLC0415

    worker.security = Security(**security_options(args))
    if args.slots is not None:
        if args.slots < 1:
            raise CliError("--slots must be >= 1", EXIT_USAGE)
        worker.slots = args.slots
        worker.concurrency = max(worker.concurrency, args.slots)
    if args.worker_id:
        worker.worker_id = args.worker_id
    for item in args.label:
        key, value = split_pair(item, "--label", "KEY=VALUE")
        worker.labels[key] = value
    if args.environment is not None:
        worker.environment = args.environment
    if args.capacity:
        worker.capacity = _capacity(args.capacity)


def _capacity(items: list[str]) -> Any:
    from execplan.worker._capacity import encode  # noqa: PLC0415

    declared: dict[str, str | int] = {}
    for item in items:
        name, value = split_pair(item, "--capacity", "NAME=VALUE")
        declared[name] = value if name in ("cpu", "memory") else _count(name, value)
    try:
        return encode(declared)
    except ValueError as exc:
        raise CliError(f"--capacity: {exc}", EXIT_USAGE) from None


def _count(name: str, value: str) -> int:
    if not value.isdigit():
        raise CliError(f"--capacity {name}: expected an integer >= 0, got {value!r}", EXIT_USAGE)
    return int(value)
