"""What a worker can run at once besides its slots: cpu, memory, gpu and custom
counters (`WorkerRegistration.capacity`). The executor places a task only where its
`resources` fit what is free.

    Worker(capacity={"cpu": "8", "memory": "16Gi", "gpu": 1, "model-slots": 2})
    Worker()                 # cpu: this machine's cores, memory: its RAM, gpu: 0

cpu and memory are Kubernetes quantities (`"500m"`, `2`, `"8Gi"`); gpu and custom
counters are integers. `None` for cpu or memory leaves them undeclared: the executor
then does not check them on this worker. A GPU or custom counter the worker does not
declare is 0, so tasks asking for one never come here.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Mapping
from fractions import Fraction

from execplan.v1 import worker_service_pb2

_SUFFIX = {
    "": Fraction(1),
    "m": Fraction(1, 1000),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
}
_QUANTITY = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|[mkMGT])?")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
Capacity = Mapping[str, "str | int | float | None"]


def quantity(value: str | int | float, what: str) -> Fraction:
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a quantity such as 2, 500m or 8Gi")
    if isinstance(value, int | float):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"{what}: must be a finite number >= 0")
        return Fraction(value)
    m = _QUANTITY.fullmatch(value.strip())
    if m is None:
        raise ValueError(f"{what}: invalid quantity {value!r} (expected e.g. 2, 500m, 8Gi)")
    return Fraction(m[1]) * _SUFFIX[m[2] or ""]


def _ceil(q: Fraction) -> int:
    return -(-q.numerator // q.denominator)


def machine() -> dict[str, int]:
    """This machine's cores (those this process may run on) and physical memory."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    out = {"cpu_millis": cores * 1000}
    with contextlib.suppress(AttributeError, ValueError, OSError):
        out["memory_bytes"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return out


def encode(capacity: Capacity | None) -> worker_service_pb2.WorkerCapacity:
    """The registration message of `capacity` (None: this machine's cpu and memory)."""
    if capacity is None:
        found = machine()
        return worker_service_pb2.WorkerCapacity(
            cpu_millis=found["cpu_millis"], memory_bytes=found.get("memory_bytes", 0)
        )
    out = worker_service_pb2.WorkerCapacity()
    for name, value in capacity.items():
        if name == "cpu":
            if value is not None:
                out.cpu_millis = _ceil(quantity(value, "cpu") * 1000)
        elif name == "memory":
            if value is not None:
                out.memory_bytes = _ceil(quantity(value, "memory"))
        elif not _NAME.fullmatch(name):
            raise ValueError(f"capacity name {name!r} must match [a-z0-9][a-z0-9._-]*")
        elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"capacity {name}: expected an integer >= 0")
        elif name == "gpu":
            out.gpu = value
        else:
            out.custom[name] = value
    return out
