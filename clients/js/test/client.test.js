// node --test: the client against a real gateway and upstream_stub, started here (not a fake server).
// Access tokens live 2 seconds, refresh tokens 8; refreshes are counted at the gateway (its /metrics).
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { createClient, GatewayError, LoginRequiredError, secondsLeft } from "../toutiao-gateway.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const PYTHON = process.env.GATEWAY_PYTHON || join(ROOT, ".venv/bin/python");
const SECRET = "node-test-secret-that-is-long-enough-for-hs256-0123456789";
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

// A port below the kernel's ephemeral range (32768-60999), which no outgoing connection can take meanwhile.
function bindable(port) {
  return new Promise((done) => {
    const server = createServer();
    server.unref();
    server.on("error", () => done(false));
    server.listen(port, "127.0.0.1", () => server.close(() => done(true)));
  });
}

async function freePort() {
  for (let tries = 0; tries < 200; tries += 1) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    if (await bindable(port)) return port;
  }
  throw new Error("no free port below the ephemeral range");
}

async function waitFor(url, ms = 30000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    try {
      await fetch(url);
      return;
    } catch {
      await sleep(100);
    }
  }
  throw new Error(`nothing answered at ${url}`);
}

class MemoryStorage {
  constructor() { this.items = new Map(); }
  getItem(key) { return this.items.has(key) ? this.items.get(key) : null; }
  setItem(key, value) { this.items.set(key, String(value)); }
  removeItem(key) { this.items.delete(key); }
}

