import { render } from "preact";
import { useCallback, useEffect, useState } from "preact/hooks";
import { type Session, fetchSession, setToken, token } from "./api.js";
import { BreakersPage } from "./pages/breakers.js";
import { ExecutionPage } from "./pages/execution.js";
import { ExecutionsPage } from "./pages/executions.js";
import { PlanPage, PlansPage } from "./pages/plans.js";
import { WorkersPage } from "./pages/workers.js";
import { navigate, onLinkClick, usePath } from "./router.js";
import { SessionContext } from "./session.js";
import "./styles.css";

const NAV = [
  { href: "/", label: "Executions", match: (p: string) => p === "/" || p.startsWith("/executions") },
  { href: "/plans", label: "Plans", match: (p: string) => p.startsWith("/plans") },
  { href: "/workers", label: "Workers", match: (p: string) => p.startsWith("/workers") },
  { href: "/breakers", label: "Breakers", match: (p: string) => p.startsWith("/breakers") },
];

function Page({ path }: { path: string }) {
  const execution = /^\/executions\/([^/]+)$/.exec(path);
  if (execution) return <ExecutionPage key={execution[1]} executionId={decodeURIComponent(execution[1])} />;
  const plan = /^\/plans\/([^/]+)$/.exec(path);
  if (plan) return <PlanPage key={plan[1]} planId={decodeURIComponent(plan[1])} />;
  if (path === "/plans") return <PlansPage />;
  if (path === "/workers") return <WorkersPage />;
  if (path === "/breakers") return <BreakersPage />;
  if (path === "/" || path === "/executions") return <ExecutionsPage />;
  return (
    <div class="empty">
      No page at <code>{path}</code>. <a href="/">Executions</a>
    </div>
  );
}

function SignIn({ session, onDone }: { session: Session; onDone: () => void }) {
  const [value, setValue] = useState("");
  const submit = (e: Event) => {
    e.preventDefault();
    setToken(value.trim());
    onDone();
  };
  return (
    <div class="signin">
      <form class="card signin-card" onSubmit={submit} data-testid="signin">
        <div class="brand big">
          <Logo /> execplan
        </div>
        <p>This server requires a token. It is kept in this tab only (sessionStorage) and sent as a bearer token.</p>
        {token() && session.error && <div class="alert error">{session.error}</div>}
        <input
          type="password"
          name="token"
          placeholder="Token"
          autoFocus
          autoComplete="off"
          value={value}
          onInput={(e) => setValue((e.target as HTMLInputElement).value)}
        />
        <button class="primary" type="submit" disabled={!value.trim()}>
          Sign in
        </button>
      </form>
    </div>
  );
}

function Logo() {
  return (
    <svg width="22" height="22" viewBox="0 0 32 32" aria-hidden="true">
      <rect width="32" height="32" rx="7" fill="#4f46e5" />
      <circle cx="9" cy="16" r="3.2" fill="#fff" />
      <circle cx="23" cy="9" r="3.2" fill="#fff" />
      <circle cx="23" cy="23" r="3.2" fill="#fff" />
      <path d="M11.5 14.5 20.5 10M11.5 17.5l9 4.5" stroke="#fff" stroke-width="2" />
    </svg>
  );
}

function App() {
  const path = usePath();
  const [session, setSession] = useState<Session | null>(null);
  const [failure, setFailure] = useState<string | null>(null);
  const load = useCallback(() => {
    fetchSession().then(setSession, (e: unknown) => setFailure(String(e)));
  }, []);
  useEffect(load, [load]);
  if (failure) return <div class="empty">Cannot reach the server: {failure}</div>;
  if (!session) return null;
  if (session.error) return <SignIn session={session} onDone={load} />;
  const signOut = () => {
    setToken(null);
    load();
  };
  return (
    <SessionContext.Provider value={session}>
      <div class="shell" onClick={onLinkClick}>
        <header class="top">
          <a class="brand" href="/">
            <Logo /> execplan
          </a>
          <nav>
            {NAV.map((n) => (
              <a key={n.href} href={n.href} class={n.match(path) ? "active" : ""}>
                {n.label}
              </a>
            ))}
          </nav>
          <div class="who" data-testid="who">
            <span class="role">{session.role}</span> {session.name}
            {session.auth && (
              <button class="link" onClick={signOut}>
                Sign out
              </button>
            )}
          </div>
        </header>
        <main>
          <Page path={path} />
        </main>
      </div>
    </SessionContext.Provider>
  );
}

if (location.pathname === "/index.html") navigate("/", true);
render(<App />, document.getElementById("app")!);
