/**
 * Worker: register handlers, connect, run attempts, drain on SIGTERM.
 *
 *     const worker = new Worker({ address: "127.0.0.1:7070", slots: 8 });
 *     worker.task("payments.charge", async (inputs, ctx) => {
 *       ctx.heartbeat({ step: "authorising" });
 *       return { charged: inputs.amount };
 *     });
 *     await worker.run();              // SIGTERM/SIGINT drain, a second one stops
 *
 * Protocol (same as the Python SDK; docs/worker-protocol.md has the whole of it):
 * 1. connect, send `register` (with `running`: attempts in progress or whose result
 *    is not yet delivered), wait for `registered`; revoked attempts are aborted and
 *    their queued results dropped;
 * 2. per incoming message: one ack per dispatch, all in one outgoing message, and
 *    the handlers start at once. The acks are held back for up to ACK_HOLD_MS (or
 *    1/20 of the server's ack deadline), so a quick handler's result travels in the
 *    same message as its ack (one stream message each way per task instead of two);
 *    any message that leaves earlier (a result, a heartbeat) takes them along, and
 *    every message carries all queued acks, so an ack never leaves after its result;
 * 3. every heartbeat interval: one message with a heartbeat for each running attempt
 *    and its latest progress (sooner, rate-limited, when ctx.heartbeat() has news);
 * 4. results are batched with whatever else is ready (one message per tick);
 * 5. `cancels` and `rejections` (of an ack, heartbeat or result: the executor no
 *    longer leases that attempt to this worker) abort the handler's AbortSignal and
 *    drop its result;
 * 6. a local drain (drain()/SIGTERM): status{draining}, finish running attempts,
 *    send their results, half-close, wait for the server to end the stream, resolve.
 *    The server's `drain` (it is shutting down) does the same on this connection,
 *    then reconnects: the worker is back as soon as the server listens again;
 * 7. a broken stream: reconnect as the retry policy says (errors.ts: the first retry
 *    at once, then full jitter capped at 2 s, or the server's RetryInfo delay);
 *    every try but the very first waits for the channel to be ready (waitForReady),
 *    so it starts the moment the server is back (the channel retries its connection
 *    every 0.1-1 s, rpc.ts), well within the executor's 5 s reconnect grace.
 *    INVALID_ARGUMENT, PERMISSION_DENIED, UNAUTHENTICATED (and UNIMPLEMENTED) are
 *    fatal and reject run()/serve();
 * 8. a drain or stop interrupts every wait at once: a stream that is not connected
 *    and has nothing left to deliver ends without waiting for a connection; results
 *    it still holds are given up after DRAIN_DELIVERY_MS disconnected (the executor
 *    re-leases those attempts after its reconnect grace anyway).
 *
 * Several executor replicas: `address: "host1:7070,host2:7070"` (or a comma list in
 * $EXECPLAN_ADDRESS) opens one stream per address, the same worker id on each, and
 * splits `slots` between them (`slots / n`, the first `slots % n` get one more, at
 * least one each), as the Python SDK does; results go back on the stream that
 * carried the dispatch.
 *
 * Handlers run on the event loop: a CPU-bound handler delays heartbeats (and, as it
 * starts before its ack is written, the acks of its message: they leave as soon as
 * it returns if the hold is over), so keep heavy work in worker_threads or child
 * processes.
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { create } from "@bufbuild/protobuf";
import type { JsonObject } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { encodeCapacity } from "./capacity.js";
import type { Capacity } from "./capacity.js";
import { TaskContext } from "./context.js";
import type { StreamPiece } from "./context.js";
import { Backoff, Status, decodeDetails, sleep, translate } from "./errors.js";
import type { ErrorInfo, Usage } from "./gen/execplan/v1/execution_pb.js";
import { makeError } from "./task_error.js";
import {
  AssignmentAckSchema,
  ConnectRequestSchema,
  TaskHeartbeatSchema,
  TaskResultSchema,
  UsageReportSchema,
  TaskStreamChunkSchema,
  WorkerRegistrationSchema,
  WorkerService,
} from "./gen/execplan/v1/worker_service_pb.js";
import type {
  AttemptRef,
  ConnectRequest,
  ConnectResponse,
  Dispatch,
  TaskResult,
  WorkerCapacity,
  WorkerRegistered,
  WorkerRegistration,
} from "./gen/execplan/v1/worker_service_pb.js";
import { DRAINING, Outbox } from "./outbox.js";
import { makeClient, resolveAddress } from "./rpc.js";
import type { GenericClient } from "./rpc.js";
import { transport } from "./security.js";
import type { SecurityOptions, Transport } from "./security.js";
import { SubPlan } from "./subplan.js";
import { Output, usageMessage } from "./usage.js";
import { toValue } from "./values.js";
import { startSpan } from "./tracing.js";

export const SDK = "node/0.1";
/** Codes no retry can fix: the registration or credentials are wrong. */
export const FATAL_CODES: ReadonlySet<Status> = new Set([
  Status.INVALID_ARGUMENT,
  Status.PERMISSION_DENIED,
  Status.UNAUTHENTICATED,
  Status.UNIMPLEMENTED,
]);
const DEFAULT_HEARTBEAT_MS = 10_000;
/** A server that never ends the stream after our half-close must not hang shutdown. */
const CLOSE_TIMEOUT_MS = 5_000;
/** Draining and disconnected: how long results may wait for a connection (the executor's reconnect grace). */
const DRAIN_DELIVERY_MS = 5_000;
/**
 * How long acks wait for a result to ride with (at most 1/20 of the ack deadline).
 * Nothing on the executor waits for an ack but its deadline (5 s by default) and the
 * worker's pacing window, which a result counts for as well.
 */
