/** The ErrorInfo a worker sends for a failed attempt (TaskResult.error). */
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { ErrorInfoSchema, ErrorRetry } from "./gen/execplan/v1/execution_pb.js";
import type { ErrorInfo } from "./gen/execplan/v1/execution_pb.js";

/**
 * An ErrorInfo as the executor reads it: `retry` decides. `retryable` says the same
 * for servers that predate `retry` (they read only that field).
 */
export function makeError(type: string, message: string, retryable: boolean, retryAfterMs?: number): ErrorInfo {
  const retry = retryable ? ErrorRetry.RETRYABLE : ErrorRetry.NON_RETRYABLE;
  const info = create(ErrorInfoSchema, { type, message, retryable, retry });
  if (retryAfterMs !== undefined && Number.isFinite(retryAfterMs) && retryAfterMs >= 0) {
    // A provider's 429: the executor backs off the task's rate-limit keys (at most 1 h).
    info.retryAfter = durationFromMs(Math.ceil(Math.min(retryAfterMs, MAX_RETRY_AFTER_MS)));
  }
  return info;
}

const MAX_RETRY_AFTER_MS = 3_600_000;
