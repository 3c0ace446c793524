"""Admissions (runtime/admission.py) over the memory flow store: what happens to a
slot when its attempt is dispatched, ends, leaves the queue, or its execution
finishes, is disowned or is reloaded. No slot may leak and none may be given twice."""

from __future__ import annotations

from execplan.executor.runtime.admission import GRANTED, WAITING, Admissions, Ticket
from execplan.flow import rates
from execplan.store.flow import SERVER, SlotRequest, TakeRequest, Use, now_ms
from execplan.store.flow_memory import MemoryFlowStore


class World:
    """What the admissions ask of the executions, as plain sets."""

    def __init__(self) -> None:
        self.queued: set[tuple[str, int, int, int, int]] = set()
        self.leased: set[tuple[str, str]] = set()
        self.finished: set[str] = set()
        self.reloading: set[str] = set()
        self.live: set[str] = {"e1", "e2", "done"}
        self.offered: list[tuple[str, int]] = []

    def holds(self, execution_id: str, task_id: str) -> bool | None:
        if execution_id in self.reloading:
            return True
        if execution_id in self.finished:
            return False
        if execution_id in self.live:
            return (execution_id, task_id) in self.leased
        return None  # not ours


def setup() -> tuple[Admissions, MemoryFlowStore, World]:
    flow, world = MemoryFlowStore(), World()
    admissions = Admissions(
        flow,
        offer=lambda e, i: world.offered.append((e, i)),
        note=lambda e, i, w: None,
        is_queued=lambda key: key in world.queued,
        holds=world.holds,
        now_ms=now_ms,
    )
    return admissions, flow, world


def ticket(execution_id: str, max_: int = 1, take: TakeRequest | None = None) -> Ticket:
    key = (execution_id, 0, 1, 1, 0)
    slot = SlotRequest("llm", "m", max_, f"{execution_id}/a")
    return Ticket(key, "a", "t", slot, take, "", now_ms())


async def test_a_slot_is_granted_held_while_leased_and_released_after() -> None:
    admissions, flow, world = setup()
    first, second = ticket("e1"), ticket("e2")
    world.queued |= {first.key, second.key}
    admissions.ask(first)
    admissions.ask(second)
    await admissions.serve()
    assert (first.state, second.state) == (GRANTED, WAITING)
    assert world.offered == [("e1", 0)]
    assert second.wait is not None and "is full (1 running)" in second.wait.message
    admissions.dispatched(first.key)
    world.queued.discard(first.key)
    world.leased.add(("e1", "a"))
    await admissions.serve()  # still running: still held
    assert [h.holder for h in await flow.holders()] == ["e1/a"]
    world.leased.clear()  # the attempt ended
    second.retry_at_ms = 0
    await admissions.serve()
    await admissions.serve()
    assert second.state == GRANTED
    assert [h.holder for h in await flow.holders()] == ["e2/a"]


async def test_a_ticket_whose_task_left_the_queue_gives_its_slot_back() -> None:
    admissions, flow, world = setup()
    t = ticket("e1")
    world.queued.add(t.key)
    admissions.ask(t)
    await admissions.serve()
    assert t.state == GRANTED and t.holding
    world.queued.clear()  # cancelled before its dispatch
    await admissions.serve()
    await admissions.serve()
    assert await flow.holders() == []


async def test_finished_executions_release_and_disowned_ones_keep() -> None:
    admissions, flow, world = setup()
    for execution_id in ("done", "gone"):
        t = ticket(execution_id, max_=5)
        world.queued.add(t.key)
        admissions.ask(t)
    await admissions.serve()
    for execution_id in ("done", "gone"):
        admissions.dispatched((execution_id, 0, 1, 1, 0))
    world.queued.clear()
    world.finished.add("done")  # "gone" is not live here: another replica owns it
    admissions.forget("done")
    admissions.forget("gone")
    await admissions.serve()
    await admissions.serve()
    assert [h.holder for h in await flow.holders()] == ["gone/a"]


async def test_a_reloaded_execution_does_not_lose_the_slot_it_asks_for_again() -> None:
    admissions, flow, world = setup()
    t = ticket("e1")
    world.queued.add(t.key)
    admissions.ask(t)
    await admissions.serve()
    world.reloading.add("e1")
    admissions.forget("e1")  # the reload drops it from memory...
    world.reloading.clear()
    again = ticket("e1")  # ...and its task queues again: the same holder asks anew
    admissions.ask(again)
    await admissions.serve()
    await admissions.serve()
    assert again.state == GRANTED and again.holding
    assert [h.holder for h in await flow.holders()] == ["e1/a"]
    other = ticket("e2")
    world.queued.add(other.key)
    admissions.ask(other)
    await admissions.serve()
    assert other.state == WAITING  # the one slot is still e1's


async def test_short_of_tokens_the_slot_goes_back_at_once() -> None:
    admissions, flow, world = setup()
    await flow.set_bucket("rpm", rates.settings(1, 60_000, 1), SERVER)
    take = TakeRequest((Use("rpm", "m", 1),))
    first, second = ticket("e1", 2, take), ticket("e2", 2, take)
    world.queued |= {first.key, second.key}
    admissions.ask(first)
    admissions.ask(second)
    await admissions.serve()
    assert (first.state, second.state) == (GRANTED, WAITING)
    assert second.wait is not None and second.wait.name == "rpm" and second.wait.until_ms
    assert not second.holding
    assert [h.holder for h in await flow.holders()] == ["e1/a"]


async def test_a_late_tenant_gets_the_next_slot_not_the_end_of_the_backlog() -> None:
    admissions, _, world = setup()
    backlog = []
    for i in range(6):  # tenant a: six executions waiting for a limit of 1
        t = ticket(f"a{i}")
        t.fairness = "tenant-a"
        backlog.append(t)
    for t in backlog:
        world.live.add(t.key[0])
        world.queued.add(t.key)
        admissions.ask(t)
    await admissions.serve()
    assert [t.state for t in backlog].count(GRANTED) == 1
    late = ticket("b0")  # tenant b comes after all of them
    late.fairness = "tenant-b"
    world.live.add("b0")
    world.queued.add(late.key)
    admissions.ask(late)
    await admissions.serve()
    assert late.state == WAITING
    first = next(t for t in backlog if t.state == GRANTED)
    admissions.dispatched(first.key)
    world.queued.discard(first.key)  # ran and ended: its slot comes free
    for t in [*backlog, late]:
        t.retry_at_ms = 0
    await admissions.serve()  # releases the slot
    await admissions.serve()
    assert late.state == GRANTED  # round-robin: tenant b before a's next five
    assert [t.state for t in backlog].count(GRANTED) == 1
