/**
 * The one error tree of the execplan Node client and worker (mirrors the Python SDK):
 *
 *     ExecplanError                 any failed call; .code, .details, .violations, .retryAfterMs,
 *                                   .reason and .metadata (google.rpc.ErrorInfo)
 *      ├── InvalidArgumentError      INVALID_ARGUMENT; .violations from google.rpc.BadRequest
 *      ├── NotFoundError             NOT_FOUND
 *      ├── AlreadyExistsError        ALREADY_EXISTS
 *      ├── FailedPreconditionError   FAILED_PRECONDITION
 *      ├── ResourceExhaustedError    RESOURCE_EXHAUSTED; .retryAfterMs from google.rpc.RetryInfo
 *      ├── UnavailableError          UNAVAILABLE
 *      ├── DeadlineExceededError     DEADLINE_EXCEEDED
 *      ├── CallCancelledError        CANCELLED
 *      ├── PermissionDeniedError     PERMISSION_DENIED
 *      ├── UnauthenticatedError      UNAUTHENTICATED
 *      └── InternalError             INTERNAL, UNKNOWN, UNIMPLEMENTED, DATA_LOSS, ...
 *
 * `translate(err)` turns a grpc-js ServiceError into one of these (`.cause` keeps it).
 * Worker handlers throw `NonRetryableError` to fail an attempt for good.
 */
import { fromBinary } from "@bufbuild/protobuf";
import { anyIs, anyUnpack, durationMs } from "@bufbuild/protobuf/wkt";
import { status as Status } from "@grpc/grpc-js";
import type { ServiceError } from "@grpc/grpc-js";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "./gen/google/rpc/status_pb.js";
import type { Status as RpcStatus } from "./gen/google/rpc/status_pb.js";

export { Status };

export interface FieldViolation {
  field: string;
  description: string;
}

export interface ErrorOptions {
  code?: Status;
  violations?: FieldViolation[];
  retryAfterMs?: number;
  reason?: string;
  metadata?: Record<string, string>;
  cause?: unknown;
}

export class ExecplanError extends Error {
  readonly code: Status;
  readonly details: string;
  readonly violations: FieldViolation[];
  /** Milliseconds the server asked us to wait before retrying (google.rpc.RetryInfo). */
  readonly retryAfterMs: number | undefined;
  /** google.rpc.ErrorInfo: a stable reason to branch on ("REQUEST_ID_REUSED"), "" if none. */
  readonly reason: string;
  /** google.rpc.ErrorInfo metadata: the facts of the reason ({ executionId: ... }). */
  readonly metadata: Record<string, string>;

