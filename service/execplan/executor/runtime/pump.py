"""The pump: one coroutine that changes executions, in rounds of decide -> commit -> act.

Each round takes every pending input (results, acks, timers, control calls) from
the inbox and, per input, lets the execution's `Machine` decide events (no I/O;
nothing leaves yet). The scheduler then matches queued tasks to free worker slots,
more decisions. All events of all executions are appended in one `append_each`
(group commit), and only then are the effects carried out (`Actor`) and callers
answered. While a commit is in flight new inputs pile up and go into the next round
together, so batching grows with load by itself; idle, the pump sleeps on the
inbox's event.

One execution's trouble stays its own (`round.py`): an input that raises poisons
only its execution (dropped from the round, reloaded from the log, its other inputs
run again), an append the store refuses likewise, and `OwnershipLost` disowns it.
A decision that needs an expression evaluated in the sandbox first suspends its
execution the same way, its inputs held until the outcome is in (`evaluations.py`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable

from execplan import hops
from execplan.aio import cancel_and_wait
from execplan.errors import ExecplanError, FailedPrecondition, OwnershipLost, StoreError
from execplan.executor.decide.machine import Machine
from execplan.executor.decide.step import DEFAULT_LIMITS
from execplan.executor.expressions.evaluation import EvaluationPending, Request
from execplan.executor.observability.observer import Observers
from execplan.executor.runtime.acting import Actor
from execplan.executor.runtime.evaluations import Evaluations
from execplan.executor.runtime.executions import Executions
from execplan.executor.runtime.inbox import Inbox, Input
from execplan.executor.runtime.recovery import Recovery
from execplan.executor.runtime.round import Round
from execplan.executor.runtime.scheduler import Scheduler
from execplan.executor.state import Limits
from execplan.executor.view import state_name
from execplan.search import SearchValue
from execplan.search.codec import decode_map
from execplan.store.port import Append, Store, StoredEvent, UsageRecord
from execplan.v1 import events_pb2 as ev

log = logging.getLogger("execplan.executor")


class Pump:
    def __init__(
        self,
        *,
        store: Store,
        inbox: Inbox,
        executions: Executions,
        scheduler: Scheduler,
        actor: Actor,
        recovery: Recovery,
        evaluations: Evaluations[Input],
        observers: Observers,
        now_ms: Callable[[], int],
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._limits = limits
        self._store = store
        self._inbox = inbox
        self._executions = executions
        self._scheduler = scheduler
        self._actor = actor
        self._recovery = recovery
        self._evaluations = evaluations
        self._observers = observers
        self._now_ms = now_ms
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="execplan-engine-pump")

    async def stop(self) -> None:
        self._stopping = True
        self._inbox.wake()
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        while not self._stopping:
            await self._inbox.woken.wait()
            self._inbox.woken.clear()
            if hops.ON:
                hops.mark("pump.wake")
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug outside the per-input guard (dispatch, effects). Nothing of the
                # round is lost for good: uncommitted attempts are still covered by
                # their leases and deadlines, and callers' RPCs time out.
                log.exception("engine round failed")

    async def round(self) -> None:
        batch = self._inbox.take()
        now = self._now_ms()
        work = Round()
        for item in batch:
            self._decide(item, work, now)
        self._scheduler.dispatch(
            work.machines,
            now,
            lambda execution_id, request: self.suspend(work, execution_id, [], request),
        )
        if hops.ON:
            hops.mark("pump.commit")
        await self._commit(work)
        if hops.ON:
            hops.mark("pump.committed")
        acting = [machine for machine in work.machines.values() if machine.events]
        if self._actor.send(acting):
            # One turn of the loop for the workers' stream handlers to write the
            # dispatches before the rest of the acting (observers, watchers,
            # checkpoints), which nothing on the wire waits for: a chain step's next
            # task leaves ~50-90 us sooner. The state is durable and final for this
            # round; watchers skip by sequence what they read from the log meanwhile.
            await asyncio.sleep(0)
        self._actor.settle(acting)
        work.settle()
        for execution_id, inputs in work.redo.items():
            await self._recovery.reload(execution_id)
            self._inbox.again(inputs)
            self._evaluations.reloaded(execution_id)

    def _decide(self, item: Input, work: Round, now: int) -> None:
        """Applies one input to its execution's Machine (no I/O; nothing leaves yet)."""
        execution_id = item.execution_id
        if self._evaluations.holds(execution_id):  # waiting for the expression sandbox
            self._evaluations.hold(execution_id, item)
            return
        if execution_id in work.redo:  # poisoned earlier this round: after the reload
            work.redo[execution_id].append(item)
            return
        state = self._executions.get(execution_id)
        if state is None:
            work.fail(item.future, FailedPrecondition(f"execution {execution_id} is not running"))
            return
        machine = work.machines.get(execution_id)
        if machine is None:
            machine = work.machines[execution_id] = Machine(
                state, now, self._evaluations.evaluator, self._limits
            )
        mark = len(machine.effects)
        try:
            result = item.action(machine)
        except EvaluationPending as pending:
            self.suspend(work, execution_id, [item], pending.request)
            return
        except ExecplanError as error:  # refused before anything was emitted
            work.fail(item.future, error)
            return
        except Exception as error:
            # The state may hold emitted-but-uncommitted events: keep the execution
            # out of this round and rebuild it from the log (bug-tolerance, not flow).
            log.exception("input for execution %s failed; reloading it", execution_id)
            work.fail(item.future, RuntimeError(f"internal error: {error}"))
            work.drop(execution_id, error, retry=True)
            self._executions.suspend(execution_id)
            return
        self._scheduler.absorb(machine, mark)
        applied = work.applied.get(execution_id)  # not setdefault: a list per input
        if applied is None:
            work.applied[execution_id] = [item]
        else:
            applied.append(item)
        if item.future is not None:
            work.replies.append((item.future, result, execution_id))

    def suspend(
        self, work: Round, execution_id: str, inputs: list[Input], request: Request
    ) -> None:
        """A decision needs an expression evaluated in the sandbox first: forget what the
        execution decided this round, reload it after the commit, and hold its inputs
        (this round's, then later ones) until the outcome is in the memo; then they run
        again, in order, and meet the evaluation as a memo hit (evaluations.py)."""
        held = [*work.forget(execution_id), *inputs]
        self._executions.suspend(execution_id)  # worker messages wait for the reload
        work.redo.setdefault(execution_id, [])
        self._evaluations.suspend(execution_id, held, request, self._inbox.again)

    async def _commit(self, work: Round) -> None:
        """One group commit of the round; executions that did not commit are dropped
        from it (reloaded, or disowned when another replica owns them)."""
        appends = [
            _append(execution_id, machine)
            for execution_id, machine in work.machines.items()
            if machine.events
        ]
        if not appends:
            return
        began = time.perf_counter()
        try:
            failed = await self._store.append_each(appends)
        except Exception as error:  # the store as a whole failed: nothing committed
            log.exception("commit of %d executions failed", len(appends))
            failed = {a.execution_id: StoreError(f"commit failed: {error}") for a in appends}
        lost = [e for e, refusal in failed.items() if isinstance(refusal, OwnershipLost)]
        if lost:
            self._recovery.disown(lost)
        for execution_id, refusal in failed.items():
            owned_elsewhere = isinstance(refusal, OwnershipLost)
            if not owned_elsewhere:
                log.warning("append of %s refused (%s); reloading it", execution_id, refusal)
            work.drop(execution_id, refusal, retry=not owned_elsewhere)
            if owned_elsewhere:
                work.redo.pop(execution_id, None)
        self._observers.round_committed(
            len(appends) - len(failed),
            sum(len(a.events) for a in appends if a.execution_id not in failed),
            time.perf_counter() - began,
        )


