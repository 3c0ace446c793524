"""`execplan replay ID [--plan FILE|PLAN_ID] [--format text|json]`: is an execution's
history reproducible?

Rebuilds the execution from its stored events and re-runs the scheduler's decisions
over them. Prints `deterministic` (exit 0) or the first divergence: the sequence
number, the recorded event and what the scheduler decided instead (exit 1).

With `--plan`, a workflow file (compiled by the server) or a stored plan id, also
tells whether the instance could continue on that plan: `compatible` or one line
per incompatibility (exit 1).

`--format json` prints one object with every field, false and empty ones included
(`deterministic`, `events`, `divergence` or null; with `--plan`: `compatible`,
`candidate_plan_id`, `incompatibilities`); the exit status is the same.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING, Any

from execplan.cli.common import EXIT_FAILURE, add_address_option, read_text, run_with_client

if TYPE_CHECKING:
    from execplan.client import ExecutorClient


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "replay", help="check that an execution's history replays the same", description=__doc__
    )
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_address_option(parser)
    parser.add_argument("execution_id", metavar="ID")
    parser.add_argument(
        "--plan", metavar="FILE|PLAN_ID", help="candidate plan to check for compatibility"
    )
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(handler=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    source: str | None = None
    plan_id: str | None = None
    if args.plan:
        if os.path.exists(args.plan) or args.plan == "-":
            source = read_text(args.plan)
        else:
            plan_id = args.plan

    async def body(client: ExecutorClient) -> int:
        result = await client.replay(args.execution_id, source=source, plan_id=plan_id)
        if args.format == "json":
            return _print_json(result, checked_plan=bool(args.plan))
        code = 0
        if result.deterministic:
            print(f"deterministic ({result.events} events)")
        else:
            d = result.divergence
            print(f"diverges at event {d.sequence} (after {result.events} events)")
            print(f"  recorded: {d.expected or '(end of history)'}")
            print(f"  replayed: {d.actual or '(nothing)'}")
            code = EXIT_FAILURE
        if args.plan:
            if result.compatible:
                print(f"compatible with plan {result.candidate_plan_id}")
            else:
                print(f"incompatible with plan {result.candidate_plan_id}:")
                for line in result.incompatibilities:
                    print(f"  - {line}")
                code = EXIT_FAILURE
        return code

    return run_with_client(args, body)


def _print_json(result: Any, *, checked_plan: bool) -> int:
    """`result` as one JSON object with every field spelled out (protobuf's JSON
    leaves false and empty ones out, which a script would have to know)."""
    d = result.divergence
    document: dict[str, Any] = {
        "deterministic": result.deterministic,
        "events": result.events,
        "divergence": None
        if result.deterministic
        else {"sequence": d.sequence, "expected": d.expected, "actual": d.actual},
    }
    if checked_plan:
        document["candidate_plan_id"] = result.candidate_plan_id
        document["compatible"] = result.compatible
        document["incompatibilities"] = list(result.incompatibilities)
    print(json.dumps(document, indent=2))
    ok = result.deterministic and (result.compatible or not checked_plan)
    return 0 if ok else EXIT_FAILURE
