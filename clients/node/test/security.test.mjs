// TLS, mutual TLS and bearer tokens end to end: certificates made with the openssl
// CLI into a temp dir, a token file of sha256 hashes, a real `execplan serve`.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { ExecplanClient, PermissionDeniedError, UnauthenticatedError, UnavailableError, Worker, pb } from "../dist/index.js";
import { Server, finish } from "./server.mjs";

const SECURE = `
name: node-secure
inputs: {x: {type: integer, default: 1}}
tasks:
  - id: a
    type: n.secure
    inputs: {x: "\${{ workflow.inputs.x }}"}
outputs:
  out: "\${{ tasks.a.output }}"
`;

const dir = mkdtempSync(join(tmpdir(), "execplan-node-tls-"));
const file = (name) => join(dir, name);
const clientToken = randomBytes(16).toString("hex");
const workerToken = randomBytes(16).toString("hex");
const sha = (t) => createHash("sha256").update(t, "utf8").digest("hex");

function openssl(...args) {
  execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
}

/** An EC key and a certificate signed by the test CA. */
function issue(name, cn, ext) {
  openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=${cn}`);
  writeFileSync(file(`${name}.ext`), ext);
  openssl("x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
    "-out", `${name}.pem`, "-days", "1", "-extfile", `${name}.ext`);
}

let tls; // TLS + client CA + tokens
let plain; // plaintext + tokens (the token goes by interceptor)

before(async () => {
  openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=execplan-test-ca");
  issue("server", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n");
  issue("client", "node-client", "extendedKeyUsage=clientAuth\n");
  writeFileSync(file("tokens"), [
    "# name  role  credential  task types",
    `node-client client sha256:${sha(clientToken)}`,
    `node-worker worker sha256:${sha(workerToken)} n.secure`,
    "",
  ].join("\n"));
  const auth = ["--auth-tokens", file("tokens")];
  [tls, plain] = await Promise.all([
    Server.start(["--tls-cert", file("server.pem"), "--tls-key", file("server.key"), "--tls-client-ca", file("ca.pem"), ...auth]),
    Server.start(auth),
  ]);
});

after(async () => {
  await Promise.all([tls?.stop(), plain?.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

/** mTLS options: paths for the client, PEM buffers for the worker (both accepted). */
const mtlsPaths = () => ({ tlsCa: file("ca.pem"), tlsCert: file("client.pem"), tlsKey: file("client.key") });
const mtlsPems = () => ({ tlsCa: readFileSync(file("ca.pem")), tlsCert: readFileSync(file("client.pem")), tlsKey: readFileSync(file("client.key")) });

async function roundTrip(server, clientOptions, workerOptions) {
  const client = new ExecplanClient(server.address, clientOptions);
  const worker = new Worker({ address: server.address, slots: 2, ...workerOptions });
  worker.task("n.secure", (inputs) => ({ doubled: inputs.x * 2 }));
  const serving = worker.serve();
  try {
    const { executionId } = await client.start({ source: SECURE, inputs: { x: 21 } });
    const done = await finish(client, executionId); // watch: a server stream, token included
    assert.equal(done.state, pb.ExecutionState.SUCCEEDED);
    assert.deepEqual(done.outputs, { out: { doubled: 42 } });
  } finally {
    await worker.stop();
    await serving.catch(() => undefined);
    client.close();
  }
}

test("mTLS + token: client and worker end to end", async () => {
  await roundTrip(tls, { ...mtlsPaths(), token: clientToken }, { ...mtlsPems(), token: workerToken });
});

test("plaintext + token: the token rides on every call and the worker stream", async () => {
  await roundTrip(plain, { token: clientToken }, { token: workerToken });
});

test("environment fallbacks: EXECPLAN_TLS_CA/_CERT/_KEY and EXECPLAN_TOKEN", async () => {
  const saved = { ...process.env };
  Object.assign(process.env, {
    EXECPLAN_TLS_CA: file("ca.pem"),
    EXECPLAN_TLS_CERT: file("client.pem"),
    EXECPLAN_TLS_KEY: file("client.key"),
    EXECPLAN_TOKEN: clientToken,
  });
  let client;
  try {
    client = new ExecplanClient(tls.address);
  } finally {
    for (const k of ["EXECPLAN_TLS_CA", "EXECPLAN_TLS_CERT", "EXECPLAN_TLS_KEY", "EXECPLAN_TOKEN"]) {
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
    }
  }
  try {
    const plan = await client.compile(SECURE);
    assert.equal(plan.workflowName, "node-secure");
  } finally {
    client.close();
  }
});

test("a wrong token is UNAUTHENTICATED, for the client and (fatal) for the worker", async () => {
  for (const [server, security] of [[tls, mtlsPaths()], [plain, {}]]) {
    const client = new ExecplanClient(server.address, { ...security, token: "not-a-token" });
    try {
      await assert.rejects(client.get("any"), (err) => {
        assert.ok(err instanceof UnauthenticatedError, String(err));
        assert.equal(err.code, 16);
        return true;
      });
      await assert.rejects((async () => {
        for await (const _ of client.list());
      })(), UnauthenticatedError);
    } finally {
      client.close();
    }
    const worker = new Worker({ address: server.address, ...security, token: "not-a-token" });
    worker.task("n.secure", () => 1);
    await assert.rejects(worker.serve(), (err) => err instanceof UnauthenticatedError && err.code === 16);
  }
  // No token at all on the plaintext server: UNAUTHENTICATED too.
  const anonymous = new ExecplanClient(plain.address);
  await assert.rejects(anonymous.get("any"), UnauthenticatedError);
  anonymous.close();
});

test("roles: a client token cannot connect a worker (PERMISSION_DENIED, fatal)", async () => {
  const worker = new Worker({ address: tls.address, ...mtlsPaths(), token: clientToken });
  worker.task("n.secure", () => 1);
  await assert.rejects(worker.serve(), PermissionDeniedError);
});

test("TLS without a client certificate fails the mTLS handshake (UNAVAILABLE)", async () => {
  const client = new ExecplanClient(tls.address, { tlsCa: file("ca.pem"), token: clientToken });
  try {
    await assert.rejects(client.get("any"), UnavailableError);
  } finally {
    client.close();
  }
});

test("tlsCert without tlsKey is a TypeError at construction", () => {
  assert.throws(() => new ExecplanClient("127.0.0.1:1", { tlsCert: file("client.pem") }), TypeError);
  assert.throws(() => new Worker({ address: "127.0.0.1:1", tlsCert: file("client.pem") }), TypeError);
});
