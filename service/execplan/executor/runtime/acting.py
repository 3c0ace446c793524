"""After the commit: what the decided events ask of the world.

`Actor.act(machine)` runs once an execution's events of a round are durable:
dispatches and cancels go to the workers' outboxes (a dispatch carries the
attempt's resolved inputs, its secrets, deadlines and trace context), durable
timers and attempt deadlines are armed, the breakers count outcomes, watchers see
the events, a checkpoint is taken when due, a finished execution is retired, and
live-output subscribers of what finished are ended; last, the observers see the
events of every execution of the round in one call. Nothing here decides; the
machine already has.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from execplan.executor.decide import effects as fx
from execplan.executor.decide import fencing
from execplan.executor.decide.machine import Machine
from execplan.executor.observability.observer import Commit, Observers
from execplan.executor.runtime.breakers import BreakerGate
from execplan.executor.runtime.checkpoints import Checkpoints
from execplan.executor.runtime.children import Children
from execplan.executor.runtime.deadlines import Deadlines
from execplan.executor.runtime.executions import Executions
from execplan.executor.runtime.flow import FlowGate
from execplan.executor.runtime.hub import Hub
from execplan.executor.runtime.leases import Leases
from execplan.executor.runtime.secrets import SecretProvider
from execplan.executor.runtime.sessions import WorkerSessions
from execplan.executor.runtime.streams import StreamHub
from execplan.executor.state import ExecutionState
from execplan.executor.values import fill_struct
from execplan.executor.view import encode_execution
from execplan.v1 import execution_pb2 as ex
from execplan.v1 import worker_service_pb2 as ws
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer

# Events that change what WatchExecutions subscribers see of an execution.
_SUMMARY_KINDS = frozenset(
    {
        "execution_started",
        "execution_paused",
        "execution_resumed",
        "compensation_started",
        "execution_completed",
    }
)


class Actor:
    def __init__(
        self,
        *,
        sessions: WorkerSessions,
        leases: Leases,
        deadlines: Deadlines,
        breakers: BreakerGate,
        flow: FlowGate,
        checkpoints: Checkpoints,
        executions: Executions,
        hub: Hub,
        streams: StreamHub,
        observers: Observers,
        secrets: SecretProvider,
        now_ms: Callable[[], int],
        children: Children,
    ) -> None:
        self._children = children
        self._sessions = sessions
        self._leases = leases
        self._deadlines = deadlines
        self._breakers = breakers
        self._flow = flow
        self._checkpoints = checkpoints
        self._executions = executions
        self._hub = hub
        self._streams = streams
        self._observers = observers
        self._secrets = secrets
        self._now_ms = now_ms

    def act(self, machine: Machine) -> None:
        """The external effects of `machine`, whose events are committed."""
        self.send([machine])
        self.settle([machine])

    def send(self, machines: Sequence[Machine]) -> bool:
        """The first half of `act`, for every execution a round committed: dispatches
        and cancels onto the workers' outboxes, timers armed, children started or
        stopped. True when a message was queued."""
        # One message per worker for all of the round's dispatches and cancels, in the
        # order they were decided: its outbox would merge one per execution into one
        # stream message anyway, at ~1 us a message (a copy through the wire format).
        outgoing: dict[str, ws.ConnectResponse] = {}
        try:
            for machine in machines:
                self._send(machine, outgoing)
        finally:  # what was decided before a failing effect still goes
            for worker_id, message in outgoing.items():
                if message.dispatches or message.cancels:
                    self._sessions.send(worker_id, message)
        return bool(outgoing)

    def _send(self, machine: Machine, outgoing: dict[str, ws.ConnectResponse]) -> None:
        state = machine.state
        for effect in machine.effects:
            if isinstance(effect, fx.SendDispatch | fx.CancelLease):
                message = outgoing.get(effect.worker_id)
                if message is None:
                    message = outgoing[effect.worker_id] = ws.ConnectResponse()
                if isinstance(effect, fx.SendDispatch):
                    self._dispatch(state, effect, message.dispatches)
                else:
                    cancel = message.cancels.add(reason=effect.reason)
                    _fill_ref(cancel.attempt, state, effect)
            elif isinstance(effect, fx.ArmTimer):
                self._deadlines.arm(state.execution_id, effect.timer_id, effect.fire_at_ms)
            elif isinstance(effect, fx.StartChild | fx.StopChild):
                self._children.act(state, effect)

    def settle(self, machines: Sequence[Machine]) -> None:
        """The second half of `act`, for every execution a round committed: breakers,
        flow, watchers, live output, checkpoints, retirement, then the observers (one
        call for the round). Nothing on the wire waits for it."""
        commits: list[Commit] = []
        for machine in machines:
            state = machine.state
            events = machine.events
            kinds = machine.kinds  # each event's kind, as the machine emitted it
            commits.append((state, events, kinds, machine.now_ms))  # the events' time
            self._breakers.committed(state, events)
            self._flow.committed(state, events)
            if self._hub.wants(state.execution_id):
                self._hub.publish(state.execution_id, events)
            if not _SUMMARY_KINDS.isdisjoint(kinds) and self._hub.wants_summary(
                state.state, state.plan.workflow_name
            ):
                self._hub.publish_summary(encode_execution(state, with_tasks=False))
            self._streams.committed(state)
            self._checkpoints.committed(state)
            if state.terminal:
                self._executions.retire(state)
        if self._observers.observers:
            self._observers.committed(commits)

    def _dispatch(
        self,
        state: ExecutionState,
        effect: fx.SendDispatch,
        dispatches: RepeatedCompositeFieldContainer[ws.Dispatch],
    ) -> None:
        """Adds the dispatch of `effect` to its worker's outgoing message, built in
        place (no copy); it leaves again if building it fails."""
        dispatch = dispatches.add()
        try:
            self._fill_dispatch(state, effect, dispatch)
        except BaseException:
            del dispatches[-1]
            raise

    def _fill_dispatch(
        self, state: ExecutionState, effect: fx.SendDispatch, dispatch: ws.Dispatch
    ) -> None:
        node = state.node(effect.index)
        timeouts = node.timeouts_for(effect.phase)
        now = self._now_ms()
        if timeouts.heartbeat_ms:  # the one deadline the lease's last beat is read for
            self._leases.beat(state.execution_id, effect.index, effect.epoch, now)
        _fill_ref(dispatch.attempt, state, effect)
        dispatch.task_type = effect.task_type
        dispatch.idempotency_key = effect.idempotency_key
        dispatch.heartbeat_timeout_ms = timeouts.heartbeat_ms
        if state.trace_context:
            dispatch.trace_context.update(state.trace_context)
        dispatch.workflow_name = state.plan.workflow_name
        fill_struct(dispatch.inputs, effect.inputs)
        if effect.previous_error is not None:
            effect.previous_error.fill(dispatch.previous_error)
        if effect.phase == ex.TASK_PHASE_MAIN and (not node.request.empty or node.isolate):
            r = node.request
            dispatch.resources.SetInParent()
            dispatch.resources.cpu_millis = r.cpu_millis
            dispatch.resources.memory_bytes = r.memory_bytes
            dispatch.resources.gpu = r.gpu
            dispatch.resources.custom.update(r.custom)
            dispatch.resources.isolate = node.isolate
        if node.secrets:
            dispatch.secrets.update(self._secrets.resolve(node.secrets))
        if timeouts.start_to_close_ms:
            dispatch.start_to_close_deadline.FromMilliseconds(now + timeouts.start_to_close_ms)
        claim = fencing.Claim(effect.phase, effect.attempt, effect.epoch)
        self._deadlines.dispatched(state, effect.index, claim)
        if self._observers.observers:
            self._observers.dispatching(state, dispatch)


def _fill_ref(
    ref: ws.AttemptRef, state: ExecutionState, effect: fx.SendDispatch | fx.CancelLease
) -> None:
    ref.execution_id = state.execution_id
    ref.task_id = state.task_id(effect.index)
    ref.phase = effect.phase  # type: ignore[assignment]
    ref.token.attempt = effect.attempt
    ref.token.lease_epoch = effect.epoch
