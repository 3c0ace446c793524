// The console's one connection to the server: Connect over HTTP to the same
// ExecutorService the CLI and SDKs use (binary protobuf: the server encodes and
// decodes it far faster than JSON). The bearer token, if the server wants one,
// is asked for once and kept in sessionStorage (gone when the tab closes).
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { ExecutorService } from "./gen/execplan/v1/executor_service_pb.js";
import { BadRequestSchema } from "./gen/google/rpc/error_details_pb.js";

const TOKEN_KEY = "execplan.token";

export function token(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value: string | null): void {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

const bearer: Interceptor = (next) => async (req) => {
  const t = token();
  if (t) req.header.set("authorization", `Bearer ${t}`);
  return next(req);
};

const transport = createConnectTransport({
  baseUrl: location.origin,
  useBinaryFormat: true,
  interceptors: [bearer],
});

export const executor = createClient(ExecutorService, transport);

/** Who the token is and which calls it may make (GET /console/session). */
export interface Session {
  auth: boolean;
  name: string;
  role: string;
  may: string[];
  error?: string;
}

export async function fetchSession(): Promise<Session> {
  const t = token();
  const res = await fetch("/console/session", { headers: t ? { authorization: `Bearer ${t}` } : {} });
  const body = (await res.json()) as Session;
  if (res.status === 401) return { auth: true, name: "", role: "", may: [], error: body.error ?? "unauthenticated" };
  return body;
}

/** One line for a person: what went wrong, with the server's field violations. */
export function describe(err: unknown): string {
  if (err instanceof ConnectError) {
    if (err.code === Code.PermissionDenied) return `Not allowed: ${err.rawMessage}`;
    if (err.code === Code.Unauthenticated) return `Sign-in needed: ${err.rawMessage}`;
    if (err.code === Code.Unavailable) return `Server unavailable: ${err.rawMessage}`;
    const fields = err.findDetails(BadRequestSchema).flatMap((b) => b.fieldViolations.map((v) => `${v.field}: ${v.description}`));
    return [err.rawMessage, ...fields].join("\n");
  }
  return err instanceof Error ? err.message : String(err);
}

export function isAuthError(err: unknown): boolean {
  return err instanceof ConnectError && (err.code === Code.Unauthenticated || err.code === Code.PermissionDenied);
}

export function isCanceled(err: unknown): boolean {
  return err instanceof ConnectError && err.code === Code.Canceled;
}

export function requestId(): string {
  return crypto.randomUUID();
}
