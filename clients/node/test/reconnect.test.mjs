// Retries against a real `execplan serve`: a worker back within the executor's 5 s
// reconnect grace after kill and graceful restarts (same port, same db); a burst of
// 2,000 watches past --max-watch-streams all ending with the terminal event; SIGTERM
// of a worker whose replica list names a dead server ending within about a second.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath, pathToFileURL } from "node:url";
import { ExecplanClient, Worker } from "../dist/index.js";
import { Server, waitFor } from "./server.mjs";

const GRACE_MS = 5_000; // the executor's reconnect and recovery grace
const here = dirname(fileURLToPath(import.meta.url));
const servers = [];

async function startServer(args) {
  const server = await Server.start(["--log-level", "info", ...args]);
  servers.push(server);
  return server;
}

after(async () => {
  for (const server of servers) await server.stop();
});

function registrations(server, workerId) {
  return server.output.split(`worker ${workerId} connected`).length - 1;
}

test("the worker is back within the grace after kill and graceful restarts", async () => {
  const server = await startServer([]);
  const worker = new Worker({ address: server.address, workerId: "node-back", slots: 2 });
  worker.task("n.noop", async () => ({}));
  const serving = worker.serve();
  try {
    await waitFor(() => registrations(server, "node-back") === 1, 10_000, "first registration");
    const back = [];
    for (const signal of ["SIGKILL", "SIGTERM", "SIGKILL", "SIGTERM"]) {
      const before = registrations(server, "node-back");
      await server.restart(signal); // resolves once the new process listens
      const upAt = Date.now();
      await waitFor(() => registrations(server, "node-back") > before, 30_000, "re-registration");
      back.push(Date.now() - upAt);
    }
    // Generous for a loaded box; unloaded it is well under a second.
    assert.ok(Math.max(...back) < GRACE_MS, `re-registered after ${back.join(", ")} ms`);
  } finally {
    await worker.stop();
    await serving.catch(() => undefined);
  }
});

test("2,000 watches past --max-watch-streams all end with the terminal event", async () => {
  const server = await startServer(["--max-watch-streams", "100"]);
  const clients = Array.from({ length: 4 }, () => new ExecplanClient(server.address));
  try {
    const source = "name: node-burst\ntasks:\n  - {id: nap, type: builtin.sleep, inputs: {duration: 1s}}\n";
    const ids = [];
    for (let i = 0; i < 40; i++) ids.push((await clients[0].start({ source })).executionId);
    const ends = await Promise.all(
      Array.from({ length: 2_000 }, async (_, i) => {
        let last = "";
        for await (const event of clients[i % 4].watch(ids[i % 40])) last = event.kind.case ?? "";
        return last;
      }),
    );
    assert.deepEqual(new Set(ends), new Set(["executionCompleted"]));
    assert.equal(ends.length, 2_000);
    assert.match(server.output, /shedding watch streams/); // the limit was hit and ridden out
  } finally {
    for (const c of clients) c.close();
  }
});

const REPLICA_WORKER = (dist) => `
import { Worker } from ${JSON.stringify(dist)};
const worker = new Worker({ address: process.argv[2], workerId: "node-two-replicas" });
worker.task("n.noop", async () => ({}));
await worker.run();
console.log("run returned");
`;

test("SIGTERM with a dead replica ends the worker within about a second", async () => {
  const server = await startServer([]);
  // A hung server: accepts TCP connections and never answers.
  const hung = createServer(() => undefined);
  await new Promise((r) => hung.listen(0, "127.0.0.1", r));
  const closed = createServer();
  await new Promise((r) => closed.listen(0, "127.0.0.1", r));
  const closedPort = closed.address().port;
  await new Promise((r) => closed.close(r));
  const script = join(server.dir, "worker.mjs");
  writeFileSync(script, REPLICA_WORKER(pathToFileURL(resolve(here, "../dist/index.js")).href));
  try {
    for (const dead of [`127.0.0.1:${hung.address().port}`, `127.0.0.1:${closedPort}`]) {
      const before = registrations(server, "node-two-replicas");
      const child = spawn(process.execPath, [script, `${server.address},${dead}`], { stdio: ["ignore", "pipe", "ignore"] });
      let out = "";
      child.stdout.on("data", (c) => (out += c));
      const exited = new Promise((r) => child.once("exit", (code) => r(code)));
      await waitFor(() => registrations(server, "node-two-replicas") > before, 15_000, "registration on the live replica");
      await new Promise((r) => setTimeout(r, 1_000)); // well into a connection attempt to the dead one
      const sent = Date.now();
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
      const code = await exited;
      clearTimeout(timer);
      const took = Date.now() - sent;
      assert.equal(code, 0);
      assert.match(out, /run returned/);
      assert.ok(took < 1_500, `SIGTERM took ${took} ms with dead replica ${dead}`);
    }
  } finally {
    hung.close();
  }
});
