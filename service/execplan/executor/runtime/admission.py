"""Admission of flow-controlled attempts: the result cache, concurrency-limit slots
and rate-limit tokens, from the store, in batches, off the scheduling path.

The scheduler's gates run inside a pump round and cannot wait for the store. So an
attempt with flow control gets a **ticket** the first time the flow gate sees it
queued, and waits out of the ready queue; this loop serves every due ticket of the
moment in one batch (cache lookups, then one transaction for the slots, one for the
tokens) round-robin over fairness keys and executions (`fair_order`: tickets that
wait keep their place, so a tenant arriving late is not queued behind another's
backlog), and offers the tasks it admitted back to the scheduler (`offer`), which
dispatches them.

    ticket = admissions.ask(key, make)      # the gate: PENDING, WAITING, GRANTED or HIT
    admissions.dispatched(key)              # the dispatch is decided: its slot is held
    admissions.forget(execution_id)         # the execution leaves this engine

A ticket looks up the cache first (a hit completes the task without a dispatch),
then takes its slot, then its tokens (all or none); short of tokens it gives the
slot back at once and tries again when the bucket says the units will be there, or
after `POLL_MS` if that is sooner (a bucket changed meanwhile, a faster rate or a
bigger burst, lets its waiting tasks go within a second). Short of a slot it tries
again when one of that key is released here, and every `POLL_MS` in case another
replica released one. A dispatched attempt holds its slot under
`<execution id>/<task id>` until the attempt ends; `sweep` (each batch) finds ended
attempts, and tickets whose attempt left the queue, from the executions' state, so
no transition can leak a slot. After a restart or a takeover `adopt`
reconciles the store's holders of an execution with the attempts it still leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from execplan.aio import cancel_and_wait
from execplan.executor.waiting import CONCURRENCY_LIMIT, RATE_LIMIT, Wait, bracket
from execplan.store.flow import CacheEntry, FlowStore, SlotRequest, TakeRequest

log = logging.getLogger("execplan.executor")

POLL_MS = 1000
MAX_BATCH = 2000
MAX_SERVED_KEYS = 10_000

PENDING, WAITING, GRANTED, HIT = "pending", "waiting", "granted", "hit"
# (execution id, task index, phase, attempt, epoch): one admission per queued attempt.
TicketKey = tuple[str, int, int, int, int]


@dataclass(slots=True)
class Ticket:
    key: TicketKey
    task_id: str
    task_type: str
    slot: SlotRequest | None
    take: TakeRequest | None
    cache_key: str  # "" when there is nothing to look up
    since_ms: int
    # The execution's fairness key (StartExecution.fairness_key): due tickets are
    # served round-robin over these, then over executions (`fair_order`).
    fairness: str = ""
    state: str = PENDING
    holding: bool = False
    retry_at_ms: int = 0
    wait: Wait | None = None
    hit: CacheEntry | None = None

    @property
    def holder(self) -> str:
        return holder_of(self.key[0], self.task_id)


def holder_of(execution_id: str, task_id: str) -> str:
    return f"{execution_id}/{task_id}"


def fair_order(tickets: list[Ticket], last_served: Mapping[str, int]) -> list[Ticket]:
    """`tickets` (oldest first) round-robin over fairness keys, the key served least
    recently first (`last_served`: a rising number per key), and within one key over
    executions, each in its own order: a tenant whose tasks came after another's
    thousand waiting ones gets the next free slot, not the thousand-and-first."""
    by_key: dict[str, dict[str, list[Ticket]]] = {}
    for t in tickets:
        by_key.setdefault(t.fairness, {}).setdefault(t.key[0], []).append(t)
    if len(by_key) == 1 and len(next(iter(by_key.values()))) == 1:
        return tickets  # one execution: its own order
    keys = sorted(by_key, key=lambda k: last_served.get(k, 0))  # stable: oldest first
    return _interleave([_interleave(list(by_key[k].values())) for k in keys])


def _interleave(lists: list[list[Ticket]]) -> list[Ticket]:
    out: list[Ticket] = []
    for row in itertools.zip_longest(*lists):
        out.extend(t for t in row if t is not None)
    return out


class Admissions:
    def __init__(
        self,
        flow: FlowStore,
        *,
        offer: Callable[[str, int], None],
        note: Callable[[str, int, Wait], None],
        is_queued: Callable[[TicketKey], bool],
        holds: Callable[[str, str], bool | None],
        now_ms: Callable[[], int],
    ) -> None:
        """`offer(execution_id, index)`: the task may try again; `note(execution_id,
        index, wait)`: why it waits now (for `get`); `is_queued(key)`:
        is that attempt still the queued one; `holds(execution_id, task_id)`: True
        while the task's attempt is leased, False once it ended, None when the
        execution is not here (disowned: its slots stay for its new owner)."""
        self._flow = flow
        self._offer = offer
        self._note = note
        self._is_queued = is_queued
        self._holds = holds
        self._now_ms = now_ms
        self._tickets: dict[TicketKey, Ticket] = {}
        # Slots held by dispatched attempts: holder -> (limit name, key).
        self._held: dict[str, tuple[str, str]] = {}
        self._to_release: list[str] = []
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Fairness key -> when it was last served (a rising count), for `fair_order`.
        self._served: dict[str, int] = {}
        self._served_count = 0

    # -- from the gate (synchronous, inside a pump round) ----------------------------
    def get(self, key: TicketKey) -> Ticket | None:
        return self._tickets.get(key)

    def ask(self, ticket: Ticket) -> Ticket:
        known = self._tickets.get(ticket.key)
        if known is not None:
            return known
        self._tickets[ticket.key] = ticket
        self._kick.set()
        return ticket

    def dispatched(self, key: TicketKey) -> None:
        ticket = self._tickets.pop(key, None)
        if ticket is not None and ticket.holding and ticket.slot is not None:
            self._held[ticket.holder] = (ticket.slot.name, ticket.slot.key)

    def answered(self, key: TicketKey) -> None:
        """A cache hit was decided: the ticket is done."""
        self._tickets.pop(key, None)

    def forget(self, execution_id: str) -> None:
        """A Keeper: the execution left memory (finished, reloading or disowned); the
        next sweep releases what it held if it finished."""
        for key in [k for k in self._tickets if k[0] == execution_id]:
            ticket = self._tickets.pop(key)
            if ticket.holding:
                self._held[ticket.holder] = (ticket.slot.name, ticket.slot.key)  # type: ignore[union-attr]
        if self._held:  # else the sweep has nothing to release (no wake per retirement)
            self._kick.set()

    def kick(self) -> None:
        self._kick.set()

    def waiting(self) -> list[Ticket]:
        return [t for t in self._tickets.values() if t.state in (PENDING, WAITING)]

    def _release(self, holder: str) -> None:
        self._to_release.append(holder)
        for t in self._tickets.values():  # a slot came free: waiting tickets may go
            if t.state == WAITING and t.wait is not None and t.wait.kind == CONCURRENCY_LIMIT:
                t.retry_at_ms = 0
        self._kick.set()

    # -- the loop --------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="execplan-admissions")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self._to_release:
            with contextlib.suppress(Exception):
                await self._flow.release_slots(self._to_release)

    async def adopt(self, execution_id: str) -> None:
        """Reconcile the store's holders of an execution now live here: attempts it
        still leases keep their slots, the rest are released."""
        for slot in await self._flow.holders(execution_id + "/"):
            task_id = slot.holder[len(execution_id) + 1 :]
            if self._holds(execution_id, task_id):
                self._held[slot.holder] = (slot.name, slot.key)
            elif self._holds(execution_id, task_id) is False:
                self._release(slot.holder)

    async def _run(self) -> None:
        while True:
            timeout = self._next_due()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._kick.wait()
            self._kick.clear()
            try:
                await self.serve()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("flow-control admission failed; trying again")
                await asyncio.sleep(0.2)
                self._kick.set()

    def _next_due(self) -> float | None:
        due = [t.retry_at_ms for t in self._tickets.values() if t.state in (PENDING, WAITING)]
        if not due and not self._held and not self._tickets:
            return None
        if not due:
            return POLL_MS / 1000  # sweep held slots and granted tickets now and then
        return max(min(due) - self._now_ms(), 0) / 1000

    def sweep(self) -> None:
        """Tickets whose attempt left the queue, and held slots whose attempt ended."""
        for key in [k for k in self._tickets if not self._is_queued(k)]:
            ticket = self._tickets.pop(key)
            if ticket.holding:
                self._release(ticket.holder)
        ticketed = {t.holder for t in self._tickets.values() if t.holding}
        for holder in list(self._held):
            if holder in ticketed:  # queued again (a reload) and holding it anew
                del self._held[holder]
                continue
            execution_id, _, task_id = holder.partition("/")
            holds = self._holds(execution_id, task_id)
            if holds is None:
                del self._held[holder]  # not ours any more: its owner keeps the slot
            elif not holds:
                del self._held[holder]
                self._release(holder)

    async def serve(self) -> None:
        """One batch: releases, cache lookups, slots, tokens, for every due ticket."""
        self.sweep()
        if self._to_release:
            holders, self._to_release = self._to_release, []
            await self._flow.release_slots(holders)
        now = self._now_ms()
        waiting = (t for t in self._tickets.values() if t.state in (PENDING, WAITING))
        due = fair_order([t for t in waiting if t.retry_at_ms <= now], self._served)
        due = due[:MAX_BATCH]
        if not due:
            return
        due = await self._lookups(due)
        await self._slots(due)
        granted = await self._tokens([t for t in due if t.slot is None or t.holding])
        for t in granted:
            if self._tickets.get(t.key) is t:
                t.state, t.wait = GRANTED, None
                self._offer(t.key[0], t.key[1])
                self._serving(t.fairness)

    def _serving(self, fairness: str) -> None:
        """Remembers when a fairness key was last served (for `fair_order`)."""
        self._served_count += 1
        self._served[fairness] = self._served_count
        if len(self._served) > MAX_SERVED_KEYS:  # keep the keys that still wait
            waiting = {t.fairness for t in self._tickets.values()}
            self._served = {k: n for k, n in self._served.items() if k in waiting}

    async def _lookups(self, due: list[Ticket]) -> list[Ticket]:
        """Cache lookups of first-time tickets; returns the tickets that missed."""
        missed = []
        for t in due:
            if not t.cache_key or t.state != PENDING:
                missed.append(t)
                continue
            entry = await self._flow.get_cache(t.task_type, t.cache_key, self._now_ms())
            if entry is None:
                missed.append(t)
            elif self._tickets.get(t.key) is t:
                t.state, t.hit, t.wait = HIT, entry, None
                self._offer(t.key[0], t.key[1])
        return missed

    async def _slots(self, due: list[Ticket]) -> None:
        need = [t for t in due if t.slot is not None and not t.holding]
        if not need:
            return
        slots = [t.slot for t in need if t.slot is not None]
        granted = await self._flow.acquire_slots(slots)
        now = self._now_ms()
        for t, ok in zip(need, granted, strict=True):
            slot = t.slot
            assert slot is not None
            if ok and self._tickets.get(t.key) is not t:
                self._release(t.holder)  # dropped while we asked: give it back
            elif ok:
                t.holding = True
            else:
                message = (
                    f"concurrency limit {slot.name}{bracket(slot.key)} is full ({slot.max} running)"
                )
                self._wait(t, CONCURRENCY_LIMIT, slot.name, slot.key, now, now + POLL_MS, message)

    async def _tokens(self, ready: list[Ticket]) -> list[Ticket]:
        """Takes the tokens of tickets that need some; returns the tickets admitted."""
        need = [t for t in ready if t.take is not None and self._tickets.get(t.key) is t]
        if not need:
            return ready
        results = await self._flow.take_tokens([t.take for t in need if t.take is not None])
        now = self._now_ms()
        short: set[TicketKey] = set()
        give_back: list[str] = []
        for t, r in zip(need, results, strict=True):
            if r.taken:
                continue
            short.add(t.key)
            if t.holding:  # no slot is held while waiting for tokens
                t.holding = False
                give_back.append(t.holder)
            name, key = r.blocked_by, r.blocked_key
            if r.undefined:
                message = f"rate limit {name} is not defined (execplan limits set {name} ...)"
                retry, until = now + POLL_MS, 0
            elif r.wait_ms:
                # Asked again within POLL_MS even when the bucket says later: a change
                # of the bucket (`execplan limits set`, on any replica) takes effect.
                message = f"rate limit {name}{bracket(key)} is empty for {r.wait_ms} ms"
                until = now + r.wait_ms
                retry = now + min(r.wait_ms, POLL_MS)
            else:  # more units than the bucket holds: only a change of it helps
                message = f"rate limit {name}{bracket(key)} holds fewer units than it asks"
                retry, until = now + POLL_MS, 0
            self._wait(t, RATE_LIMIT, name, key, now, retry, message, until)
        if give_back:
            await self._flow.release_slots(give_back)
        return [t for t in ready if t.key not in short]

    def _wait(  # noqa: PLR0917  (one call shape, all facts of one wait)
        self,
        t: Ticket,
        kind: int,
        name: str,
        key: str,
        now: int,
        retry_at: int,
        message: str,
        until_ms: int = 0,
    ) -> None:
        old = t.wait
        since = old.since_ms if old is not None and old.kind == kind else max(t.since_ms, 0)
        t.state = WAITING
        t.retry_at_ms = retry_at
        t.wait = Wait(kind, name, key, since or now, until_ms, message)
        self._note(t.key[0], t.key[1], t.wait)
