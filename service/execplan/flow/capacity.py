"""Worker capacity and task requests: what fits where.

A worker declares a `Capacity`; each attempt leased to it takes its task's `Request`
until the attempt ends. cpu and memory of 0 in a capacity mean "not declared": that
worker is not checked for them (workers that predate capacity, or third-party ones
that send none). gpu and custom counters a worker does not declare are 0, so a task
that asks for a GPU never lands on a worker without one.

    cap = Capacity(cpu_millis=4000, memory_bytes=8 << 30, gpu=1, custom={"model-slots": 2})
    req = Request(gpu=1)
    fits(req, cap)                      # True: it could ever run there
    fits(req, free(cap, [req]))         # False: the one GPU is taken
    shortfall(req, cap) -> "gpu"        # what does not fit (for the waiting reason)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

NAME_CHARS = 64
MAX_CUSTOM = 32
RESERVED = frozenset({"cpu", "memory", "gpu"})


@dataclass(frozen=True, slots=True)
class Request:
    cpu_millis: int = 0
    memory_bytes: int = 0
    gpu: int = 0
    custom: Mapping[str, int] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.cpu_millis or self.memory_bytes or self.gpu or any(self.custom.values()))


@dataclass(frozen=True, slots=True)
class Capacity:
    cpu_millis: int = 0  # 0: not declared, not checked
    memory_bytes: int = 0  # 0: not declared, not checked
    gpu: int = 0
    custom: Mapping[str, int] = field(default_factory=dict)


def shortfall(req: Request, cap: Capacity) -> str:
    """The first resource `req` needs more of than `cap` has ("" when it fits)."""
    if req.cpu_millis and cap.cpu_millis and req.cpu_millis > cap.cpu_millis:
        return "cpu"
    if req.memory_bytes and cap.memory_bytes and req.memory_bytes > cap.memory_bytes:
        return "memory"
    if req.gpu > cap.gpu:
        return "gpu"
    for name, n in sorted(req.custom.items()):
        if n > cap.custom.get(name, 0):
            return name
    return ""


def fits(req: Request, cap: Capacity) -> bool:
    return not shortfall(req, cap)


def free(cap: Capacity, taken: Iterable[Request]) -> Capacity:
    """What is left of `cap` with `taken` running (undeclared cpu/memory stay 0)."""
    cpu, mem, gpu = cap.cpu_millis, cap.memory_bytes, cap.gpu
    custom = dict(cap.custom)
    for r in taken:
        if cap.cpu_millis:
            cpu -= r.cpu_millis
        if cap.memory_bytes:
            mem -= r.memory_bytes
        gpu -= r.gpu
        for name, n in r.custom.items():
            custom[name] = custom.get(name, 0) - n
    return Capacity(_left(cap.cpu_millis, cpu), _left(cap.memory_bytes, mem), gpu, custom)


def _left(declared: int, left: int) -> int:
    # A declared resource used up reads as -1: 0 would mean "not declared".
    if not declared:
        return 0
    return left if left > 0 else -1


def total(requests: Iterable[Request]) -> Request:
    """The sum of `requests` (what a worker's leases take)."""
    cpu = mem = gpu = 0
    custom: dict[str, int] = {}
    for r in requests:
        cpu += r.cpu_millis
        mem += r.memory_bytes
        gpu += r.gpu
        for name, n in r.custom.items():
            custom[name] = custom.get(name, 0) + n
    return Request(cpu, mem, gpu, custom)
