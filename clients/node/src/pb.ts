/** The generated message types and enums most callers need (`import { pb } from "@execplan/client"`). */
export * from "./gen/execplan/v1/events_pb.js";
export * from "./gen/execplan/v1/execution_pb.js";
export * from "./gen/execplan/v1/plan_pb.js";
export * from "./gen/execplan/v1/workflow_pb.js";
export * from "./gen/execplan/v1/executor_service_pb.js";
export * from "./gen/execplan/v1/planner_service_pb.js";
export * from "./gen/execplan/v1/worker_service_pb.js";