export const ACK_HOLD_MS = 5;

export type Handler<I extends JsonObject = JsonObject, O = unknown> = (inputs: I, ctx: TaskContext) => O | Promise<O>;

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
}

/**
 * TLS and token options (`tlsCa`, `tlsCert`, `tlsKey`, `token`, paths or PEM; see
 * security.ts) fall back to $EXECPLAN_TLS_CA/_CERT/_KEY and $EXECPLAN_TOKEN.
 */
export interface WorkerOptions extends SecurityOptions {
  /**
   * host:port, or a comma list of executor replicas (one stream each, slots split
   * between them); defaults to $EXECPLAN_ADDRESS, else 127.0.0.1:7070.
   */
  address?: string;
  /** Stable identity; the executor reconciles a reconnect by it. */
  workerId?: string;
  /** Concurrent attempts accepted (default 8). */
  slots?: number;
  labels?: Record<string, string>;
  environment?: string;
  /**
   * What tasks' `resources` may take here at once, e.g. `{ cpu: 8, memory: "16Gi",
   * gpu: 1, "model-slots": 2 }`; default: this machine's cores and memory, no GPU
   * (capacity.ts). Every replica of a comma list gets the whole capacity.
   */
  capacity?: Capacity;
  channelOptions?: grpc.ChannelOptions;
  logger?: Logger;
}

interface Attempt {
  dispatch: Dispatch;
  ctx: TaskContext;
  abort: AbortController;
}

type ConnectCall = grpc.ClientDuplexStream<ConnectRequest, ConnectResponse>;

/** Each address of a comma list (one element for a single address). */
export function splitAddresses(address?: string): string[] {
  const raw = resolveAddress(address);
  const parts = raw.split(",").map((p) => p.trim()).filter(Boolean);
  return parts.length <= 1 ? [raw.trim()] : parts;
}

/** `slots` split over `n` streams: slots / n each, the first slots % n one more, at least one. */
export function splitSlots(slots: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => Math.max(1, Math.floor(slots / n) + (i < slots % n ? 1 : 0)));
}

