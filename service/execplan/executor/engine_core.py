"""What every part of the engine shares: configuration, in-memory tables, primitives.

`Engine` (executor/engine.py) is put together from one mixin per concern
(engine_reads, engine_workers, engine_deadlines, engine_breakers, engine_dispatch,
engine_recovery). Each inherits `EngineCore`, which creates the shared state and
holds the few primitives every concern uses: `now_ms`, `_submit` (an input for the
pump), `_send` (a message to a worker) and the live/finished bookkeeping. Declaring
the state here, once, lets mypy check every mixin's use of it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from execplan.executor import breakers as cb
from execplan.executor.dispatcher import ReadyQueues, WorkerRegistry
from execplan.executor.evaluations import Evaluations
from execplan.executor.hub import Hub
from execplan.executor.machine import Machine
from execplan.executor.observability.observer import Observers
from execplan.executor.ownership import Router
from execplan.executor.plan_view import PlanView
from execplan.executor.sandbox import ExpressionBudget
from execplan.executor.secrets import EnvironmentSecrets, SecretProvider
from execplan.executor.state import LEASED_TASK_STATES, ExecutionState
from execplan.store.port import Store
from execplan.v1 import worker_service_pb2 as ws


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
    # Events between checkpoints of one execution; bounds replay at recovery.
    checkpoint_every: int = 2_000
    # Largest inputs of an execution and output of a task (serialized bytes).
    max_payload_bytes: int = 2 * 1024 * 1024
    # Back-pressure: StartExecution is refused while this many executions run,
    # or while the pump has this many unprocessed inputs.
    max_live_executions: int = 100_000
    max_inbox: int = 200_000
    # Longest an assignment ack waits to share a commit with other events.
    ack_flush_ms: int = 20
    # Time, memory and size budget of an expression too expensive to run inline
    # (it runs in a sandbox process; executor/evaluations.py).
    expressions: ExpressionBudget = field(default_factory=ExpressionBudget)


@dataclass(slots=True)
class _Input:
    execution_id: str
    action: Callable[[Machine], Any]
    future: asyncio.Future[Any] | None
    # Rounds this input already went through without committing (see engine_round).
    tries: int = 0


Outbox = Callable[[ws.ConnectResponse], None]


class EngineCore:
    """The state and primitives shared by the engine's mixins; built by `Engine(...)`."""

    def __init__(
        self,
        store: Store,
        config: EngineConfig | None = None,
        *,
        secrets: SecretProvider | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config or EngineConfig()
        self.secrets = secrets or EnvironmentSecrets()
        self.hub = Hub()
        self.observers = Observers()
        self.workers = WorkerRegistry()
        self._clock = clock
        self._live: dict[str, ExecutionState] = {}
        self._finished: dict[str, ExecutionState] = {}
        self._plans: dict[str, PlanView] = {}
        self._ready = ReadyQueues()
        self._inflight: dict[str, int] = {}
        self._outboxes: dict[str, Outbox] = {}
        self._orphans: dict[str, set[tuple[str, int]]] = {}
        # Executions being reloaded after a failed commit: worker messages held for them.
        self._reloading: dict[str, list[Callable[[], None]]] = {}
        self._beats: dict[tuple[str, int], int] = {}
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._inbox: list[_Input] = []
        self._deferred: list[_Input] = []
        self._deferred_flush: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._session = 0
        self._checkpointed: dict[str, int] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.breakers = cb.Breakers()
        self._breaker_plans: dict[str, bool] = {}
        # Replicas (executor/ownership.py): reaches executions other replicas own.
        self.router: Router | None = None
        # Expressions too expensive to evaluate inline, and the inputs waiting for them.
        self.evaluations: Evaluations[_Input] = Evaluations(self.config.expressions)

    def _machine(self, state: ExecutionState, now_ms: int) -> Machine:
        return Machine(state, now_ms, self.evaluations.evaluator)

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _submit(
        self,
        execution_id: str,
        action: Callable[[Machine], Any],
        future: asyncio.Future[Any] | None = None,
    ) -> None:
        self._inbox.append(_Input(execution_id, action, future))
        self._wake.set()

    def _send(self, worker_id: str, message: ws.ConnectResponse) -> None:
        outbox = self._outboxes.get(worker_id)
        if outbox is not None:
            outbox(message)

    # -- bookkeeping -------------------------------------------------------------
    def _adopt(self, state: ExecutionState) -> None:
        self._live[state.execution_id] = state
        self._inflight[state.execution_id] = sum(
            1 for t in state.tasks if t.state in LEASED_TASK_STATES
        )

    def _retire(self, state: ExecutionState) -> None:
        execution_id = state.execution_id
        self._live.pop(execution_id, None)
        self._ready.drop(execution_id)
        self._inflight.pop(execution_id, None)
        self._checkpointed.pop(execution_id, None)
        for key in [k for k in self._timers if k[0] == execution_id]:
            self._timers.pop(key).cancel()
        self._finished[execution_id] = state
        while len(self._finished) > self.config.finished_cache:
            self._finished.pop(next(iter(self._finished)))
