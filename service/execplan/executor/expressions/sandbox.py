"""Sandboxed CEL evaluation: child processes with a time, memory and size budget.

The `cel` binding has no cost limit (the Rust crate behind it has none, and no Python
CEL binding exposes cel-go's), while CEL's comprehensions nest: three `.all()` over
1,000 elements are 10^9 steps, four `.map()` over 100 elements build 10^8 values.
Expressions that may be that expensive (executor/expressions/cost.py decides) are
evaluated here, never on the event loop:

- a few child processes (`ExpressionBudget.processes`, started on first use), each
  driven by one thread of a private pool: `submit` returns a concurrent Future,
  `evaluate` waits for it (never call that on the event loop);
- time: the parent waits `timeout_ms` for the answer, then SIGKILLs the child (the
  next request starts a fresh one); memory: RLIMIT_AS in the child, which aborts
  when an allocation fails; size: the child refuses a result over
  `max_result_bytes` and the parent a context over `max_context_bytes` (both
  pickled sizes; the pickling happens in the pool thread, off the loop);
- a child dies with its parent (PR_SET_PDEATHSIG), and `close()` kills them all.

Every way an evaluation can end is an `Outcome`: a value, a CEL error, or the budget
it exceeded (in words, for the error message).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("execplan.executor")

_HEADER = struct.Struct("<I")  # the frame format of executor/expressions/sandbox_child.py
_START_TIMEOUT_S = 30.0  # a loaded box can take seconds to start a Python process
_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ExpressionBudget:
    """What one evaluation of an expression may spend (the sandbox's limits)."""

    # Wall-clock time of one evaluation in the sandbox.
    timeout_ms: int = 1_000
    # Address space of a sandbox process (RLIMIT_AS; 0 = no limit).
    memory_bytes: int = 1024 * _MIB
    # Largest value an expression may produce (pickled), and largest context it is
    # handed (pickled). A result goes into a dispatch or the execution's outputs,
    # whose own limit is EngineConfig.max_payload_bytes (2 MiB by default).
    max_result_bytes: int = 2 * _MIB
    max_context_bytes: int = 8 * _MIB
    # Sandbox processes (and so evaluations running at once).
    processes: int = 2


@dataclass(frozen=True, slots=True)
class Outcome:
    value: Any = None
    error: str = ""  # a CEL error, as executor/expressions/cel_runtime.py describes it
    exceeded: str = ""  # how the budget ran out, e.g. "evaluation took longer than ..."
    size: int = 0  # pickled size of the value
    handed_size: int = 0  # pickled size of the request (expression and context)


class _Died(Exception):
    """The child exited; `str()` says how, in terms of the budget when it can."""


class _TimedOut(Exception):
    pass


class Sandbox:
    """A pool of sandbox processes; thread-safe. See the module docstring."""

    def __init__(self, budget: ExpressionBudget | None = None) -> None:
        self.budget = budget or ExpressionBudget()
        self._lock = threading.Lock()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._children: set[_Child] = set()
        self._closed = False
        self.started = 0  # processes started so far (tests, metrics)

    def submit(
        self, source: str, context: dict[str, Any], timeout_ms: int | None = None
    ) -> concurrent.futures.Future[Outcome]:
        with self._lock:
            if self._closed:
                raise RuntimeError("the expression sandbox is closed")
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=max(1, self.budget.processes), thread_name_prefix="execplan-cel"
                )
            return self._pool.submit(self._run, source, context, timeout_ms)

    def evaluate(
        self, source: str, context: dict[str, Any], timeout_ms: int | None = None
    ) -> Outcome:
        """Blocks until the outcome is known (at most about the time budget)."""
        return self.submit(source, context, timeout_ms).result()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
            children, self._children = set(self._children), set()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        for child in children:
            child.kill()

    # -- in a pool thread ----------------------------------------------------------
    def _run(self, source: str, context: dict[str, Any], timeout_ms: int | None) -> Outcome:
        budget = self.budget
        try:
            handed = pickle.dumps(context, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, RecursionError, TypeError) as error:
            return Outcome(error=f"its context cannot be handed over: {error}")
        if len(handed) > budget.max_context_bytes:
            return Outcome(
                exceeded=f"the values it reads are {len(handed):,} bytes; "
                f"the limit is {budget.max_context_bytes:,}"
            )
        request = pickle.dumps((source, handed), protocol=pickle.HIGHEST_PROTOCOL)
        timeout = timeout_ms if timeout_ms is not None else budget.timeout_ms
        return dataclasses.replace(self._call(request, timeout), handed_size=len(request))

    def _call(self, request: bytes, timeout: int) -> Outcome:
        try:
            child = self._child()
        except _Died as died:
            return Outcome(exceeded=str(died))
        try:
            reply = child.call(request, timeout / 1000)
        except _TimedOut:
            self._discard(child)
            return Outcome(exceeded=f"evaluation took longer than its budget of {timeout:,} ms")
        except _Died as died:
            self._discard(child)
            return Outcome(exceeded=str(died))
        return self._outcome(reply, child)

    def _outcome(self, reply: bytes, child: _Child) -> Outcome:
        message = pickle.loads(reply)
        if message[0] == "ok":
            return Outcome(value=message[1], size=len(reply))
        if message[0] == "error":
            return Outcome(error=message[1])
        if message[1] == "result":
            return Outcome(
                exceeded=f"its result is {int(message[2]):,} bytes; "
                f"the limit is {self.budget.max_result_bytes:,}"
            )
        self._discard(child)  # it exits after a MemoryError
        return Outcome(exceeded=self._memory_words())

    def _child(self) -> _Child:
        child: _Child | None = getattr(self._local, "child", None)
        if child is not None and child.alive():
            return child
        self._discard(child)
        child = _Child(self.budget, self._memory_words())
        with self._lock:
            if self._closed:
                child.kill()
                raise _Died("the expression sandbox is closed")
            self._children.add(child)
            self.started += 1
        self._local.child = child
        return child

    def _discard(self, child: _Child | None) -> None:
        if child is None:
            return
        child.kill()
        with self._lock:
            self._children.discard(child)
        if getattr(self._local, "child", None) is child:
            self._local.child = None

    def _memory_words(self) -> str:
        mib = self.budget.memory_bytes // _MIB
        return f"evaluation ran out of its memory budget of {mib:,} MiB"