export function defaultWorkerId(): string {
  return `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
}

const quietLogger: Logger = {
  info: (m) => {
    if (process.env.EXECPLAN_LOG === "debug") console.error(`execplan.worker: ${m}`);
  },
  warn: (m) => console.error(`execplan.worker: ${m}`),
};

export class Worker {
  /** As given (possibly a comma list); `addresses` has each replica. */
  readonly address: string;
  readonly addresses: string[];
  readonly workerId: string;
  readonly slots: number;
  readonly labels: Record<string, string>;
  readonly environment: string;
  readonly capacity: WorkerCapacity;
  private readonly options: WorkerOptions;
  private readonly log: Logger;
  private readonly transport: Transport;
  /** One child worker per replica when `address` is a comma list, while serving. */
  private children: Worker[] | undefined;
  private readonly handlers = new Map<string, Handler<any, unknown>>();
  private client: GenericClient | undefined;
  private call: ConnectCall | undefined;
  private attempts = new Map<string, Attempt>();
  private outbox = new Outbox();
  private backoff = new Backoff();
  private heartbeatMs = DEFAULT_HEARTBEAT_MS;
  private ackHoldMs = ACK_HOLD_MS;
  /** The end of the current acks' hold: they leave then, results or not. */
  private ackTimer: NodeJS.Timeout | undefined;
  private ackDue = 0;
  private draining = false;
  /** The server said `drain` on the current connection: finish, then reconnect. */
  private serverDraining = false;
  private stopping = false;
  /** Connection state, for a drain that must not wait on a dead server. */
  private registered = false;
  private tried = false;
  private givenUp = false;
  private disconnectedAt = Date.now();
  private drainBeganAt = 0;
  private giveUpTimer: NodeJS.Timeout | undefined;
  private halfClosed = false;
  private serving: Promise<void> | undefined;
  private interrupt = new AbortController();
  private flushScheduled = false;
  private earlyBeat: NodeJS.Timeout | undefined;
  private lastEarlyBeat = 0;
  private onHalfClose: () => void = () => undefined;

  constructor(options: WorkerOptions = {}) {
    const slots = options.slots ?? 8;
    if (!Number.isInteger(slots) || slots < 1) throw new RangeError("slots must be an integer >= 1");
    this.options = options;
    this.address = resolveAddress(options.address);
    this.addresses = splitAddresses(options.address);
    this.transport = transport(options); // bad TLS files fail here, not on first connect
    this.workerId = options.workerId ?? defaultWorkerId();
    this.slots = slots;
    this.labels = { ...(options.labels ?? {}) };
    this.environment = options.environment ?? "";
    this.capacity = encodeCapacity(options.capacity); // a typo fails here, not on connect
    this.log = options.logger ?? quietLogger;
  }

  get taskTypes(): string[] {
    return [...this.handlers.keys()].sort();
  }

  /** Register the handler of a task type; returns this for chaining. */
  task<I extends JsonObject = JsonObject, O = unknown>(taskType: string, handler: Handler<I, O>): this {
    if (this.handlers.has(taskType)) throw new Error(`task type ${JSON.stringify(taskType)} already has a handler`);
    this.handlers.set(taskType, handler as Handler<any, unknown>);
    return this;
  }

  /** serve() with SIGTERM/SIGINT handlers: the first drains, a second stops at once. */
  async run(): Promise<void> {
    let signals = 0;
    const onSignal = (sig: NodeJS.Signals) => {
      signals += 1;
      if (signals === 1) {
        this.log.info(`${sig}: draining (send again to stop at once)`);
        this.drainNow(sig);
      } else {
        this.log.info(`${sig} again: stopping now`);
        this.stopNow();
      }
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
    try {
      await this.serve();
    } finally {
      process.off("SIGTERM", onSignal);
      process.off("SIGINT", onSignal);
    }
  }

  /** Connect and serve until a drain completes or stop(); rejects on a fatal error. */
  serve(): Promise<void> {
    if (this.serving) throw new Error("this worker is already serving");
    const serving = this.addresses.length > 1 ? this.serveGroup() : this.reconnectLoop();
    this.serving = serving.finally(() => {
      clearTimeout(this.giveUpTimer);
      this.abortAll("worker stopped");
      this.client?.close();
      this.client = undefined;
      this.serving = undefined;
    });
    return this.serving;
  }

  /** Take no new work, finish running attempts, deliver results, then resolve. */
  async drain(reason = "drain requested"): Promise<void> {
    const serving = this.serving;
    this.drainNow(reason);
    await serving?.catch(() => undefined);
  }

  /** End now: running attempts are aborted and re-leased by the executor. */
  async stop(): Promise<void> {
    const serving = this.serving;
    this.stopNow();
    await serving?.catch(() => undefined);
  }

  // -- several replicas ---------------------------------------------------------------
  /** One child worker per address; resolves when all are done, rejects (stopping the rest) on the first fatal error. */
  private async serveGroup(): Promise<void> {
    const slots = splitSlots(this.slots, this.addresses.length);
    const children = this.addresses.map((address, i) => {
      const child = new Worker({ ...this.options, address, slots: slots[i], workerId: this.workerId, logger: this.log });
      for (const [type, handler] of this.handlers) child.handlers.set(type, handler);
      return child;
    });
    this.children = children;
    const runs = children.map((c) => c.serve());
    try {
      await new Promise<void>((resolve, reject) => {
        let left = runs.length;
        for (const run of runs) {
          run.then(
            () => {
              if (--left === 0) resolve();
            },
            (err: unknown) => reject(err),
          );
        }
      });
    } finally {
      for (const c of children) c.stopNow();
      await Promise.allSettled(runs);
      this.children = undefined;
    }
  }

  // -- reconnect loop -------------------------------------------------------------
  private async reconnectLoop(): Promise<void> {
    this.client = makeClient(WorkerService, this.address, this.transport, this.options.channelOptions);
    while (!this.stopping) {
      let delayMs: number | undefined;
      try {
        if (await this.session()) return;
      } catch (err) {
        const e = err as grpc.ServiceError;
        if (this.stopping || this.givenUp) return;
        if (FATAL_CODES.has(e.code)) throw translate(err);
        delayMs = decodeDetails(e).retryAfterMs;
        this.log.warn(`worker stream lost (${Status[e.code] ?? e.code}: ${e.details ?? e.message})`);
      }
      if (this.drained() || this.stopping || this.givenUp) return; // nothing left to deliver
      this.interrupt = new AbortController();
      await sleep(this.backoff.nextDelayMs(delayMs), this.interrupt.signal);
      if (this.drained() || this.givenUp) return; // drained (or gave up) while we waited
    }
  }

  /** One stream; resolves true when it ended because a local drain completed. */
  private session(): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      const connect = this.client!.connect as (md: grpc.Metadata) => ConnectCall;
      const call = connect.call(this.client, new grpc.Metadata({ waitForReady: this.tried }));
      this.tried = true;
      this.call = call;
      this.halfClosed = false;
      this.serverDraining = false;
      let registered = false;
      let settled = false;
      let heartbeat: NodeJS.Timeout | undefined;
      let closeTimer: NodeJS.Timeout | undefined;
      const finish = (lost: boolean, outcome: () => void) => {
        if (settled) return;
        settled = true;
        clearInterval(heartbeat);
        clearTimeout(closeTimer);
        clearTimeout(this.earlyBeat);
        this.earlyBeat = undefined;
        clearTimeout(this.ackTimer);
        this.ackTimer = undefined;
        if (this.call === call) this.call = undefined;
        this.registered = false;
        call.cancel();
        this.onDisconnected(lost);
        outcome();
      };
      call.on("data", (res: ConnectResponse) => {
        if (!registered) {
          if (!res.registered) {
            this.log.warn("first server message was not `registered`; reconnecting");
            return finish(true, () => resolve(false));
          }
          registered = true;
          this.registered = true;
          this.onRegistered(res.registered);
          heartbeat = setInterval(() => this.queueHeartbeats(false), this.heartbeatMs);
        }
        this.onResponse(res);
        if (res.dispatches.length && !res.cancels.length && !res.rejections.length) this.holdAcks();
        else this.flush();
      });
      call.on("end", () => {
        // The server ended the stream: after our half-close that is the drain's end;
        // after the server's drain we come back, after our own we are done.
        const clean = this.halfClosed;
        finish(!clean, () => resolve(clean && this.draining));
      });
      call.on("error", (err: grpc.ServiceError) => {
        if (this.stopping) return finish(true, () => resolve(true));
        finish(true, () => reject(err));
      });
      this.onHalfClose = () => {
        closeTimer = setTimeout(() => finish(false, () => resolve(this.draining)), CLOSE_TIMEOUT_MS);
      };
      const first = create(ConnectRequestSchema, { register: this.registration() });
      if (this.draining) first.status = DRAINING;
      call.write(first);
    });
  }

  // -- protocol handlers ------------------------------------------------------------
  private registration(): WorkerRegistration {
    const running: AttemptRef[] = [];
    for (const a of this.attempts.values()) if (a.dispatch.attempt) running.push(a.dispatch.attempt);
    for (const r of this.outbox.results.values()) if (r.attempt) running.push(r.attempt);
    return create(WorkerRegistrationSchema, {
      workerId: this.workerId,
      taskTypes: this.taskTypes,
      labels: this.labels,
      environment: this.environment,
      slots: this.slots,
      running,
      sdk: SDK,
      capacity: this.capacity,
    });
  }

  private onRegistered(registered: WorkerRegistered): void {
    this.backoff.reset();
    if (registered.heartbeatIntervalMs) this.heartbeatMs = registered.heartbeatIntervalMs;
    if (registered.ackDeadlineMs) this.ackHoldMs = Math.min(ACK_HOLD_MS, registered.ackDeadlineMs / 20);
    this.outbox.setLimits(registered.maxOutputBytes, registered.maxMessageBytes);
    for (const ref of registered.revoked) {
      this.log.info(`attempt ${ref.executionId}/${ref.taskId} revoked on re-register`);
      this.cancel(ref, "revoked");
    }
  }

  private onResponse(res: ConnectResponse): void {
    for (const dispatch of res.dispatches) this.onDispatch(dispatch);
    for (const c of res.cancels) {
      if (!c.attempt) continue;
      this.log.info(`attempt ${c.attempt.executionId}/${c.attempt.taskId} cancelled: ${c.reason}`);
      this.cancel(c.attempt, c.reason || "cancelled");
    }
    for (const r of res.rejections) {
      if (!r.attempt) continue;
      this.log.info(`attempt ${r.attempt.executionId}/${r.attempt.taskId} rejected: ${r.reason}`);
      this.cancel(r.attempt, r.reason || "rejected");
    }
    for (const a of res.usageAcks) {
      if (!a.attempt) continue;
      if (!a.recorded) this.log.warn(`usage report ${a.sequence} of ${a.attempt.executionId}/${a.attempt.taskId} refused: ${a.reason}`);
      this.outbox.usageAcked(keyOf(a.attempt), a.sequence);
    }
    if (res.drain) this.onServerDrain(res.drain.reason || "server drain");
  }

  private onDispatch(dispatch: Dispatch): void {
    const ref = dispatch.attempt;
    if (!ref) return;
    const key = keyOf(ref);
    this.outbox.acks.push(create(AssignmentAckSchema, { attempt: ref }));
    if (this.attempts.has(key) || this.outbox.results.has(key)) return; // re-sent: ack only
    const abort = new AbortController();
    // Usage counts also after the attempt ended (cancelled, timed out): it was spent.
    const onUsage = (sequence: number, usage: Usage) => {
      this.outbox.addUsage(key, create(UsageReportSchema, { attempt: ref, sequence, usage }));
      this.scheduleFlush();
    };
    const ctx = new TaskContext(
      info(dispatch),
      abort.signal,
      () => this.requestHeartbeat(),
      onUsage,
      (pieces) => this.onStream(key, ref, pieces),
    );
    const attempt: Attempt = { dispatch, abort, ctx };
    this.attempts.set(key, attempt);
    this.start(key, attempt);
  }

  /** Acks of the message just read: they leave with the next message, at the latest when the hold ends. */
  private holdAcks(): void {
    if (this.ackTimer) return; // an earlier hold ends sooner
    this.ackDue = Date.now() + this.ackHoldMs;
    this.ackTimer = setTimeout(() => {
      this.ackTimer = undefined;
      if (this.outbox.acks.length) this.flush();
    }, this.ackHoldMs);
  }

  private start(key: string, attempt: Attempt): void {
    const { dispatch, ctx } = attempt;
    const handler = this.handlers.get(dispatch.taskType);
    if (!handler) {
      // Another worker may have this type, so the attempt stays retryable.
      const error = makeError("UnknownTaskType", `no handler registered for task type ${JSON.stringify(dispatch.taskType)}`, true);
      return this.onResult(key, attempt, errorResult(dispatch.attempt!, error));
    }
    const span = startSpan(dispatch.taskType, ctx);
    Promise.resolve()
      .then(() => {
        // Cancelled in the message that dispatched it: never run.
        if (this.attempts.get(key) !== attempt) throw attempt.abort.signal.reason;
        const running = span ? span.run(() => handler(dispatch.inputs ?? {}, ctx)) : handler(dispatch.inputs ?? {}, ctx);
        // A handler that blocked the event loop past the hold: its acks leave now,
        // not after every other handler started in this tick.
        if (this.ackTimer && Date.now() >= this.ackDue) this.flush();
        return running;
      })
      .then(
        (output) => {
          span?.end();
          this.onResult(key, attempt, outputResult(dispatch.attempt!, output));
        },
        (err: unknown) => {
          span?.fail(err);
          this.onResult(key, attempt, errorResult(dispatch.attempt!, errorInfo(err)));
        },
      );
  }

  private onResult(key: string, attempt: Attempt, result: TaskResult): void {
    if (this.attempts.get(key) !== attempt) return; // cancelled or revoked: nobody wants it
    this.attempts.delete(key);
    // Search attributes set after the last heartbeat go with the result.
    Object.assign(result.searchAttributes, attempt.ctx.takeSearchAttributes());
    // Progress reported since the last heartbeat (a handler that reports and returns at
    // once, inside the early-heartbeat pause) leaves in a heartbeat queued before the
    // result: the executor reads a message's heartbeats first, and the attempt ends
    // with its result.
    if (attempt.ctx.progressDirty && attempt.ctx.progress !== undefined) {
      attempt.ctx.progressDirty = false;
      const beat = create(TaskHeartbeatSchema, { attempt: attempt.dispatch.attempt });
      beat.progress = attempt.ctx.progress;
      this.outbox.heartbeats.push(beat);
    }
    this.outbox.results.set(key, result);
    this.scheduleFlush();
    this.giveUpIfPointless();
  }

  private onStream(key: string, ref: AttemptRef, pieces: StreamPiece[]): void {
    const attempt = this.attempts.get(key);
    if (!attempt) return; // finished, cancelled or revoked: nobody wants its output
    for (const content of pieces) {
      const chunk = create(TaskStreamChunkSchema, { attempt: ref });
      chunk.content = content.case === "json" ? { case: "json", value: toValue(content.value) } : content;
      if (!this.outbox.addChunk(key, chunk) && this.outbox.droppedChunks % 1000 === 1) {
        this.log.warn(`${this.outbox.droppedChunks} stream chunks dropped: the connection is not keeping up`);
      }
    }
    this.scheduleFlush();
  }

  private requestHeartbeat(): void {
    // Progress-only rounds, at most ten per heartbeat interval.
    if (this.earlyBeat || !this.call) return;
    const wait = Math.max(0, this.lastEarlyBeat + this.heartbeatMs / 10 - Date.now());
    this.earlyBeat = setTimeout(() => {
      this.earlyBeat = undefined;
      this.lastEarlyBeat = Date.now();
      this.queueHeartbeats(true);
    }, wait);
  }

  private queueHeartbeats(onlyDirty: boolean): void {
    for (const a of this.attempts.values()) {
      const attributes = Object.keys(a.ctx.pendingAttributes).length > 0;
      if (onlyDirty && !a.ctx.progressDirty && !attributes) continue;
      const beat = create(TaskHeartbeatSchema, { attempt: a.dispatch.attempt, searchAttributes: a.ctx.takeSearchAttributes() });
      if (a.ctx.progress !== undefined) beat.progress = a.ctx.progress;
      a.ctx.progressDirty = false;
      this.outbox.heartbeats.push(beat);
    }
    if (this.outbox.heartbeats.length) this.flush();
  }

  private cancel(ref: AttemptRef, reason: string): void {
    for (const key of this.matching(ref)) {
      this.outbox.results.delete(key);
      this.outbox.inFlight.delete(key);
      this.outbox.dropChunks(key);
      const attempt = this.attempts.get(key);
      if (attempt) {
        this.attempts.delete(key);
        attempt.abort.abort(new CancelledError(reason));
      }
    }
    this.scheduleFlush();
    this.giveUpIfPointless();
  }

  private matching(ref: AttemptRef): string[] {
    if (ref.token) return [keyOf(ref)];
    // No token: the executor means whatever attempt of this task we hold.
    const prefix = `${ref.executionId}/${ref.taskId}/${ref.phase}/`;
    return [...this.attempts.keys(), ...this.outbox.results.keys()].filter((k) => k.startsWith(prefix));
  }

  private drainNow(reason: string): void {
    if (this.children) {
      this.draining = true;
      for (const c of this.children) c.drainNow(reason);
      return;
    }
    if (this.draining) return;
    this.log.info(`draining (${reason}): ${this.attempts.size} attempts running`);
    this.draining = true;
    this.drainBeganAt = Date.now();
    this.outbox.status = DRAINING;
    this.interrupt.abort();
    this.scheduleFlush();
    this.giveUpIfPointless();
  }

  /** The server is going away: finish and deliver on this connection, then reconnect. */
  private onServerDrain(reason: string): void {
    if (this.draining || this.serverDraining) return;
    this.log.info(`server drain (${reason}): ${this.attempts.size} attempts running`);
    this.serverDraining = true;
    this.outbox.status = DRAINING;
    this.scheduleFlush();
  }

  /**
   * Draining and not registered: end now if nothing is left to deliver and no
   * registration is in flight; else once results have waited DRAIN_DELIVERY_MS for
   * a connection, or a registration on the wire CLOSE_TIMEOUT_MS for its answer.
   */
  private giveUpIfPointless(): void {
    if (!this.draining || this.registered || this.attempts.size || this.givenUp) return;
    // Only results matter: acks, heartbeats and status belong to a connection.
    let since = 0;
    let patience = 0;
    if (this.outbox.results.size) [since, patience] = [this.disconnectedAt, DRAIN_DELIVERY_MS];
    else if (this.registering()) [since, patience] = [this.drainBeganAt, CLOSE_TIMEOUT_MS];
    const waited = Date.now() - since;
    if (waited < patience) {
      clearTimeout(this.giveUpTimer);
      this.giveUpTimer = setTimeout(() => this.giveUpIfPointless(), patience - waited + 10);
      return;
    }
    if (this.outbox.results.size) {
      this.log.warn(`drained without reaching ${this.address}: ${this.outbox.results.size} results not delivered (the executor re-runs those attempts)`);
    }
    this.givenUp = true;
    clearTimeout(this.giveUpTimer);
    this.interrupt.abort();
    this.call?.cancel(); // it may be waiting for a connection that never comes
  }

  private stopNow(): void {
    if (this.children) {
      this.stopping = true;
      for (const c of this.children) c.stopNow();
      return;
    }
    if (this.stopping) return;
    this.stopping = true;
    this.interrupt.abort();
    this.abortAll("worker stopped");
    this.call?.cancel();
  }

  private drained(): boolean {
    return this.draining && this.attempts.size === 0 && this.outbox.empty();
  }

  /** A session is past connecting: the channel is up, so its `register` is on the wire. */
  private registering(): boolean {
    const state = this.client?.getChannel().getConnectivityState(false);
    return this.call !== undefined && state === grpc.connectivityState.READY;
  }

  /** Nothing left to do on this connection: half-close it. */
  private connectionDone(): boolean {
    return (this.draining || this.serverDraining) && this.attempts.size === 0 && this.outbox.empty();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // Everything that completes in this tick leaves in one message.
    setImmediate(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    const call = this.call;
    if (!call || this.halfClosed) return;
    const request = this.outbox.take(Date.now(), Math.max(1000, 2 * this.heartbeatMs));
    if (request) call.write(request);
    if (this.outbox.results.size || this.outbox.usage.length || this.outbox.chunks.length) this.scheduleFlush(); // more than fitted in one
    if (this.connectionDone()) {
      this.halfClosed = true;
      call.end();
      this.onHalfClose();
    }
  }

  private onDisconnected(lost: boolean): void {
    // Attempts whose ack never left still run: they are listed as `running` on
    // re-register, and the executor keeps their leases or revokes them.
    this.outbox.resetConnection(lost);
    this.disconnectedAt = Date.now();
    this.giveUpIfPointless();
  }

  private abortAll(reason: string): void {
    for (const a of this.attempts.values()) a.abort.abort(new CancelledError(reason));
    this.attempts.clear();
  }
}

/** The reason of a handler's AbortSignal when the attempt is cancelled. */
export class CancelledError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CancelledError";
  }
}

function keyOf(ref: AttemptRef): string {
  return `${ref.executionId}/${ref.taskId}/${ref.phase}/${ref.token?.attempt ?? 0}/${ref.token?.leaseEpoch ?? 0n}`;
}

function info(dispatch: Dispatch) {
  const ref = dispatch.attempt!;
  return {
    executionId: ref.executionId,
    taskId: ref.taskId,
    attempt: ref.token?.attempt ?? 0,
    leaseEpoch: ref.token?.leaseEpoch ?? 0n,
    idempotencyKey: dispatch.idempotencyKey,
    taskType: dispatch.taskType,
    workflowName: dispatch.workflowName,
    secrets: Object.freeze({ ...dispatch.secrets }),
    traceContext: Object.freeze({ ...dispatch.traceContext }),
    deadline: dispatch.startToCloseDeadline ? timestampDate(dispatch.startToCloseDeadline) : undefined,
    previousError: dispatch.previousError
      ? { type: dispatch.previousError.type, message: dispatch.previousError.message, details: dispatch.previousError.details ?? {} }
      : undefined,
  };
}


/** ErrorInfo for a thrown value: type = error class name, retryable unless it says no. */
export function errorInfo(err: unknown): ErrorInfo {
  let type = "Error";
  let message = "(a thrown value that cannot be read)";
  let retryable = true;
  let retryAfterMs: number | undefined;
  // Any thrown value, read defensively: String() of Object.create(null) throws, and so
  // may a getter. Throwing here (in the handler's rejection callback) would crash the
  // worker process on an unhandled rejection, every running attempt with it.
  try {
    message = String(err);
  } catch {
    // keep the placeholder: the type below still says what was thrown
  }
  if (err !== null && typeof err === "object") {
    const e = err as {
      name?: unknown;
      message?: unknown;
      retryable?: unknown;
      retryAfterMs?: unknown;
      constructor?: { name?: string };
    };
    try {
      const ctorName = e.constructor?.name;
      // `class CardDeclined extends Error {}` keeps name "Error": prefer the class name.
      type = typeof e.name === "string" && e.name && e.name !== "Error" ? e.name : ctorName && ctorName !== "Object" ? ctorName : "Error";
      if (typeof e.message === "string") message = e.message;
      retryable = e.retryable !== false;
      if (typeof e.retryAfterMs === "number") retryAfterMs = e.retryAfterMs;
    } catch {
      // a getter that throws: what was read before it stands
    }
  }
  return makeError(type, message, retryable, retryAfterMs);
}

function outputResult(ref: AttemptRef, output: unknown): TaskResult {
  try {
    let usage: Usage | undefined;
    if (output instanceof Output) {
      usage = output.usage ? usageMessage(output.usage) : undefined;
      output = output.value;
    }
    if (output instanceof SubPlan) return create(TaskResultSchema, { attempt: ref, usage, outcome: { case: "subPlan", value: output.encode() } });
    return create(TaskResultSchema, { attempt: ref, usage, outcome: { case: "output", value: toValue(output) } });
  } catch (err) {
    // Retrying cannot make the return value serialisable.
    return errorResult(ref, makeError("OutputEncodingError", `handler returned a value that is not JSON: ${String(err)}`, false));
  }
}

function errorResult(ref: AttemptRef, error: ErrorInfo): TaskResult {
  return create(TaskResultSchema, { attempt: ref, outcome: { case: "error", value: error } });
}
