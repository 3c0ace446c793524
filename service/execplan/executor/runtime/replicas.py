"""Executor replicas: one lease per replica, executions move when a replica dies.

Several `execplan serve --store postgresql://...` processes share one database. Each
is a `Replica`: it registers (a new epoch), renews its lease every `renew_ms`, and on
the same tick claims the active executions of replicas whose lease expired, which the
engine then `adopt`s exactly as after a restart. The store fences every append by
(replica_id, epoch), so a replica that lost its lease cannot write; the engine
`disown`s what it lost. The store is any `ReplicaStore` (store/port.py; PostgreSQL's
SQL is in `store/postgres/ownership.py`); the design and the failover bound are in
docs/replicas.md.

    replica = Replica(store, engine, ReplicaConfig("r1", "10.0.0.5:7070"), forwarder)
    await replica.register()     # before engine.start(): recovery loads only ours
    await engine.start()
    await replica.start()        # lease loop; engine.router = replica
    ...
    await replica.stop()         # after engine.stop(): releases the lease

As the engine's `Router` it reaches executions owned elsewhere: control calls are
forwarded to the owner's advertised address (by the `Forwarder` the server gives
it), and watches tail the store, woken by the NOTIFY every replica's commit sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from execplan.aio import cancel_and_wait
from execplan.errors import NotFound, StoreError, Unavailable
from execplan.executor.values import JsonValue
from execplan.store.port import TERMINAL_STATES, CommitListener, ReplicaStore
from execplan.usage import Budget
from execplan.v1 import events_pb2 as ev

if TYPE_CHECKING:
    from execplan.executor.runtime.engine import Engine

log = logging.getLogger("execplan.replicas")

# A watcher re-reads the store this often even without a notification: a safety net
# for a LISTEN connection that dropped, not the delivery path.
REREAD_S = 5.0


@dataclass(frozen=True, slots=True)
class Control:
    """A control call to carry to an execution's owner."""

    kind: str  # pause | resume | cancel | terminate | send_event | set_budget
    execution_id: str
    request_id: str = ""
    reason: str = ""
    name: str = ""
    data: JsonValue = None
    # set_budget: the limits to set (its action "" keeps the one in force), and resume.
    budget: Budget | None = None
    resume: bool = False
    task_id: str = ""  # set_budget of a task's own budget


class Router(Protocol):
    """How an engine reaches executions that another replica may own."""

    def watch(self, execution_id: str, after_sequence: int) -> AsyncIterator[ev.ExecutionEvent]:
        """Committed events after `after_sequence`, ending with the terminal one."""
        ...

    async def forward(self, control: Control) -> str:
        """The owner's reply, or "" when this replica should handle it itself."""
        ...


class Forwarder(Protocol):
    async def forward(self, address: str, control: Control) -> str: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    replica_id: str
    # HOST:PORT other replicas forward control calls to.
    advertise: str
    # A replica silent this long is dead: its executions are claimed.
    lease_ms: int = 5_000
    # Renew the lease and look for executions to claim this often.
    renew_ms: int = 1_000
    # Executions claimed per query (then loaded before the next batch).
    claim_batch: int = 500


class Replica:
    def __init__(
        self,
        store: ReplicaStore,
        engine: Engine,
        config: ReplicaConfig,
        forwarder: Forwarder | None = None,
    ) -> None:
        self.store = store
        self.engine = engine
        self.config = config
        self._forwarder = forwarder
        self._listener: CommitListener | None = None
        self._task: asyncio.Task[None] | None = None
        self.claimed = 0  # executions taken over from other replicas (tests, metrics)

    async def register(self) -> None:
        owner = await self.store.register_replica(
            self.config.replica_id, self.config.advertise, self.config.lease_ms
        )
        log.info("replica %s epoch %d", owner.replica_id, owner.epoch)

    async def start(self) -> None:
        self._listener = await self.store.listener()
        self.engine.router = self
        await self._claim()  # executions of dead replicas, at once
        self._task = asyncio.create_task(self._run(), name="execplan-replica-lease")

    async def begin_drain(self) -> None:
        if self._listener is not None:
            await self._listener.close()  # ends store-tailing watches

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self.begin_drain()
        if self.store.owner is not None:
            with contextlib.suppress(StoreError, Unavailable):
                await self.store.release_lease()  # the others take over at once
        if self._forwarder is not None:
            await self._forwarder.close()

    # -- the lease loop --------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.renew_ms / 1000)
            try:
                await self._renew()
                await self._claim()
            except (StoreError, Unavailable) as exc:
                # Unreachable database: keep trying; if it lasts past the lease, the
                # others take over and our appends are refused (OwnershipLost).
                log.warning("replica lease tick failed: %s", exc)

    async def _renew(self) -> None:
        if await self.store.renew_lease(self.config.lease_ms):
            return
        live = self.engine.live_ids
        log.error("replica lease lost; dropping %d executions and re-registering", len(live))
        self.engine.disown(live)
        await self.register()

    async def _claim(self) -> None:
        while True:
            ids = await self.store.claim_executions(self.config.claim_batch)
            if ids:
                adopted = await self.engine.adopt(ids)
                self.claimed += adopted
                log.info("took over %d executions", adopted)
            if len(ids) < self.config.claim_batch:
                return

    # -- Router ----------------------------------------------------------------------
    async def watch(
        self, execution_id: str, after_sequence: int
    ) -> AsyncIterator[ev.ExecutionEvent]:
        listener = self._listener
        if listener is None:
            raise Unavailable("the replica is not running")
        record = await self.store.get_execution(execution_id)
        if record is None:
            raise NotFound(f"execution {execution_id} not found")
        if record.state in TERMINAL_STATES and record.last_sequence <= after_sequence:
            return
        last = after_sequence
        with listener.waiter(execution_id) as wake:  # before reading: no lost wake-up
            while True:
                wake.clear()
                batch = await self.store.read_events(execution_id, last, 1000)
                for stored in batch:
                    event = ev.ExecutionEvent.FromString(stored.payload)
                    last = event.sequence
                    yield event
                    if event.HasField("execution_completed"):
                        return
                if len(batch) == 1000:
                    continue
                if listener.closed.is_set():
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(REREAD_S):
                        await wake.wait()

    async def forward(self, control: Control) -> str:
        owner = await self.store.owner_of(control.execution_id)
        if owner is None or owner[0] == self.config.replica_id:
            record = await self.store.get_execution(control.execution_id)
            if record is not None and record.state not in TERMINAL_STATES:
                raise Unavailable(
                    f"execution {control.execution_id} is moving between replicas; retry"
                )
            return ""  # finished (or unknown): the engine answers as usual
        if self._forwarder is None:
            raise Unavailable(f"execution {control.execution_id} is owned by {owner[0]}")
        return await self._forwarder.forward(owner[1], control)
