"""A worker written from docs/worker-protocol.md alone: bare gRPC stubs generated from
proto/ (`execplan.v1`), no worker SDK. It serves one task type, `demo.echo`, and
prints every message of its stream, so it doubles as the protocol's worked example.

    execplan serve &
    python examples/raw_worker.py --demo            # registers, starts one execution of
                                                    # a demo.echo workflow, runs it, exits
    python examples/raw_worker.py 127.0.0.1:7070    # serves demo.echo until Ctrl-C

What it does, section by section of the document: register (and list what it still
runs after a reconnect), ack every dispatch at once, heartbeat every running attempt
each `heartbeat_interval_ms`, send each result once, stop an attempt on a cancel or a
rejection, finish its attempts on a drain, and reconnect within the 5 s grace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

import grpc
from execplan.v1 import (
    execution_pb2,
    executor_service_pb2,
    executor_service_pb2_grpc,
    worker_service_pb2,
    worker_service_pb2_grpc,
)
from google.protobuf import json_format, struct_pb2

FATAL = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
)
DEMO = """
name: raw-demo
inputs:
  text: {type: string, default: hello}
  seconds: {type: number, default: 2.5}
tasks:
  - id: echo
    type: demo.echo
    inputs: {text: "${{ workflow.inputs.text }}", seconds: "${{ workflow.inputs.seconds }}"}
    timeouts: {heartbeat: 10s}
outputs:
  echoed: "${{ tasks.echo.output.text }}"
