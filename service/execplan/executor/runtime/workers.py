"""The connected workers: what each can run, where, and how many slots it has free.

Liveness and slots live in memory only (no database write per heartbeat). A
worker's `leases` are maintained by the lease table (runtime/leases.py); its
capacity is the least of its registered slots, its pacing window (pacing.py) and
what its last `WorkerStatus` reported free, and its free slots are that capacity
minus its leases. A worker also declares resources (cpu, memory, gpu, custom
counters; `flow/capacity.py`): each leased main attempt takes its task's
`resources` from them, and a task goes only where what it asks for is free. `pick`
chooses, among the workers that accept a task (type, environment, required labels,
free resources), one that keeps up with its acks first, then the most preferred
labels, then the most free slots. `placement_wait` says why a task with resources
found none: nothing free fits now (RESOURCES), or no live worker could ever fit it
(UNPLACEABLE). With authentication on, a worker id
belongs to the principal that first registered it (`WorkerRegistry.bind`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from execplan.errors import PermissionDenied
from execplan.executor.decide.fencing import Holder
from execplan.executor.plan_view import NO_REQUEST, NodeView
from execplan.executor.runtime.pacing import Pace
from execplan.executor.waiting import RESOURCES, UNPLACEABLE, Wait
from execplan.flow import capacity
from execplan.flow.capacity import Capacity, Request

_V = TypeVar("_V")
# Worker ids remembered (principal and pacing) beyond those connected; the oldest
# unconnected ones are forgotten first.
MAX_REMEMBERED_WORKERS = 100_000


@dataclass(eq=False, slots=True)
class WorkerConn:
    worker_id: str
    task_types: frozenset[str]
    labels: dict[str, str]
    environment: str
    slots: int
    session: int
    # The authenticated principal of the stream; None with authentication off.
    principal: str | None = None
    pace: Pace = field(default_factory=Pace)
    leases: set[tuple[str, int]] = field(default_factory=set)
    draining: bool = False
    connected: bool = True
    # For ListWorkers only: who it says it is and when it was last heard from.
    sdk: str = ""
    connected_at_ms: int = 0
    last_seen_ms: int = 0
    # Capacity the worker's last WorkerStatus implies (held + free_slots); None: slots.
    reported: int | None = None
    # Declared resources (WorkerRegistration.capacity) and what leased attempts take.
    resources: Capacity = field(default_factory=Capacity)
    taken: dict[tuple[str, int], Request] = field(default_factory=dict)
    # Who its claims come from (fencing): made once, every ack and result names it.
    holder: Holder = field(init=False)

    def __post_init__(self) -> None:
        self.holder = Holder(self.worker_id, self.principal, self.task_types)

    @property
    def capacity(self) -> int:
        capacity = self.pace.limit(self.slots)
        if self.reported is not None and self.reported < capacity:  # min() costs more
            return self.reported
        return capacity

    @property
    def free(self) -> int:
        if self.draining or not self.connected:
            return 0
        return self.capacity - len(self.leases)

    def report(self, free_slots: int, draining: bool) -> None:
        """A WorkerStatus: `free_slots` free now, on top of the attempts it holds."""
        self.draining = draining
        self.reported = len(self.leases) + free_slots

    def accepts(self, node: NodeView) -> bool:
        if node.environment and node.environment != self.environment:
            return False
        return all(self.labels.get(key) == value for key, value in node.require_labels)

    def free_resources(self) -> Capacity:
        return capacity.free(self.resources, self.taken.values())

    def fits(self, request: Request) -> bool:
        return request.empty or capacity.fits(request, self.free_resources())

    def preference(self, node: NodeView) -> int:
        return sum(1 for key, value in node.prefer_labels if self.labels.get(key) == value)


class WorkerRegistry:
    def __init__(self) -> None:
        self.workers: dict[str, WorkerConn] = {}
        self._by_type: dict[str, list[WorkerConn]] = {}
        # Per worker id, across reconnects: the principal it is bound to
        # (authentication on) and its pacing window.
        self._owners: dict[str, str] = {}
        self._paces: dict[str, Pace] = {}
        # Grows whenever a worker connects: tasks held for resources are offered again.
        self.generation = 0

    def bind(self, worker_id: str, principal: str | None) -> None:
        """Binds a worker id to the first principal that registers it; another
        principal registering the same id is PermissionDenied."""
        if principal is None:
            return  # authentication off: nobody to tell apart
        owner = self._owners.setdefault(worker_id, principal)
        if owner != principal:
            raise PermissionDenied(
                f"worker id {worker_id[:200]!r} is registered by another principal; "
                f"{principal!r} must use a worker id of its own"
            )
        self._remember(self._owners, worker_id)

    def bind_recovered(self, worker_id: str, principal: str) -> None:
        """After a restart: a lease in the log names its holder's principal."""
        if principal:
            self._owners.setdefault(worker_id, principal)

    def pace(self, worker_id: str, slots: int) -> Pace:
        """The worker id's pacing window, kept across its reconnects."""
        pace = self._paces.get(worker_id)
        if pace is None:
            pace = self._paces[worker_id] = Pace.start(slots)
        self._remember(self._paces, worker_id)
        return pace

    def _remember(self, table: dict[str, _V], key: str) -> None:
        """Most recently used last; beyond the bound, forget unconnected ids first."""
        table[key] = table.pop(key)
        if len(table) > MAX_REMEMBERED_WORKERS:
            for old in [k for k in table if k not in self.workers][: len(table) // 10]:
                del table[old]

    def add(self, worker: WorkerConn) -> None:
        self.remove(worker.worker_id)
        self.generation += 1  # tasks waiting for resources may fit this one
        self.workers[worker.worker_id] = worker
        for task_type in worker.task_types:
            self._by_type.setdefault(task_type, []).append(worker)

    def remove(self, worker_id: str) -> WorkerConn | None:
        worker = self.workers.pop(worker_id, None)
        if worker is not None:
            for task_type in worker.task_types:
                peers = self._by_type.get(task_type, [])
                if worker in peers:
                    peers.remove(worker)
        return worker

    def has_type(self, task_type: str) -> bool:
        return any(w.connected for w in self._by_type.get(task_type, ()))

    def free_for(self, task_type: str) -> bool:
        return any(w.free > 0 for w in self._by_type.get(task_type, ()))

    def pick(
        self, task_type: str, node: NodeView, request: Request = NO_REQUEST
    ) -> WorkerConn | None:
        """A worker with a free slot that accepts the task and has `request` free:
        keeping up with its acks first, then the most preferred labels, then the most
        free slots."""
        best: WorkerConn | None = None
        best_key = (False, -1, -1)
        needs = not request.empty
        for worker in self._by_type.get(task_type, ()):
            free = worker.free
            if free <= 0 or not worker.accepts(node):
                continue
            if needs and not capacity.fits(request, worker.free_resources()):
                continue
            key = (worker.pace.keeping_up, worker.preference(node), free)
            if key > best_key:
                best, best_key = worker, key
        return best

    def placement_wait(
        self, task_type: str, node: NodeView, request: Request, now_ms: int
    ) -> Wait | None:
        """Why a task asking for `request` got no worker, when resources are why."""
        if request.empty:
            return None
        live = [
            w
            for w in self._by_type.get(task_type, ())
            if w.connected and not w.draining and w.accepts(node)
        ]
        if not live:
            return None  # no worker of the type: the usual hint says so
        ever = [w for w in live if capacity.fits(request, w.resources)]
        if not ever:
            short = capacity.shortfall(request, live[0].resources)
            return Wait(
                UNPLACEABLE,
                short,
                "",
                now_ms,
                # What is short first: `execplan get` shows the first 48 characters.
                message=f"needs {_amount(request, short)}; no live worker could ever fit it"
                f" (the largest has {_largest(live, short)})",
            )
        if any(w.free > 0 for w in ever):
            short = capacity.shortfall(request, ever[0].free_resources())
            return Wait(
                RESOURCES,
                short,
                "",
                now_ms,
                message=f"waiting for {_amount(request, short)} free on a worker",
            )
        return None  # they are busy: a free slot is what it waits for

    def total_free(self) -> int:
        return sum(max(0, w.free) for w in self.workers.values())

    def statuses(self, task_types: list[str]) -> list[WorkerConn]:
        """Connected workers (those registered for one of `task_types`, if given), by id."""
        wanted = set(task_types)
        return [
            worker
            for _, worker in sorted(self.workers.items())
            if worker.connected and (not wanted or wanted & worker.task_types)
        ]


def _amount(request: Request, name: str) -> str:
    if name == "cpu":
        return f"{request.cpu_millis}m cpu"
    if name == "memory":
        return f"{request.memory_bytes} bytes of memory"
    if name == "gpu":
        return f"{request.gpu} gpu"
    return f"{request.custom.get(name, 0)} {name}"


def _largest(workers: list[WorkerConn], name: str) -> str:
    caps = [w.resources for w in workers]
    if name == "cpu":
        return f"{max(c.cpu_millis for c in caps)}m"
    if name == "memory":
        return f"{max(c.memory_bytes for c in caps)} bytes"
    if name == "gpu":
        return str(max(c.gpu for c in caps))
    return str(max(c.custom.get(name, 0) for c in caps))