# The position suffix of a for_each instance's id (`research[3]`, nested: `a[1][2]`).
_INSTANCE = re.compile(r"(?:\[[0-9]+\])+$")


def _append(execution_id: str, machine: Machine) -> Append:
    """What the store appends for the events `machine` decided this round, in one
    pass over them. Every event of a machine has the same id and time (Step.emit)."""
    now = machine.now_ms
    events = []
    updates: dict[str, SearchValue | None] = {}
    for event, kind in zip(machine.events, machine.kinds, strict=True):
        if kind == "search_attributes_updated":
            updates.update(decode_map(event.search_attributes_updated.attributes))
        events.append(_stored(event, kind, execution_id, now))
    return Append(
        execution_id=execution_id,
        events=tuple(events),
        state=state_name(machine.state),
        updated_at_ms=machine.state.updated_ms,
        search_attributes=updates,
    )


def stored(event: ev.ExecutionEvent) -> StoredEvent:
    """An event as the store keeps it (the payload is the serialized message). Usage
    goes beside the payload: the store writes it in the same transaction, for roll-ups
    (store/usage.py). An instance's usage is filed under its for_each task
    (`research[3]` under `research`): a roll-up by task across executions groups
    what the same step of the workflow used."""
    kind = event.WhichOneof("kind") or ""
    return _stored(event, kind, event.execution_id, event.recorded_at.ToMilliseconds())


def _stored(event: ev.ExecutionEvent, kind: str, execution_id: str, at_ms: int) -> StoredEvent:
    spent = None
    if kind == "task_usage":
        body = event.task_usage
        task_id = _INSTANCE.sub("", body.task_id)
        spent = UsageRecord(task_id, tuple(sorted(body.usage.counters.items())))
    # Positional arguments: noticeably cheaper than keywords (one call per event).
    return StoredEvent(execution_id, event.sequence, kind, at_ms, event.SerializeToString(), spent)