"""


def show(direction: str, message: Any) -> None:
    text = json_format.MessageToJson(message, indent=None, preserving_proto_field_name=True)
    print(f"{direction} {text}", flush=True)


def key(ref: worker_service_pb2.AttemptRef) -> tuple[str, str, int, int, int]:
    """An attempt is (execution, task, phase) plus its fencing token."""
    token = ref.token
    return ref.execution_id, ref.task_id, ref.phase, token.attempt, token.lease_epoch


class RawWorker:
    def __init__(self, address: str, worker_id: str) -> None:
        self.channel = grpc.aio.insecure_channel(address)
        self.stub = worker_service_pb2_grpc.WorkerServiceStub(self.channel)
        self.worker_id = worker_id
        self.running: dict[tuple[str, str, int, int, int], asyncio.Task[None]] = {}
        self.refs: dict[tuple[str, str, int, int, int], worker_service_pb2.AttemptRef] = {}
        self.outgoing: asyncio.Queue[worker_service_pb2.ConnectRequest | None] = asyncio.Queue()
        self.heartbeat_s = 2.0
        self.max_output_bytes = 0  # from `registered`; 0: not said
        self.draining = False

    async def requests(self) -> Any:
        while (message := await self.outgoing.get()) is not None:
            show(">>", message)
            yield message

    def send(self, message: worker_service_pb2.ConnectRequest | None) -> None:
        """Queue a message; None half-closes the stream."""
        self.outgoing.put_nowait(message)

    async def session(self) -> None:
        """One stream: register, then answer the executor until it ends the stream."""
        registration = worker_service_pb2.WorkerRegistration(
            worker_id=self.worker_id,
            task_types=["demo.echo"],
            slots=4,
            running=list(self.refs.values()),  # what we still run: reconciled
            sdk="raw-worker-example/1",
        )
        self.send(worker_service_pb2.ConnectRequest(register=registration))
        call = self.stub.Connect(self.requests())
        beats = asyncio.create_task(self.heartbeats())
        try:
            async for response in call:
                show("<<", response)
                self.handle(response)
        finally:
            beats.cancel()

    def handle(self, response: worker_service_pb2.ConnectResponse) -> None:
        if response.HasField("registered"):
            self.heartbeat_s = response.registered.heartbeat_interval_ms / 1000 or 2.0
            self.max_output_bytes = response.registered.max_output_bytes
            for ref in response.registered.revoked:
                self.stop(ref)  # no longer ours: stop, send nothing
        dispatches = response.dispatches
        if dispatches:
            acks = [
                worker_service_pb2.AssignmentAck(attempt=d.attempt) for d in response.dispatches
            ]
            self.send(worker_service_pb2.ConnectRequest(acks=acks))  # at once, all in one
            for dispatch in dispatches:
                self.start(dispatch)
        for cancel in response.cancels:
            self.stop(cancel.attempt)
        for rejection in response.rejections:
            self.stop(rejection.attempt)
        if response.HasField("drain"):
            self.begin_drain()

    def start(self, dispatch: worker_service_pb2.Dispatch) -> None:
        k = key(dispatch.attempt)
        if k in self.running:
            return  # the same attempt again (after a reconnect): already running
        self.refs[k] = dispatch.attempt
        self.running[k] = asyncio.create_task(self.run(dispatch))

    async def run(self, dispatch: worker_service_pb2.Dispatch) -> None:
        k = key(dispatch.attempt)
        result = worker_service_pb2.TaskResult(attempt=dispatch.attempt)
        try:
            text = dispatch.inputs.fields["text"].string_value
            await asyncio.sleep(dispatch.inputs.fields["seconds"].number_value)  # the work
            result.output.CopyFrom(struct_pb2.Value(struct_value=_struct({"text": text})))
            size = result.output.ByteSize()
            if self.max_output_bytes and size > self.max_output_bytes:
                # Too big to send: a message over the limit would break the stream.
                result.error.CopyFrom(
                    execution_pb2.ErrorInfo(
                        type="PayloadTooLarge",
                        message=f"output of {size} bytes exceeds {self.max_output_bytes}",
                        retry=execution_pb2.ERROR_RETRY_NON_RETRYABLE,
                    )
                )
        except Exception as exc:  # a failure of the work itself: let the executor retry
            result.error.CopyFrom(
                execution_pb2.ErrorInfo(
                    type=type(exc).__name__,
                    message=str(exc),
                    retry=execution_pb2.ERROR_RETRY_RETRYABLE,
                    retryable=True,  # for servers that predate `retry`
                )
            )
        self.running.pop(k, None)
        self.refs.pop(k, None)
        self.send(worker_service_pb2.ConnectRequest(results=[result]))
        if self.draining and not self.running:
            self.send(None)  # drained: half-close; the executor ends the stream

    def stop(self, ref: worker_service_pb2.AttemptRef) -> None:
        k = key(ref)
        task = self.running.pop(k, None)
        self.refs.pop(k, None)
        if task is not None:
            task.cancel()

    def begin_drain(self) -> None:
        if not self.draining:
            self.draining = True
            status = worker_service_pb2.WorkerStatus(draining=True)
            self.send(worker_service_pb2.ConnectRequest(status=status))
            if not self.running:
                self.send(None)

    async def heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            beats = [worker_service_pb2.TaskHeartbeat(attempt=r) for r in self.refs.values()]
            if beats:
                self.send(worker_service_pb2.ConnectRequest(heartbeats=beats))

    async def serve(self) -> None:
        """Sessions until drained; a broken stream is retried well within the grace."""
        while not self.draining:
            try:
                await self.session()
            except grpc.aio.AioRpcError as err:
                if err.code() in (
                    grpc.StatusCode.INVALID_ARGUMENT,
                    grpc.StatusCode.PERMISSION_DENIED,
                ):
                    raise
                print(f"-- stream lost ({err.code().name}); reconnecting", flush=True)
                self.outgoing = asyncio.Queue()
                await asyncio.sleep(0.5)
            else:
                if not self.draining:
                    await asyncio.sleep(0.5)  # the server ended the stream: come back


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


async def demo(address: str) -> int:
    worker = RawWorker(address, "raw-demo-1")
    serving = asyncio.create_task(worker.serve())
    async with grpc.aio.insecure_channel(address) as channel:
        client = executor_service_pb2_grpc.ExecutorServiceStub(channel)
        inputs = _struct({"text": "hello from a raw worker"})
        started = await client.StartExecution(
            executor_service_pb2.StartExecutionRequest(source=DEMO, inputs=inputs)
        )
        watch = executor_service_pb2.WatchExecutionRequest(execution_id=started.execution_id)
        async for event in client.WatchExecution(watch):
            if event.event.HasField("execution_completed"):
                break
        done = await client.GetExecution(
            executor_service_pb2.GetExecutionRequest(execution_id=started.execution_id)
        )
    worker.begin_drain()  # leave as a worker should: draining, then half-close
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(serving, 5)
    state = execution_pb2.ExecutionState.Name(done.execution.state)
    print(f"-- {state} {json_format.MessageToJson(done.execution.outputs, indent=None)}")
    return 0 if done.execution.state == execution_pb2.EXECUTION_STATE_SUCCEEDED else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", nargs="?", default="127.0.0.1:7070")
    parser.add_argument("--demo", action="store_true", help="run one execution, then exit")
    args = parser.parse_args()
    if args.demo:
        return asyncio.run(demo(args.address))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(RawWorker(args.address, "raw-worker-1").serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
