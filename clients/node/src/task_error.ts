/** The ErrorInfo a worker sends for a failed attempt (TaskResult.error). */
import { create } from "@bufbuild/protobuf";
import { ErrorInfoSchema, ErrorRetry } from "./gen/execplan/v1/execution_pb.js";
import type { ErrorInfo } from "./gen/execplan/v1/execution_pb.js";

/**
 * An ErrorInfo as the executor reads it: `retry` decides. `retryable` says the same
 * for servers that predate `retry` (they read only that field).
 */
export function makeError(type: string, message: string, retryable: boolean): ErrorInfo {
  const retry = retryable ? ErrorRetry.RETRYABLE : ErrorRetry.NON_RETRYABLE;
  return create(ErrorInfoSchema, { type, message, retryable, retry });
}
