"""The sandbox's child process: evaluates one CEL expression at a time for its parent.

    python -m execplan.executor.expressions.sandbox_child MEMORY_BYTES MAX_RESULT_BYTES PARENT_PID

Started by executor/expressions/sandbox.py, never by hand. Before it reads anything it caps its
own address space (RLIMIT_AS: an allocation past it fails, which the Rust library
answers with an abort) and asks the kernel to kill it when its parent dies
(PR_SET_PDEATHSIG), so a SIGKILLed server never leaves an evaluation spinning.
Then it says it is ready and serves requests until its stdin closes.

Frames on stdin/stdout: a 4-byte little-endian length, then a pickle. Request:
`(source, pickled context)`. Reply: `("ok", value)`, `("error", message)` for a CEL error,
`("exceeded", what, detail)` when the result is too large or memory ran out. The
parent enforces the time budget by killing this process.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import resource
import signal
import struct
import sys
from typing import BinaryIO

from execplan.executor.expressions.cel_runtime import CelFailure, execute

_PR_SET_PDEATHSIG = 1
_HEADER = struct.Struct("<I")


def main(argv: list[str]) -> int:
    memory_bytes, max_result_bytes, parent = (int(arg) for arg in argv[:3])
    _die_with_parent(parent)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # an abort must not dump core
    if memory_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    reader, writer = sys.stdin.buffer, sys.stdout.buffer
    write_frame(writer, pickle.dumps(("ready",)))
    while True:
        request = read_frame(reader)
        if request is None:
            return 0
        reply, fatal = _serve(request, max_result_bytes)
        write_frame(writer, reply)
        if fatal:  # after a MemoryError the heap is suspect: let the parent start anew
            return 1


def _serve(request: bytes, max_result_bytes: int) -> tuple[bytes, bool]:
    try:
        source, handed = pickle.loads(request)
        value = execute(source, pickle.loads(handed))
        payload = pickle.dumps(("ok", value), protocol=pickle.HIGHEST_PROTOCOL)
    except CelFailure as error:
        return pickle.dumps(("error", str(error))), False
    except MemoryError:
        return pickle.dumps(("exceeded", "memory", "")), True
    if len(payload) > max_result_bytes:
        return pickle.dumps(("exceeded", "result", str(len(payload)))), False
    return payload, False


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The parent may have died before the request above took effect.
    if os.getppid() != parent:
        sys.exit(0)


def read_frame(stream: BinaryIO) -> bytes | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    body = stream.read(size)
    return body if len(body) == size else None


def write_frame(stream: BinaryIO, payload: bytes) -> None:
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
