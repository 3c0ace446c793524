/**
 * The outgoing queue of the worker stream: whatever is queued leaves in one message.
 *
 * Acks, heartbeats, results and status changes pile up here; the writer takes them
 * all into a single ConnectRequest, so batching grows with load. Results written
 * recently stay `inFlight`: the protocol has no result ack and a write into a dying
 * stream is lost, so on a broken stream they are queued again and listed as running
 * on re-register (the executor revokes those it already recorded).
 */
import { create } from "@bufbuild/protobuf";
import {
  ConnectRequestSchema,
  WorkerStatusSchema,
} from "./gen/execplan/v1/worker_service_pb.js";
import type {
  AssignmentAck,
  ConnectRequest,
  TaskHeartbeat,
  TaskResult,
  WorkerStatus,
} from "./gen/execplan/v1/worker_service_pb.js";

export const DRAINING: WorkerStatus = create(WorkerStatusSchema, { draining: true, freeSlots: 0 });

export class Outbox {
  acks: AssignmentAck[] = [];
  heartbeats: TaskHeartbeat[] = [];
  /** Keyed so a revoked attempt's result can be dropped; Maps keep insertion order. */
  results = new Map<string, TaskResult>();
  status: WorkerStatus | undefined;
  /** Run once the message carrying the current acks is written (ack before start). */
  afterWrite: Array<() => void> = [];
  inFlight = new Map<string, { at: number; result: TaskResult }>();

  empty(): boolean {
    return !(this.acks.length || this.heartbeats.length || this.results.size || this.status);
  }

  take(now: number, keepForMs: number): { request: ConnectRequest | undefined; callbacks: Array<() => void> } {
    const callbacks = this.afterWrite;
    this.afterWrite = [];
    for (const [key, { at }] of this.inFlight) if (now - at > keepForMs) this.inFlight.delete(key);
    if (this.empty()) return { request: undefined, callbacks };
    const request = create(ConnectRequestSchema, {
      acks: this.acks,
      heartbeats: this.heartbeats,
      results: [...this.results.values()],
      status: this.status,
    });
    for (const [key, result] of this.results) this.inFlight.set(key, { at: now, result });
    this.acks = [];
    this.heartbeats = [];
    this.results = new Map();
    this.status = undefined;
    return { request, callbacks };
  }

  /** Forget what only made sense on the old stream; results stay queued. */
  resetConnection(lost: boolean): void {
    if (lost) {
      const pending = new Map<string, TaskResult>();
      for (const [key, { result }] of this.inFlight) pending.set(key, result);
      for (const [key, result] of this.results) pending.set(key, result);
      this.results = pending;
    }
    this.inFlight.clear();
    this.acks = [];
    this.heartbeats = [];
    this.afterWrite = [];
    this.status = undefined;
  }
}
