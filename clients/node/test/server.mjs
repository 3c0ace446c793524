// A real execplan server for tests: `execplan serve` on port 0 (or a given port), own db.
// EXECPLAN_BIN overrides the executable (default: the repo's .venv/bin/execplan).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const EXECPLAN_BIN = process.env.EXECPLAN_BIN || resolve(here, "../../../.venv/bin/execplan");

export class Server {
  constructor(db, port = 0, args = []) {
    this.db = db;
    this.port = port;
    this.args = args;
    this.proc = undefined;
    this.address = undefined;
    this.output = "";
  }

  /** `args`: extra `execplan serve` options (--tls-cert, --auth-tokens, ...). */
  static async start(args = []) {
    const dir = mkdtempSync(join(tmpdir(), "execplan-node-"));
    const server = new Server(join(dir, "execplan.db"), 0, args);
    server.dir = dir;
    await server.spawn();
    return server;
  }

  spawn() {
    const proc = spawn(EXECPLAN_BIN, ["serve", "--listen", `127.0.0.1:${this.port}`, "--db", this.db, "--grace", "1", ...this.args], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.proc = proc;
    proc.stderr.on("data", (chunk) => (this.output += chunk));
    return new Promise((resolve_, reject) => {
      const timer = setTimeout(() => reject(new Error(`server did not start:\n${this.output}`)), 30_000);
      let buf = "";
      proc.stdout.on("data", (chunk) => {
        buf += chunk;
        const m = /execplan listening on (\S+):(\d+)/.exec(buf);
        if (m && !this.address) {
          clearTimeout(timer);
          this.port = Number(m[2]);
          this.address = `${m[1]}:${m[2]}`;
          resolve_(this);
        }
      });
      proc.on("exit", (code) => {
        clearTimeout(timer);
        if (!this.address) reject(new Error(`server exited ${code}:\n${this.output}`));
      });
    });
  }

  /** Stop the process (SIGTERM, then SIGKILL after `graceMs`). */
  async kill(signal = "SIGTERM", graceMs = 5_000) {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once("exit", r));
    proc.kill(signal);
    const timer = setTimeout(() => proc.kill("SIGKILL"), graceMs);
    await exited;
    clearTimeout(timer);
  }

  /** Same port, same db. */
  async restart(signal = "SIGKILL") {
    await this.kill(signal);
    const address = this.address;
    this.address = undefined;
    // The port may linger for a moment after the old process is gone.
    for (let i = 0; ; i++) {
      try {
        await this.spawn();
        return;
      } catch (err) {
        if (i >= 20) throw err;
        this.address = undefined;
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }

  async stop() {
    await this.kill();
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }
}

export async function waitFor(predicate, timeoutMs = 15_000, what = "condition") {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Watch until completion; returns the execution's final view. */
export async function finish(client, executionId) {
  for await (const _ of client.watch(executionId));
  return client.get(executionId);
}
