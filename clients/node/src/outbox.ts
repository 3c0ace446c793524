/**
 * The outgoing queue of the worker stream: whatever is queued leaves in one message.
 *
 * Acks, heartbeats, results and status changes pile up here; the writer takes them
 * all into a single ConnectRequest, so batching grows with load. Results written
 * recently stay `inFlight`: the protocol has no result ack and a write into a dying
 * stream is lost, so on a broken stream they are queued again and listed as running
 * on re-register (the executor revokes those it already recorded).
 *
 * Sizes: a message over the server's limit would break the stream, and the worker
 * would send it again after every reconnect. So `take` puts only as many results
 * into a message as fit under `maxMessageBytes` (the rest leave in the next one),
 * and a result whose output exceeds `maxOutputBytes` is replaced by an error result
 * of type `PayloadTooLarge` (not retryable): the attempt fails, not the stream. Both
 * limits come from the server's `WorkerRegistered`; until then (or from an older
 * server that does not send them) this channel's own message limit applies.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { ErrorInfoSchema } from "./gen/execplan/v1/execution_pb.js";
import type { ErrorInfo } from "./gen/execplan/v1/execution_pb.js";
import {
  AttemptRefSchema,
  ConnectRequestSchema,
  SubPlanSchema,
  TaskResultSchema,
  TaskStreamChunkSchema,
  WorkerStatusSchema,
} from "./gen/execplan/v1/worker_service_pb.js";
import type { UsageReport } from "./gen/execplan/v1/worker_service_pb.js";
import { CHANNEL_OPTIONS } from "./rpc.js";
import { makeError } from "./task_error.js";
import type {
  AssignmentAck,
  ConnectRequest,
  TaskHeartbeat,
  TaskResult,
  TaskStreamChunk,
  WorkerStatus,
} from "./gen/execplan/v1/worker_service_pb.js";

export const DRAINING: WorkerStatus = create(WorkerStatusSchema, { draining: true, freeSlots: 0 });

const CHANNEL_MAX_MESSAGE_BYTES = CHANNEL_OPTIONS["grpc.max_send_message_length"] as number;
/** Room for everything in a message but the results, and for a result's envelope. */
export const ENVELOPE_BYTES = 64 * 1024;
/** A handler's error message is cut to this many characters when its result is too big. */
const ERROR_MESSAGE_CHARS = 4096;
/** Usage reports per message (each ~100 bytes), and kept at most while unacknowledged. */
const MAX_USAGE_PER_MESSAGE = 1000;
const MAX_UNACKED_USAGE = 10_000;
/** Partial output waiting to be written: above this, newer chunks are dropped (live data). */
export const MAX_PENDING_CHUNK_BYTES = 8 * 1024 * 1024;

export class Outbox {
  acks: AssignmentAck[] = [];
  heartbeats: TaskHeartbeat[] = [];
  /** Keyed so a revoked attempt's result can be dropped; Maps keep insertion order. */
  results = new Map<string, TaskResult>();
  status: WorkerStatus | undefined;
  inFlight = new Map<string, { at: number; result: TaskResult }>();
  /**
   * Usage reports (docs/usage.md): queued ones leave before any result of the same
   * message; a sent one stays unacked (by `attempt key#sequence`) until the executor's
   * UsageAck, and is queued again after a reconnect (the executor counts each once).
   */
  usage: Array<{ key: string; report: UsageReport }> = [];
  usageUnacked = new Map<string, { key: string; report: UsageReport }>();
  /** Partial output in the order produced, keyed by attempt; leaves before results. */
  chunks: Array<{ key: string; chunk: TaskStreamChunk; size: number }> = [];
  chunkBytes = 0;
  droppedChunks = 0;
  maxMessageBytes = CHANNEL_MAX_MESSAGE_BYTES;
  maxOutputBytes = CHANNEL_MAX_MESSAGE_BYTES - ENVELOPE_BYTES;

  addUsage(key: string, report: UsageReport): void {
    this.usage.push({ key, report });
    // A server that never acknowledges (an older one) must not grow this forever.
    while (this.usage.length + this.usageUnacked.size > MAX_UNACKED_USAGE) {
      const oldest = this.usageUnacked.keys().next();
      if (!oldest.done) this.usageUnacked.delete(oldest.value);
      else this.usage.shift();
    }
  }

  usageAcked(key: string, sequence: number): void {
    this.usageUnacked.delete(`${key}#${sequence}`);
  }

  /** The server's limits from `WorkerRegistered` (0: not sent, keep ours). */
  setLimits(maxOutputBytes: number, maxMessageBytes: number): void {
    if (maxMessageBytes) this.maxMessageBytes = Math.min(maxMessageBytes, CHANNEL_MAX_MESSAGE_BYTES);
    const room = this.maxMessageBytes - ENVELOPE_BYTES;
    this.maxOutputBytes = Math.min(maxOutputBytes || room, room);
  }

