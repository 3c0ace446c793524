"""What a handler reported before returning leaves before (or with) its result, and
no result leaves before its ack: with many slots, async and sync handlers, and the
dispatches of one message started together (the SDK batches its thread hops)."""

from __future__ import annotations

import asyncio

from execplan.v1 import worker_service_pb2 as pb
from execplan.worker import TaskContext

from tests.clients.python.test_worker_sdk import dispatch, harness

ROUNDS, PER_ROUND = 3, 16


async def test_acks_reports_and_results_keep_their_order_with_many_slots() -> None:
    async with harness(slots=PER_ROUND, concurrency=PER_ROUND) as h:

        @h.worker.task("report.async")
        async def report_async(inputs: dict[str, object], ctx: TaskContext) -> object:
            ctx.stream("a")
            ctx.usage(searches=1)
            ctx.stream("b")
            ctx.heartbeat(progress={"at": ctx.task_id})
            await asyncio.sleep(0)
            ctx.stream("c")
            return ctx.task_id

        @h.worker.task("report.sync")
        def report_sync(inputs: dict[str, object], ctx: TaskContext) -> object:
            ctx.stream("a")
            ctx.usage(searches=1)
            ctx.stream("b")
            ctx.heartbeat(progress={"at": ctx.task_id})
            ctx.stream("c")
            return ctx.task_id

        h.serve()
        await h.fake.next_request()
        total = ROUNDS * PER_ROUND
        for r in range(ROUNDS):
            batch = [
                dispatch(n, "report.async" if n % 2 else "report.sync")
                for n in range(r * PER_ROUND, (r + 1) * PER_ROUND)
            ]
            h.server.send(pb.ConnectResponse(dispatches=batch))
            await asyncio.sleep(0.01)
        results: set[str] = set()
        async with asyncio.timeout(20):
            while len(results) < total:
                item = await h.fake.next_request(lambda r: len(r.results) > 0)
                results.update(res.attempt.task_id for res in item.request.results)

        # Message by message, as the fake received them (one stream).
        acked: dict[str, int] = {}
        used: dict[str, int] = {}
        chunks: dict[str, list[tuple[int, str]]] = {}
        progressed: dict[str, int] = {}
        finished: dict[str, int] = {}
        for i, received in enumerate(h.fake.log):
            request = received.request
            for ack in request.acks:
                acked.setdefault(ack.attempt.task_id, i)
            for usage in request.usage:
                used.setdefault(usage.attempt.task_id, i)
            for chunk in request.chunks:
                chunks.setdefault(chunk.attempt.task_id, []).append((i, chunk.text))
            for beat in request.heartbeats:
                if beat.HasField("progress"):
                    progressed.setdefault(beat.attempt.task_id, i)
            for result in request.results:
                assert result.attempt.task_id not in finished, "one result per attempt"
                assert result.WhichOneof("outcome") == "output", result
                finished[result.attempt.task_id] = i
        assert len(finished) == total
        for task_id, at in finished.items():
            assert acked[task_id] <= at, task_id  # the ack first (a message's acks lead)
            assert used[task_id] <= at, task_id
            assert progressed[task_id] <= at, task_id
            texts = chunks[task_id]
            assert [t for _, t in texts] == ["a", "b", "c"], task_id
            assert all(j <= at for j, _ in texts), task_id
