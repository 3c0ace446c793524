/** @execplan/client: the execplan client and worker SDK for Node.js. */
export { ExecplanClient } from "./client.js";
export type {
  BudgetOptions,
  ClientOptions,
  ControlOptions,
  ListOptions,
  PurgeOptions,
  RateLimitOptions,
  ReplayOptions,
  StartOptions,
  StartResult,
  UsageOptions,
  WatchAllFilter,
  WatchOptions,
} from "./client.js";
export { Schedules } from "./schedules.js";
export type { Overlap, ScheduleOptions } from "./schedules.js";
export { fromSearchAttributes, toSearchAttributes, toSearchValue } from "./search.js";
export type { SearchValue } from "./search.js";
export { TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV, TOKEN_ENV, bearerInterceptor, transport } from "./security.js";
export type { Pem, SecurityOptions, Transport } from "./security.js";
export { TaskContext } from "./context.js";
export type { PreviousError } from "./context.js";
export { SubPlan } from "./subplan.js";
export { Output, usageMessage } from "./usage.js";
export type { UsageCounters } from "./usage.js";
export type { SubPlanDoc } from "./subplan.js";
export * as builder from "./builder.js";
export {
  AlreadyExistsError,
  Backoff,
  CallCancelledError,
  DEFAULT_RETRY,
  Retry,
  DeadlineExceededError,
  ExecplanError,
  FailedPreconditionError,
  InternalError,
  InvalidArgumentError,
  NonRetryableError,
  NotFoundError,
  PermissionDeniedError,
  RateLimited,
  ResourceExhaustedError,
  Status,
  UnauthenticatedError,
  UnavailableError,
  decodeDetails,
  fromStatus,
  translate,
  transient,
} from "./errors.js";
export type { FieldViolation, RetryPolicy, StatusDetails } from "./errors.js";
export { CancelledError, FATAL_CODES, SDK, Worker, defaultWorkerId, errorInfo, splitAddresses, splitSlots } from "./worker.js";
export type { Handler, Logger, WorkerOptions } from "./worker.js";
export { encodeCapacity, quantity } from "./capacity.js";
export type { Capacity } from "./capacity.js";
export { DEFAULT_ADDRESS } from "./rpc.js";
export { makeError } from "./task_error.js";
export * as pb from "./pb.js";