/** A gateway (with upstream_stub behind it) as its own processes; `rotate`: jwt.rotate_refresh_tokens. */
async function startGateway({ rotate, grace = "10s" }) {
  const folder = mkdtempSync(join(tmpdir(), "gateway-js-"));
  const [port, admin, stubPort] = [await freePort(), await freePort(), await freePort()];
  const stub = spawn(PYTHON, ["-m", "upstream_stub", "--port", String(stubPort)], { cwd: ROOT, stdio: "ignore" });
  const config = {
    server: { host: "127.0.0.1", port, shutdown_timeout: "2s" },
    admin: { host: "127.0.0.1", port: admin },
    jwt: { secret: SECRET, access_ttl: "2s", refresh_ttl: "8s", rotate_refresh_tokens: rotate, rotation_grace: grace },
    redis: { url: "memory://" },
    database: { url: `sqlite:///${folder}/users.db` },
    limits: { sms: [] },
    upstreams: { news: { targets: [`http://127.0.0.1:${stubPort}`] } },
    routes: [
      { path: "/v1_0/channels", upstream: "news", auth: "public" },
      { path: "/v1_0/echo", upstream: "news", auth: "required" },
      { path: "/", upstream: "news", auth: "required" },
    ],
  };
  const path = join(folder, "gateway.yaml");
  writeFileSync(path, JSON.stringify(config)); // JSON is YAML
  const gateway = spawn(PYTHON, ["-m", "gateway", "--config", path], { cwd: ROOT, stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  gateway.stderr.on("data", (chunk) => { log += chunk; });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(`http://127.0.0.1:${stubPort}/v1_0/channels`);
  await waitFor(`${url}/v1_0/channels`);
  return {
    url,
    async codeFor(mobile) { // the development sender writes it to the log, which arrives through a pipe
      const deadline = Date.now() + 5000;
      for (;;) {
        const found = [...log.matchAll(new RegExp(`code for ${mobile} is (\\d{6})`, "g"))];
        if (found.length) return found.at(-1)[1];
        if (Date.now() > deadline) throw new Error(`no code for ${mobile} in the gateway's log`);
        await sleep(20);
      }
    },
    async refreshes(result = "ok") {
      const text = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
      const line = text.split("\n").find((l) => l.startsWith(`gateway_refreshes_total{result="${result}"}`));
      return line ? Number(line.split(" ")[1]) : 0;
    },
    stop() {
      gateway.kill("SIGTERM");
      stub.kill("SIGTERM");
    },
  };
}

async function loggedIn(gateway, mobile, options = {}) {
  const client = createClient({ baseUrl: gateway.url, storage: options.storage || new MemoryStorage(), ...options });
  assert.equal(await client.requestCode(`+86 ${mobile}`), mobile);
  await client.login({ mobile, code: await gateway.codeFor(mobile) });
  assert.ok(client.isLoggedIn());
  return client;
}

describe("without rotation", () => {
  let gateway;
  before(async () => { gateway = await startGateway({ rotate: false }); });
  after(() => gateway.stop());

  test("a call sends the access token; after it expires, one refresh and the call succeeds", async () => {
    const client = await loggedIn(gateway, "13900000001");
    const first = await client.fetch("/v1_0/user/profile");
    assert.equal(first.status, 200);
    const before = await gateway.refreshes();
    await sleep(2500); // the access token has expired
    const second = await client.fetch("/v1_0/user/profile");
    assert.equal(second.status, 200);
    assert.equal((await second.json()).user_id, (await first.json()).user_id);
    assert.equal(await gateway.refreshes(), before + 1);
  });

  test("ten calls that fail together cause exactly one refresh", async () => {
    const client = await loggedIn(gateway, "13900000002");
    await sleep(2500);
    const before = await gateway.refreshes();
    const answers = await Promise.all(Array.from({ length: 10 }, () => client.fetch("/v1_0/user/profile")));
    assert.deepEqual(answers.map((r) => r.status), Array(10).fill(200));
    assert.equal(await gateway.refreshes(), before + 1);
  });

  test("a body that cannot be sent twice is not retried: the 401 comes back", async () => {
    const client = await loggedIn(gateway, "13900000003");
    await sleep(2500);
    const before = await gateway.refreshes();
    const stream = new ReadableStream({ start(c) { c.enqueue(new TextEncoder().encode("{}")); c.close(); } });
    const answer = await client.fetch("/v1_0/echo/x", { method: "POST", body: stream, duplex: "half" });
    assert.equal(answer.status, 401);
    assert.equal(await gateway.refreshes(), before);
    const replayable = await client.fetch("/v1_0/echo/x", { method: "POST", body: "{}" });
    assert.equal(replayable.status, 200); // a string body is sent again, after the refresh
  });

  test("when the refresh token has expired: onLoginRequired, the tokens cleared, LoginRequiredError", async () => {
    let required = 0;
    const storage = new MemoryStorage();
    const client = await loggedIn(gateway, "13900000004", { storage, onLoginRequired: () => { required += 1; } });
    await sleep(8500); // both tokens have expired
    await assert.rejects(client.fetch("/v1_0/user/profile"), (error) => {
      assert.ok(error instanceof LoginRequiredError && error instanceof GatewayError);
      assert.equal(error.status, 403);
      assert.equal(error.message, "Wrong refresh token.");
      return true;
    });
    assert.equal(required, 1);
    assert.equal(client.isLoggedIn(), false);
    assert.equal(storage.items.size, 0);
  });

  test("logout ends the session at the gateway and clears the tokens whatever the answer", async () => {
    let required = 0;
    const client = await loggedIn(gateway, "13900000005", { onLoginRequired: () => { required += 1; } });
    const { refresh_token } = client.tokens();
    await client.logout();
    assert.equal(client.isLoggedIn(), false);
    const refused = await fetch(`${gateway.url}/v1_0/authorizations`,
      { method: "PUT", headers: { Authorization: `Bearer ${refresh_token}` } });
    assert.equal(refused.status, 403);
    assert.equal((await client.fetch("/v1_0/user/profile")).status, 401); // nothing to refresh with
    assert.equal(required, 0);
    // the gateway unreachable: the tokens are cleared all the same, and the error is the caller's to see
    const storage = new MemoryStorage();
    storage.setItem("toutiao-gateway:tokens:http://127.0.0.1:9", JSON.stringify({ token: "a.b.c", refresh_token: "d.e.f" }));
    const offline = createClient({ baseUrl: "http://127.0.0.1:9", storage,
      fetch: () => Promise.reject(new TypeError("network down")) });
    assert.equal(offline.isLoggedIn(), true);
    await assert.rejects(offline.logout(), TypeError);
    assert.equal(offline.isLoggedIn(), false);
  });

  test("tokens are kept per gateway: a client of another never sends them", async () => {
    const storage = new MemoryStorage();
    const client = await loggedIn(gateway, "13900000008", { storage });
    const sent = [];
    const other = createClient({ baseUrl: "https://elsewhere.example", storage,
      fetch: (url, init) => { sent.push(new Headers(init.headers).get("Authorization")); return fetch(`${gateway.url}/v1_0/channels`); } });
    assert.equal(other.isLoggedIn(), false);
    await other.fetch("/v1_0/user/profile");
    assert.deepEqual(sent, [null]);
    assert.equal(client.isLoggedIn(), true);
  });

  test("a refresh that ends after a logout does not bring the tokens back", async () => {
    const storage = new MemoryStorage();
    let release;
    const held = new Promise((ok) => { release = ok; });
    const client = await loggedIn(gateway, "13900000009", { storage,
      fetch: async (url, init) => {
        if (init && init.method === "PUT") await held; // the refresh waits until the logout is done
        return fetch(url, init);
      } });
    await sleep(2500);
    const pending = client.fetch("/v1_0/user/profile");
    await sleep(100);
    storage.removeItem("toutiao-gateway:tokens:" + gateway.url); // a logout (here or in another tab)
    release();
    await assert.rejects(pending, LoginRequiredError);
    assert.equal(client.isLoggedIn(), false);
  });

  test("gateway errors come back with their status and message", async () => {
    const client = createClient({ baseUrl: gateway.url, storage: new MemoryStorage() });
    await client.requestCode("13900000006");
    await assert.rejects(client.login({ mobile: "13900000006", code: "000000" }),
      { name: "GatewayError", status: 400, message: "Invalid code." });
    await assert.rejects(client.requestCode("12"),
      { name: "GatewayError", status: 400, message: "mobile is not a valid mobile number." });
    assert.equal(client.isLoggedIn(), false);
  });

  test("secondsLeft reads a token's remaining time", async () => {
    const client = await loggedIn(gateway, "13900000007");
    const left = secondsLeft(client.tokens().token);
    assert.ok(left >= 1 && left <= 2, `${left}`);
    assert.equal(secondsLeft("not a token"), 0);
  });
});

describe("with rotation", () => {
  let gateway;
  before(async () => { gateway = await startGateway({ rotate: true, grace: "1s" }); });
  after(() => gateway.stop());

  test("the new refresh token is stored, and the spent one no longer works", async () => {
    const client = await loggedIn(gateway, "13900000011");
    const spent = client.tokens().refresh_token;
    await sleep(2500);
    assert.equal((await client.fetch("/v1_0/user/profile")).status, 200);
    assert.notEqual(client.tokens().refresh_token, spent);
    await sleep(1200); // past the rotation grace: the spent token is refused (and, replayed, ends the session)
    const replayed = await fetch(`${gateway.url}/v1_0/authorizations`,
      { method: "PUT", headers: { Authorization: `Bearer ${spent}` } });
    assert.equal(replayed.status, 403);
  });

  test("two tabs sharing one storage refresh at once and both stay logged in", async () => {
    const storage = new MemoryStorage(); // what two tabs of one origin share: localStorage
    let required = 0;
    const onLoginRequired = () => { required += 1; };
    const one = await loggedIn(gateway, "13900000012", { storage, onLoginRequired });
    const two = createClient({ baseUrl: gateway.url, storage, onLoginRequired });
    await sleep(2500);
    const before = await gateway.refreshes();
    const [a, b] = await Promise.all([one.fetch("/v1_0/user/profile"), two.fetch("/v1_0/user/profile")]);
    assert.deepEqual([a.status, b.status], [200, 200]);
    // Node has no Web Locks: both spent the one refresh token, and the grace window gave both its successor
    assert.equal(await gateway.refreshes(), before + 2);
    await sleep(2200); // and the next expiry too: the stored refresh token is the live one
    const [c, d] = await Promise.all([one.fetch("/v1_0/user/profile"), two.fetch("/v1_0/user/profile")]);
    assert.deepEqual([c.status, d.status], [200, 200]);
    assert.equal(required, 0);
  });
});
