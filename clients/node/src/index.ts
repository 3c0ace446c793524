/** @execplan/client: the execplan client and worker SDK for Node.js. */
export { ExecplanClient } from "./client.js";
export type { ClientOptions, ControlOptions, ListOptions, StartOptions, StartResult } from "./client.js";
export { TaskContext } from "./context.js";
export {
  AlreadyExistsError,
  Backoff,
  CallCancelledError,
  DeadlineExceededError,
  ExecplanError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NonRetryableError,
  NotFoundError,
  PermissionDeniedError,
  ResourceExhaustedError,
  Status,
  UnauthenticatedError,
  UnavailableError,
  decodeDetails,
  translate,
} from "./errors.js";
export type { FieldViolation, StatusDetails } from "./errors.js";
export { CancelledError, FATAL_CODES, SDK, Worker, defaultWorkerId, errorInfo } from "./worker.js";
export type { Handler, Logger, WorkerOptions } from "./worker.js";
export { DEFAULT_ADDRESS } from "./rpc.js";
export * as pb from "./pb.js";