class _Child:
    """One sandbox process and its pipes (used by one pool thread at a time)."""

    def __init__(self, budget: ExpressionBudget, memory_words: str) -> None:
        self._memory_words = memory_words
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "execplan.executor.expressions.sandbox_child",
                str(budget.memory_bytes),
                str(budget.max_result_bytes),
                str(os.getpid()),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # an abort prints a Rust backtrace: noise
            close_fds=True,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._in = self.process.stdin.fileno()
        self._out = self.process.stdout.fileno()
        os.set_blocking(self._in, False)
        try:
            self._read_frame(time.monotonic() + _START_TIMEOUT_S)  # ("ready",)
        except (_Died, _TimedOut) as error:
            self.kill()
            log.error("the expression sandbox process did not start: %s", error)
            raise _Died(f"the expression sandbox did not start ({error})") from error

    def alive(self) -> bool:
        return self.process.poll() is None

    def call(self, request: bytes, timeout_s: float) -> bytes:
        deadline = time.monotonic() + timeout_s
        self._write(_HEADER.pack(len(request)) + request, deadline)
        return self._read_frame(deadline)

    def kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def _write(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            self._wait(self._in, deadline, write=True)
            try:
                written = os.write(self._in, view)
            except BlockingIOError:
                continue
            except (BrokenPipeError, OSError) as error:
                raise _Died(self._death()) from error
            view = view[written:]

    def _read_frame(self, deadline: float) -> bytes:
        (size,) = _HEADER.unpack(self._read_exactly(_HEADER.size, deadline))
        return self._read_exactly(size, deadline)

    def _read_exactly(self, size: int, deadline: float) -> bytes:
        chunks: list[bytes] = []
        missing = size
        while missing:
            self._wait(self._out, deadline, write=False)
            chunk = os.read(self._out, min(missing, 1 << 20))
            if not chunk:
                raise _Died(self._death())
            chunks.append(chunk)
            missing -= len(chunk)
        return b"".join(chunks)

    def _wait(self, fd: int, deadline: float, *, write: bool) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _TimedOut
        readable, writable, _ = select.select(
            [] if write else [fd], [fd] if write else [], [], remaining
        )
        if not (readable or writable):
            raise _TimedOut

    def _death(self) -> str:
        """Why the child is gone, in the words of the budget that most likely ended it."""
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "the expression sandbox stopped answering"
        if code in (-signal.SIGABRT, -signal.SIGKILL, 1):
            # An allocation past RLIMIT_AS aborts in Rust, raises MemoryError in Python;
            # SIGKILL from outside (the kernel's OOM killer) counts as memory too.
            return self._memory_words
        if code == -signal.SIGSEGV:
            return "evaluation crashed (SIGSEGV): the expression nests too deeply"
        return f"the expression sandbox exited with status {code}"
