"""The engine's settings: deadlines, grace periods, caches, back-pressure bounds, the
budget of expressions evaluated in the sandbox, and usage limits (a default budget,
runaway caps)."""

from __future__ import annotations

from dataclasses import dataclass, field

from execplan.executor.expressions.sandbox import ExpressionBudget
from execplan.executor.state import Limits
from execplan.usage import Budget


@dataclass(frozen=True, slots=True)
class EngineConfig:
    ack_deadline_ms: int = 5_000
    heartbeat_interval_ms: int = 2_000
    # Leases of a worker that disconnected are kept this long for it to come back.
    reconnect_grace_ms: int = 5_000
    # After a restart, how long workers get to reconnect and reclaim their attempts.
    recovery_grace_ms: int = 5_000
    # Finished executions kept in memory for fast reads.
    finished_cache: int = 2_000
    # Decoded plans kept in memory (an execution holds its own plan while it runs).
    plan_cache: int = 256
    # Events between checkpoints of one execution; bounds replay at recovery. An
    # execution with more tasks than this checkpoints every as many events as it has
    # tasks (a checkpoint's cost grows with them: runtime/checkpoints.py).
    checkpoint_every: int = 2_000
    # Largest inputs of an execution and output of a task (serialized bytes).
    max_payload_bytes: int = 2 * 1024 * 1024
    # Back-pressure: StartExecution is refused while this many executions run,
    # or while the pump has this many unprocessed inputs.
    max_live_executions: int = 100_000
    max_inbox: int = 200_000
    # Longest an assignment ack waits to share a commit with other events.
    ack_flush_ms: int = 20
    # At most one task_progress event per task per this interval (the last value kept).
    progress_interval_ms: int = 1_000
    # Chunks of live output (ctx.stream) one subscriber may have waiting; a subscriber
    # that falls further behind is dropped (SubscriberTooSlow).
    stream_backlog: int = 10_000
    # Time, memory and size budget of an expression too expensive to run inline
    # (it runs in a sandbox process; runtime/evaluations.py).
    expressions: ExpressionBudget = field(default_factory=ExpressionBudget)
    # Usage (docs/usage.md): the budget of executions whose workflow sets no limit of
    # its own (limit by limit), and the runaway caps (0: none): items of one for_each,
    # and attempts of one execution beyond one per task of its plan.
    default_budget: Budget | None = None
    max_for_each_items: int = 1_000
    max_attempts_per_execution: int = 10_000
    # What may grow at run time: for_each items, sub-plan tasks, nesting, tasks per
    # execution (docs/runtime-plans.md, "Limits").
    limits: Limits = field(default_factory=Limits)
    # builtin.http: calls at once, and the origins it may call (empty: any the plan
    # names; `execplan serve --http-allow`).
    http_slots: int = 32
    http_allow: frozenset[str] = frozenset()