  empty(): boolean {
    return !(this.acks.length || this.heartbeats.length || this.results.size || this.status || this.usage.length || this.chunks.length);
  }

  /** Queue a chunk; false when dropped because too much output is waiting. */
  addChunk(key: string, chunk: TaskStreamChunk): boolean {
    const size = toBinary(TaskStreamChunkSchema, chunk).byteLength;
    if (this.chunkBytes + size > MAX_PENDING_CHUNK_BYTES) {
      this.droppedChunks += 1;
      return false;
    }
    this.chunks.push({ key, chunk, size });
    this.chunkBytes += size;
    return true;
  }

  dropChunks(key: string): void {
    this.chunks = this.chunks.filter((c) => c.key !== key);
    this.chunkBytes = this.chunks.reduce((n, c) => n + c.size, 0);
  }

  take(now: number, keepForMs: number): ConnectRequest | undefined {
    for (const [key, { at }] of this.inFlight) if (now - at > keepForMs) this.inFlight.delete(key);
    if (this.empty()) return undefined;
    const request = create(ConnectRequestSchema, {
      acks: this.acks,
      heartbeats: this.heartbeats,
      status: this.status,
    });
    // Usage first: the executor handles it before the results of the same message, so an
    // attempt's usage is counted before its result can end the execution.
    for (const item of this.usage.splice(0, MAX_USAGE_PER_MESSAGE)) {
      this.usageUnacked.set(`${item.key}#${item.report.sequence}`, item);
      request.usage.push(item.report);
    }
    let budget = this.maxMessageBytes - toBinary(ConnectRequestSchema, request).byteLength;
    let sent = 0;
    for (const { chunk, size } of this.chunks) {
      if (size + 8 > budget && request.chunks.length) break;
      budget -= size + 8;
      request.chunks.push(chunk);
      this.chunkBytes -= size;
      sent += 1;
    }
    this.chunks.splice(0, sent);
    for (const [key, queued] of this.usage.length ? [] : this.results) {
      const { result, size } = this.fit(queued);
      if (size > budget && (request.results.length || request.chunks.length)) break; // the next message takes it
      budget -= size;
      request.results.push(result);
      this.inFlight.set(key, { at: now, result });
      this.results.delete(key);
    }
    this.acks = [];
    this.heartbeats = [];
    this.status = undefined;
    return request;
  }

  /** `result` and its size (at most), or an error result in its place if it is too big to send. */
  fit(result: TaskResult): { result: TaskResult; size: number } {
    const outcome = result.outcome;
    const limit = this.maxOutputBytes;
    let size = 0;
    let error: ErrorInfo | undefined;
    if (outcome.case === "output" || outcome.case === "subPlan") {
      // A dynamic task's sub-plan is its answer: the same limit as an output.
      size = outcome.case === "output" ? toBinary(ValueSchema, outcome.value).byteLength : toBinary(SubPlanSchema, outcome.value).byteLength;
      if (size > limit) {
        const what = outcome.case === "output" ? "output" : "sub-plan";
        error = makeError("PayloadTooLarge", `${what} of ${size} bytes exceeds the server's limit of ${limit} bytes`, false);
      }
    } else if (outcome.case === "error") {
      size = toBinary(ErrorInfoSchema, outcome.value).byteLength;
      if (size > limit) {
        // An error too big to send: keep what decides retries, cut the message, drop details.
        error = create(ErrorInfoSchema, {
          type: outcome.value.type.slice(0, 256),
          message: `${outcome.value.message.slice(0, ERROR_MESSAGE_CHARS)} ... (truncated)`,
          retryable: outcome.value.retryable,
          retry: outcome.value.retry,
        });
      }
    }
    if (error) {
      // The usage stays: it counts whatever the outcome.
      result = create(TaskResultSchema, { attempt: result.attempt, usage: result.usage, outcome: { case: "error", value: error } });
      size = toBinary(ErrorInfoSchema, error).byteLength;
    }
    const attempt = result.attempt ? toBinary(AttemptRefSchema, result.attempt).byteLength : 0;
    return { result, size: size + attempt + 16 }; // + field tags and lengths
  }

  /** Forget what only made sense on the old stream; results stay queued. */
  resetConnection(lost: boolean): void {
    if (lost) {
      const pending = new Map<string, TaskResult>();
      for (const [key, { result }] of this.inFlight) pending.set(key, result);
      for (const [key, result] of this.results) pending.set(key, result);
      this.results = pending;
    }
    // Reports not acknowledged may not have been recorded: send them again, first.
    this.usage = [...this.usageUnacked.values(), ...this.usage];
    this.usageUnacked.clear();
    this.inFlight.clear();
    this.acks = [];
    this.heartbeats = [];
    this.status = undefined;
    // Live output of the old stream: nobody resumes it (chunks are not stored).
    this.chunks = [];
    this.chunkBytes = 0;
  }
}
