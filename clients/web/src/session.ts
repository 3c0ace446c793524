// The signed-in principal, shared by every page: what it may call decides which
// actions are offered (the server checks again on every call).
import { createContext } from "preact";
import { useContext } from "preact/hooks";
import type { Session } from "./api.js";

export const SessionContext = createContext<Session>({ auth: false, name: "", role: "", may: [] });

export function useSession(): Session {
  return useContext(SessionContext);
}

/** Why `method` is not offered to this session, or null when it may call it. */
export function denial(session: Session, method: string): string | null {
  return session.may.includes(method) ? null : `Your role (${session.role || "none"}) may not call ${method}`;
}