  constructor(details: string, options: ErrorOptions = {}) {
    const code = options.code ?? Status.UNKNOWN;
    const violations = options.violations ?? [];
    let text = `${Status[code]}: ${details}`;
    for (const v of violations) text += `\n  ${v.field}: ${v.description}`;
    super(text, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.details = details;
    this.violations = violations;
    this.retryAfterMs = options.retryAfterMs;
    this.reason = options.reason ?? "";
    this.metadata = options.metadata ?? {};
  }
}

export class InvalidArgumentError extends ExecplanError {}
export class NotFoundError extends ExecplanError {}
export class AlreadyExistsError extends ExecplanError {}
export class FailedPreconditionError extends ExecplanError {}
export class ResourceExhaustedError extends ExecplanError {}
export class UnavailableError extends ExecplanError {}
export class DeadlineExceededError extends ExecplanError {}
export class CallCancelledError extends ExecplanError {}
export class PermissionDeniedError extends ExecplanError {}
export class UnauthenticatedError extends ExecplanError {}
export class InternalError extends ExecplanError {}

const BY_CODE: Partial<Record<Status, typeof ExecplanError>> = {
  [Status.INVALID_ARGUMENT]: InvalidArgumentError,
  [Status.NOT_FOUND]: NotFoundError,
  [Status.ALREADY_EXISTS]: AlreadyExistsError,
  [Status.FAILED_PRECONDITION]: FailedPreconditionError,
  [Status.RESOURCE_EXHAUSTED]: ResourceExhaustedError,
  [Status.UNAVAILABLE]: UnavailableError,
  [Status.DEADLINE_EXCEEDED]: DeadlineExceededError,
  [Status.CANCELLED]: CallCancelledError,
  [Status.PERMISSION_DENIED]: PermissionDeniedError,
  [Status.UNAUTHENTICATED]: UnauthenticatedError,
};

/**
 * Handlers throw this to fail the attempt without retries
 * (ErrorInfo.retry = ERROR_RETRY_NON_RETRYABLE); so does any error with `retryable === false`.
 */
export class NonRetryableError extends Error {
  readonly retryable = false;
  constructor(message?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * Throw when a provider throttled the call (an HTTP 429): the attempt fails as
 * retryable with `ErrorInfo.retry_after`, and the executor waits at least that long
 * before the next attempt and holds every task taking from the same rate-limit keys.
 */
export class RateLimited extends Error {
  readonly retryAfterMs: number;
  constructor(message = "rate limited", options: { retryAfterMs?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    const wait = options.retryAfterMs ?? 1000;
    if (!(wait >= 0)) throw new RangeError("retryAfterMs must be >= 0");
    this.retryAfterMs = wait;
  }
}

export interface StatusDetails {
  violations: FieldViolation[];
  retryAfterMs: number | undefined;
  reason: string;
  metadata: Record<string, string>;
}

/** ErrorInfo, BadRequest and RetryInfo from the `grpc-status-details-bin` trailer, if any. */
export function decodeDetails(err: Partial<ServiceError>): StatusDetails {
  const out: StatusDetails = { violations: [], retryAfterMs: undefined, reason: "", metadata: {} };
  const raw = err.metadata?.get("grpc-status-details-bin")?.[0];
  if (!raw) return out;
  try {
    return detailsOf(fromBinary(StatusSchema, typeof raw === "string" ? Buffer.from(raw, "base64") : raw));
  } catch {
    return out; // an undecodable trailer must not hide the error itself
  }
}

function detailsOf(st: RpcStatus): StatusDetails {
  const out: StatusDetails = { violations: [], retryAfterMs: undefined, reason: "", metadata: {} };
  try {
    for (const any of st.details) {
      if (anyIs(any, BadRequestSchema)) {
        const bad = anyUnpack(any, BadRequestSchema);
        for (const v of bad?.fieldViolations ?? []) out.violations.push({ field: v.field, description: v.description });
      } else if (anyIs(any, RetryInfoSchema)) {
        const delay = anyUnpack(any, RetryInfoSchema)?.retryDelay;
        if (delay) out.retryAfterMs = durationMs(delay);
      } else if (anyIs(any, ErrorInfoSchema)) {
        const info = anyUnpack(any, ErrorInfoSchema);
        if (info) {
          out.reason = info.reason;
          out.metadata = { ...info.metadata };
        }
      }
    }
  } catch {
    // Undecodable details must not hide the error itself.
  }
  return out;
}

/**
 * The error a call failing with `st` would have thrown (`translate`), for a
 * google.rpc.Status that came in a response body (an item of StartExecutions).
 */
export function fromStatus(st: RpcStatus): ExecplanError {
  const { violations, retryAfterMs, reason, metadata } = detailsOf(st);
  const code = st.code as Status;
  const Cls = BY_CODE[code] ?? InternalError;
  return new Cls(st.message || Status[code] || "UNKNOWN", { code, violations, retryAfterMs, reason, metadata });
}

function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === "number" && "metadata" in err;
}

/** A grpc-js error as an ExecplanError (anything else is returned unchanged). */
export function translate(err: unknown): unknown {
  if (err instanceof ExecplanError || !isServiceError(err)) return err;
  const { violations, retryAfterMs, reason, metadata } = decodeDetails(err);
  const Cls = BY_CODE[err.code as Status] ?? InternalError;
  return new Cls(err.details ?? err.message, { code: err.code, violations, retryAfterMs, reason, metadata, cause: err });
}

/**
 * The one retry policy of the client and the worker (the Python SDK's, same numbers):
 * the first retry after a success is immediate; then full jitter, uniform in
 * [0, min(capMs, initialMs * 2^(n-1))]; a server's RetryInfo delay is honoured (at
 * least that long, plus up to half of it again as jitter, cut at maxServerDelayMs).
 * `deadlineMs`: how long a loop may fail without progress before the error reaches
 * the caller (undefined: forever, as the worker's stream does).
 */
export interface RetryPolicy {
  initialMs: number;
  /** No delay of our own is longer: well under the executor's 5 s reconnect grace. */
  capMs: number;
  maxServerDelayMs: number;
  deadlineMs: number | undefined;
}

export const DEFAULT_RETRY: RetryPolicy = { initialMs: 100, capMs: 2_000, maxServerDelayMs: 30_000, deadlineMs: 60_000 };

export class Backoff {
  private attempt = 0;
  constructor(readonly policy: RetryPolicy = DEFAULT_RETRY) {}
  nextDelayMs(serverDelayMs?: number): number {
    const attempt = this.attempt;
    this.attempt = Math.min(this.attempt + 1, 60);
    if (serverDelayMs !== undefined && serverDelayMs > 0) {
      return Math.min(serverDelayMs, this.policy.maxServerDelayMs) * (1 + Math.random() / 2);
    }
    if (attempt === 0) return 0;
    return Math.random() * Math.min(this.policy.capMs, this.policy.initialMs * 2 ** (attempt - 1));
  }
  reset(): void {
    this.attempt = 0;
  }
}

/** A Backoff with the policy's deadline, for one retry loop. */
export class Retry {
  readonly backoff: Backoff;
  private failingSince: number | undefined;
  constructor(policy: RetryPolicy = DEFAULT_RETRY) {
    this.backoff = new Backoff(policy);
  }
  progressed(): void {
    this.backoff.reset();
    this.failingSince = undefined;
  }
  /** Milliseconds to wait before the next try, or undefined when past the deadline. */
  delayMs(serverDelayMs?: number): number | undefined {
    const now = Date.now();
    this.failingSince ??= now;
    const wait = this.backoff.nextDelayMs(serverDelayMs);
    const deadline = this.backoff.policy.deadlineMs;
    if (deadline === undefined) return wait;
    const left = this.failingSince + deadline - now;
    return left <= 0 ? undefined : Math.min(wait, left);
  }
}

/**
 * Whether a failed call may simply be tried again: UNAVAILABLE (server down or
 * restarting), CANCELLED we did not ask for (the server dropped the call), and
 * RESOURCE_EXHAUSTED only with a RetryInfo delay (shed load; without one it is a
 * limit no retry fixes).
 */
export function transient(code: Status, retryAfterMs: number | undefined): boolean {
  if (code === Status.UNAVAILABLE || code === Status.CANCELLED) return true;
  return code === Status.RESOURCE_EXHAUSTED && retryAfterMs !== undefined;
}

/** Resolves after ms, or early when signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
