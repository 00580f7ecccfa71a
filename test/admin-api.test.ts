/**
 * The admin API (issue 7): every route through `app.request()` against a running
 * broker whose state real MQTT clients create, then over a real HTTP socket and the
 * CLI. Auth, pagination, errors, kick, publish, retained, history, uplinks, metrics.
 */
import { afterEach, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Hono } from "hono";
import { type AdminDeps, adminTokenProblem, createAdminApp, type Readiness } from "../src/admin/app.ts";
import { BearerToken, timingSafeEqual } from "../src/admin/auth.ts";
import { TopTopics } from "../src/admin/top-topics.ts";
import { AdminConfigError, listenAdmin } from "../src/admin/serve.ts";
import { validateConfig } from "../src/config/load.ts";
import type { FerryConfig } from "../src/config/schema.ts";
import { type DeepPartial, startBroker, type TestBroker } from "./helpers/broker.ts";
import { serveArgs, type Serving, spawnServe } from "./helpers/broker-process.ts";
import { barrier, connect, eventually, type TestClient } from "./helpers/clients.ts";
import { createCloud } from "./helpers/cloud-broker.ts";

setDefaultTimeout(30_000);

const TOKEN = "test-token-0123456789abcdef";
const AUTH = { Authorization: `Bearer ${TOKEN}` };
const MAIN = join(import.meta.dir, "..", "edge", "main.ts");
const DENO = join(import.meta.dir, "..", "node_modules", ".bin", "deno");

/** Spawn `serve` until the admin API's `listening http://` line; returns its URL and stdout so far. */
async function spawnAdminServe(cmd: string[]): Promise<{ url: string; out: string; proc: Serving["proc"] }> {
  const s = await spawnServe(cmd, {
    until: [/listening http:\/\/\S+[^\n]*\n/],
    timeoutMs: 30_000,
    cwd: join(import.meta.dir, ".."),
  });
  cleanups.push(() => s.kill());
  return { url: /listening (http:\/\/\S+)/.exec(s.out)![1]!, out: s.out, proc: s.proc };
}

// deno-lint-ignore no-explicit-any
type Json = any;

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function broker(overrides: DeepPartial<FerryConfig> = {}): Promise<TestBroker> {
  const b = await startBroker(overrides);
  cleanups.push(() => b.stop());
  return b;
}

async function client(b: TestBroker, clientId: string, opts: Record<string, unknown> = {}): Promise<TestClient> {
  const c = await connect(b.url, { protocolVersion: 5, clientId, ...opts });
  cleanups.push(() => c.end(true));
  return c;
}

/** The admin app over `b`'s broker, called without a socket. */
function appFor(b: TestBroker, deps: Partial<AdminDeps> = {}): Hono {
  return createAdminApp({
    broker: b.server.broker,
    uplinks: b.server.uplinks,
    config: validateConfig({ edge_id: "edge-test" }),
    token: TOKEN,
    ...deps,
  });
}

async function call(
  app: Hono,
  path: string,
  init: RequestInit = {},
): Promise<{ status: number; body: Json; headers: Headers }> {
  const r = await app.request(path, {
    ...init,
    headers: { ...AUTH, ...(init.headers as Record<string, string> | undefined) },
  });
  const text = await r.text();
  let body: Json = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON (metrics, dashboard)
  }
  return { status: r.status, body, headers: r.headers };
}

const post = (app: Hono, path: string, body: unknown) =>
  call(app, path, { method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" } });

/** A sample's value from Prometheus text, e.g. metric(text, 'ferry_messages_received_total{qos="1"}'). */
function metric(text: string, series: string): number {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  if (line === undefined) throw new Error(`no series ${series}`);
  return Number(line.slice(series.length + 1));
}

describe("admin API: authentication", () => {
  test("with a token, API routes, /metrics and /readyz answer 401 without it or with a wrong one", async () => {
    const app = appFor(await broker());
    for (const path of ["/api/v1/broker", "/metrics", "/readyz", "/api/v1/openapi.json", "/api/v1/clients"]) {
      const none = await app.request(path);
      expect(none.status).toBe(401);
      expect(none.headers.get("WWW-Authenticate")).toContain("Bearer");
      expect((await none.json()).error.code).toBe("unauthorized");
      const wrong = await app.request(path, { headers: { Authorization: `Bearer ${TOKEN}x` } });
      expect(wrong.status).toBe(401);
      const basic = await app.request(path, { headers: { Authorization: `Basic ${btoa(`admin:${TOKEN}`)}` } });
      expect(basic.status).toBe(401);
      expect((await app.request(path, { headers: AUTH })).status).toBe(200);
    }
    // A write without a token is refused before anything is looked up.
    expect((await app.request("/api/v1/clients/x", { method: "DELETE" })).status).toBe(401);
  });

  test("/healthz and the dashboard page (which holds no data) need no token", async () => {
    const app = appFor(await broker());
    const health = await app.request("/healthz");
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: "ok" });
    const page = await app.request("/");
    expect(page.status).toBe(200);
    expect(page.headers.get("Content-Type")).toContain("text/html");
    const html = await page.text();
    expect(html).toContain('id="connections"');
    expect(html).not.toContain(TOKEN);
    expect(html).not.toMatch(/<script[^>]+src=|<link[^>]+href=/); // nothing loaded from elsewhere
  });

  test("without a token configured, every route is open", async () => {
    const app = appFor(await broker(), { token: undefined });
    expect((await app.request("/api/v1/broker")).status).toBe(200);
    expect((await app.request("/metrics")).status).toBe(200);
  });

  test("the token is compared as SHA-256 digests in constant time", async () => {
    expect(timingSafeEqual(new Uint8Array([1, 2, 3]), new Uint8Array([1, 2, 3]))).toBe(true);
    expect(timingSafeEqual(new Uint8Array([1, 2, 3]), new Uint8Array([1, 2, 4]))).toBe(false);
    expect(timingSafeEqual(new Uint8Array([1, 2]), new Uint8Array([1, 2, 3]))).toBe(false);
    const t = new BearerToken(TOKEN);
    expect(await t.accepts(`Bearer ${TOKEN}`)).toBe(true);
    expect(await t.accepts(`bearer ${TOKEN}`)).toBe(true);
    expect(await t.accepts(TOKEN)).toBe(false);
    expect(await t.accepts(undefined)).toBe(false);
    expect(await t.accepts("Bearer ")).toBe(false);
  });

  test("an admin API off loopback without a token refuses to start; with one, or on loopback, it may", async () => {
    expect(adminTokenProblem("0.0.0.0", undefined)).toContain("admin.token");
    expect(adminTokenProblem("192.168.1.10", undefined)).toContain("admin.token");
    expect(adminTokenProblem("0.0.0.0", TOKEN)).toBeUndefined();
    for (const host of ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"]) {
      expect(adminTokenProblem(host, undefined)).toBeUndefined();
    }
    // The config schema says so with the key (exit 2 from the CLI) …
    expect(() => validateConfig({ admin: { host: "0.0.0.0" } })).toThrow(/admin\.token: required/);
    expect(validateConfig({ admin: { host: "0.0.0.0", port: null } }).admin.port).toBeNull();
    // … and the wiring checks again for configs built in code.
    const b = await broker();
    const config = { ...validateConfig({}), admin: { ...validateConfig({}).admin, host: "0.0.0.0", port: 0 } };
    const listen = () => {
      throw new Error("must not listen");
    };
    await expect(listenAdmin(listen, { broker: b.server.broker, uplinks: b.server.uplinks, config })).rejects
      .toBeInstanceOf(AdminConfigError);
  });
});

describe("admin API: broker, clients, sessions, subscriptions", () => {
  test("GET /api/v1/broker reports version, uptime, counts and store statistics", async () => {
    const b = await broker();
    const app = appFor(b);
    await client(b, "b-1");
    await client(b, "b-2", { clean: false, properties: { sessionExpiryInterval: 300 } });
    const { status, body } = await call(app, "/api/v1/broker");
    expect(status).toBe(200);
    expect(body.version).toBe("test");
    expect(body.edge_id).toBe("edge-test");
    expect(body.uptime_seconds).toBeGreaterThanOrEqual(0);
    expect(body.connections).toBe(2);
    expect(body.sessions).toEqual({ total: 2, connected: 2, offline: 0 });
    expect(body.store.kind).toBe("memory");
    expect(typeof body.store.bytes).toBe("number");
    expect(body.messages.received.total).toBe(0);
    expect(body.auth.token_required).toBe(true);
  });

  test("clients list pages with limit and cursor (or offset), in client id order", async () => {
    const b = await broker();
    const app = appFor(b);
    const ids = ["pg-c", "pg-a", "pg-e", "pg-b", "pg-d"];
    for (const id of ids) await client(b, id);
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const q: string = cursor ? `&cursor=${cursor}` : "";
      const { status, body } = await call(app, `/api/v1/clients?limit=2${q}`);
      expect(status).toBe(200);
      expect(body.total).toBe(5);
      expect(body.data.length).toBeLessThanOrEqual(2);
      seen.push(...body.data.map((c: Json) => c.client_id));
      cursor = body.next_cursor;
      pages++;
    } while (cursor !== null);
    expect(pages).toBe(3);
    expect(seen).toEqual([...ids].sort());
    const last = await call(app, "/api/v1/clients?limit=2&offset=4");
    expect(last.body.data.map((c: Json) => c.client_id)).toEqual(["pg-e"]);
    expect(last.body.next_cursor).toBeNull();
    const filtered = await call(app, "/api/v1/clients?prefix=pg-a");
    expect(filtered.body.data).toHaveLength(1);
    expect(filtered.body.data[0]).toMatchObject({
      client_id: "pg-a",
      protocol: "5.0",
      state: "connected",
      transport: "tcp",
    });
  });

  test("client detail shows the connection and its subscriptions; unknown ids are 404", async () => {
    const b = await broker();
    const app = appFor(b);
    const c = await client(b, "detail-1", { keepalive: 30 });
    await c.client.subscribeAsync("d/+/x", { qos: 1 });
    const { status, body } = await call(app, "/api/v1/clients/detail-1");
    expect(status).toBe(200);
    expect(body).toMatchObject({ client_id: "detail-1", keep_alive: 30, protocol: "5.0" });
    expect(body.remote_address).toContain("127.0.0.1");
    expect(body.subscriptions.map((s: Json) => s.filter)).toEqual(["d/+/x"]);
    const missing = await call(app, "/api/v1/clients/nobody");
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe("not_found");
    expect(missing.body.error.message).toContain("nobody");
  });

  test("DELETE /api/v1/clients/:id disconnects the client with DISCONNECT 0x98 (administrative action)", async () => {
    const b = await broker();
    const app = appFor(b);
    const c = await client(b, "kick-me");
    const told = new Promise<number | undefined>((resolve) => c.client.on("disconnect", (p) => resolve(p.reasonCode)));
    const closed = new Promise<void>((resolve) => c.client.once("close", () => resolve()));
    const { status, body } = await call(app, "/api/v1/clients/kick-me", { method: "DELETE" });
    expect(status).toBe(200);
    expect(body).toEqual({ client_id: "kick-me", disconnected: true, reason_code: 0x98 });
    expect(await told).toBe(0x98);
    await closed;
    await eventually(() => b.server.broker.connectedCount === 0, 2000, "client gone");
    expect((await call(app, "/api/v1/clients/kick-me")).status).toBe(404);
    expect((await call(app, "/api/v1/clients/kick-me", { method: "DELETE" })).status).toBe(404);
  });

  test("a 3.1.1 client is kicked too (its socket is closed)", async () => {
    const b = await broker();
    const app = appFor(b);
    const c = await client(b, "kick-v4", { protocolVersion: 4 });
    const closed = new Promise<void>((resolve) => c.client.once("close", () => resolve()));
    expect((await call(app, "/api/v1/clients/kick-v4", { method: "DELETE" })).status).toBe(200);
    await closed;
  });

  test("sessions: an offline persistent session shows its subscriptions and queued messages", async () => {
    const b = await broker();
    const app = appFor(b);
    const off = await connect(b.url, {
      protocolVersion: 5,
      clientId: "offline-1",
      clean: false,
      properties: { sessionExpiryInterval: 600 },
    });
    await off.client.subscribeAsync("q/#", { qos: 1 });
    await off.end();
    await eventually(() => b.server.broker.sessions.get("offline-1")?.client === undefined, 2000, "offline");
    const pub = await client(b, "pub-1");
    for (let i = 0; i < 3; i++) await pub.client.publishAsync(`q/${i}`, `m${i}`, { qos: 1 });

    const { status, body } = await call(app, "/api/v1/sessions/offline-1");
    expect(status).toBe(200);
    expect(body).toMatchObject({
      client_id: "offline-1",
      connected: false,
      persistent: true,
      expiry_interval: 600,
      queued: 3,
      inflight: 0,
    });
    expect(body.expires_at).not.toBeNull();
    expect(body.subscription_list.map((s: Json) => s.filter)).toEqual(["q/#"]);
    expect(body.queued_messages.map((m: Json) => m.topic)).toEqual(["q/0", "q/1", "q/2"]);
    expect(body.inflight_messages).toEqual([]);

    const offline = await call(app, "/api/v1/sessions?connected=false");
    expect(offline.body.data.map((s: Json) => s.client_id)).toEqual(["offline-1"]);
    const online = await call(app, "/api/v1/sessions?connected=true");
    expect(online.body.data.map((s: Json) => s.client_id)).toEqual(["pub-1"]);
    expect((await call(app, "/api/v1/sessions?limit=1")).body.next_cursor).not.toBeNull();
    expect((await call(app, "/api/v1/sessions/nope")).status).toBe(404);
  });

  test("subscriptions filter by client, by exact filter and by a topic they match", async () => {
    const b = await broker();
    const app = appFor(b);
    const a = await client(b, "sub-a");
    const c = await client(b, "sub-b");
    await a.client.subscribeAsync(["a/+", "z/#"], { qos: 1 });
    await c.client.subscribeAsync("$share/g/a/#", { qos: 0 });
    const all = await call(app, "/api/v1/subscriptions");
    expect(all.body.total).toBe(3);
    const byClient = await call(app, "/api/v1/subscriptions?client_id=sub-a");
    expect(byClient.body.data.map((s: Json) => s.filter)).toEqual(["a/+", "z/#"]);
    const matching = await call(app, "/api/v1/subscriptions?topic=a/x");
    expect(matching.body.data.map((s: Json) => [s.client_id, s.filter, s.share_group])).toEqual([
      ["sub-a", "a/+", null],
      ["sub-b", "$share/g/a/#", "g"],
    ]);
    const exact = await call(app, "/api/v1/subscriptions?filter=z/%23");
    expect(exact.body.data).toHaveLength(1);
    expect(exact.body.data[0]).toMatchObject({ client_id: "sub-a", filter: "z/#", qos: 1 });
    expect((await call(app, "/api/v1/subscriptions?client_id=nobody")).body.data).toEqual([]);
  });
});

describe("admin API: retained, publish, history", () => {
  test("retained: list by prefix, get by topic, delete (a new subscriber then gets nothing)", async () => {
    const b = await broker();
    const app = appFor(b);
    const pub = await client(b, "ret-pub");
    await pub.client.publishAsync("r/a", "A", { qos: 1, retain: true });
    await pub.client.publishAsync("r/with space", "S", { qos: 1, retain: true });
    await pub.client.publishAsync("s/c", "C", { qos: 1, retain: true });

    const list = await call(app, "/api/v1/retained?prefix=r/");
    expect(list.body.total).toBe(2);
    expect(list.body.data.map((m: Json) => m.topic)).toEqual(["r/a", "r/with space"]);
    const one = await call(app, "/api/v1/retained/r/with%20space");
    expect(one.status).toBe(200);
    expect(one.body).toMatchObject({ topic: "r/with space", payload: "S", encoding: "utf8", retain: true, qos: 1 });

    const del = await call(app, "/api/v1/retained/r/a", { method: "DELETE" });
    expect(del.status).toBe(200);
    expect(del.body).toEqual({ topic: "r/a", deleted: true });
    expect((await call(app, "/api/v1/retained/r/a")).status).toBe(404);
    expect((await call(app, "/api/v1/retained/r/a", { method: "DELETE" })).status).toBe(404);

    const sub = await client(b, "ret-sub");
    await sub.client.subscribeAsync("r/#", { qos: 1 });
    await sub.waitFor(1);
    await barrier(sub);
    expect(sub.messages.map((m) => m.topic)).toEqual(["r/with space"]);
  });

  test("POST /api/v1/publish goes through the broker: a subscriber receives it, with properties", async () => {
    const b = await broker();
    const app = appFor(b);
    const sub = await client(b, "cmd-sub");
    await sub.client.subscribeAsync("cmd/#", { qos: 1 });
    const r = await post(app, "/api/v1/publish", {
      topic: "cmd/valve",
      payload: "open",
      qos: 1,
      properties: { content_type: "text/plain", user_properties: { by: "admin" }, message_expiry_interval: 60 },
    });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ topic: "cmd/valve", qos: 1, retain: false, payload_bytes: 4 });
    expect(r.body.offset).toBeGreaterThan(0);
    const [m] = await sub.waitFor(1);
    expect(m!.payload).toBe("open");
    expect(m!.packet.qos).toBe(1);
    expect(m!.packet.properties?.contentType).toBe("text/plain");
    expect(m!.packet.properties?.userProperties).toEqual({ by: "admin" });

    const bin = await post(app, "/api/v1/publish", { topic: "cmd/bin", payload: "AAEC/w==", encoding: "base64" });
    expect(bin.status).toBe(200);
    expect(bin.body.offset).toBeNull(); // QoS 0 and no uplink: not logged
    await sub.waitFor(2);
    expect([...sub.messages[1]!.packet.payload as Uint8Array]).toEqual([0, 1, 2, 255]);

    expect((await post(app, "/api/v1/publish", { topic: "cmd/keep", payload: "kept", retain: true })).status).toBe(200);
    const kept = await call(app, "/api/v1/retained/cmd/keep");
    expect(kept.body).toMatchObject({ payload: "kept", origin: "$admin" });
  });

  test("publish refuses bad input with 400 naming the problem", async () => {
    const app = appFor(await broker());
    const bad = async (body: unknown, match: RegExp) => {
      const r = await post(app, "/api/v1/publish", body);
      expect(r.status).toBe(400);
      expect(r.body.error.code).toBe("bad_request");
      expect(r.body.error.message).toMatch(match);
    };
    await bad({ topic: "a/#", payload: "x" }, /^topic: .*wildcard/);
    await bad({ payload: "x" }, /^topic: /);
    await bad({ topic: "a", payload: "***", encoding: "base64" }, /payload: not valid base64/);
    await bad({ topic: "a", qos: 3 }, /^qos: /);
    await bad({ topic: "a", colour: "red" }, /unknown field colour/);
    await bad({ topic: "a", properties: { response_topic: "r/+" } }, /properties\.response_topic/);
    const notJson = await call(app, "/api/v1/publish", {
      method: "POST",
      body: "{nope",
      headers: { "Content-Type": "application/json" },
    });
    expect(notJson.status).toBe(400);
    expect(notJson.body.error.message).toBe("body: not valid JSON");
  });

  test("history returns messages published over MQTT in offset order, filtered and paged", async () => {
    const b = await broker();
    const app = appFor(b);
    const pub = await client(b, "hist-pub");
    const before = new Date(Date.now() - 1000).toISOString();
    for (const p of ["1", "2", "3"]) await pub.client.publishAsync("h/a", p, { qos: 1 });
    await pub.client.publishAsync("h/b", "other", { qos: 2 });
    await pub.client.publishAsync("h/a", "qos0 is not logged", { qos: 0 });
    await pub.client.publishAsync("h/a", "4", { qos: 1 });

    const all = await call(app, "/api/v1/history?topic=h/a");
    expect(all.status).toBe(200);
    expect(all.body.data.map((m: Json) => m.payload)).toEqual(["1", "2", "3", "4"]);
    const offsets = all.body.data.map((m: Json) => m.offset);
    expect(offsets).toEqual([...offsets].sort((x: number, y: number) => x - y));
    expect(all.body.data[0]).toMatchObject({ topic: "h/a", qos: 1, origin: "hist-pub", encoding: "utf8" });
    expect(all.body.end_of_log).toBe(true);

    const wild = await call(app, "/api/v1/history?topic=h/%2B");
    expect(wild.body.data.map((m: Json) => m.payload)).toEqual(["1", "2", "3", "other", "4"]);

    const p1 = await call(app, "/api/v1/history?topic=h/a&limit=3");
    expect(p1.body.data.map((m: Json) => m.payload)).toEqual(["1", "2", "3"]);
    expect(p1.body.end_of_log).toBe(false);
    const p2 = await call(app, `/api/v1/history?topic=h/a&limit=3&from_offset=${p1.body.next_offset}`);
    expect(p2.body.data.map((m: Json) => m.payload)).toEqual(["4"]);
    expect(p2.body.end_of_log).toBe(true);

    expect((await call(app, `/api/v1/history?since=${encodeURIComponent(before)}`)).body.data).toHaveLength(5);
    const future = new Date(Date.now() + 60_000).toISOString();
    expect((await call(app, `/api/v1/history?since=${encodeURIComponent(future)}`)).body.data).toEqual([]);

    const badFilter = await call(app, "/api/v1/history?topic=a/%23/b");
    expect(badFilter.status).toBe(400);
    expect(badFilter.body.error.message).toMatch(/^topic: /);
    const badSince = await call(app, "/api/v1/history?since=yesterday");
    expect(badSince.status).toBe(400);
    expect(badSince.body.error.message).toMatch(/^since: /);
    expect((await call(app, "/api/v1/history?from_offset=0")).status).toBe(400);
  });
});

describe("admin API: errors, metrics, readiness, OpenAPI", () => {
  test("bad query parameters are 400 naming them; unknown routes and resources are 404", async () => {
    const app = appFor(await broker());
    const tooMany = await call(app, "/api/v1/clients?limit=5000");
    expect(tooMany.status).toBe(400);
    expect(tooMany.body.error.message).toMatch(/^limit: /);
    const unknown = await call(app, "/api/v1/retained?colour=red");
    expect(unknown.body.error.message).toBe("query: unknown field colour");
    expect((await call(app, "/api/v1/clients?cursor=***")).body.error.message).toMatch(/^cursor: /);
    expect((await call(app, "/api/v1/clients?cursor=YQ&offset=1")).body.error.message).toMatch(/cursor or offset/);
    expect((await call(app, "/api/v1/sessions?connected=maybe")).status).toBe(400);
    for (
      const path of [
        "/api/v1/nothing",
        "/api/v1/uplinks/none",
        "/api/v1/retained/no/such/topic",
        "/api/v1/sessions/none",
      ]
    ) {
      const r = await call(app, path);
      expect(r.status).toBe(404);
      expect(r.body.error.code).toBe("not_found");
      expect(typeof r.body.error.message).toBe("string");
    }
  });

  test("/metrics speaks Prometheus text, and its values follow the traffic", async () => {
    const b = await broker();
    const app = appFor(b);
    const first = await call(app, "/metrics");
    expect(first.status).toBe(200);
    expect(first.headers.get("Content-Type")).toContain("text/plain; version=0.0.4");
    const text0: string = first.body;
    for (
      const name of [
        "ferry_connections",
        "ferry_sessions",
        "ferry_messages_received_total",
        "ferry_messages_sent_total",
        "ferry_bytes_received_total",
        "ferry_dropped_messages_total",
        "ferry_protocol_errors_total",
        "ferry_store_bytes",
        "ferry_store_messages",
        "ferry_uplink_connected",
        "ferry_uplink_backlog_messages",
        "ferry_uplink_acknowledged_total",
        "ferry_uplink_dropped_total",
      ]
    ) {
      expect(text0).toContain(`# HELP ${name} `);
      expect(text0).toMatch(new RegExp(`# TYPE ${name} (counter|gauge)\\n`));
    }
    for (const reason of ["queue_full", "slow_consumer", "expired", "too_large"]) {
      expect(metric(text0, `ferry_dropped_messages_total{reason="${reason}"}`)).toBe(0);
    }
    expect(metric(text0, "ferry_connections")).toBe(0);

    const sub = await client(b, "m-sub");
    await sub.client.subscribeAsync("m/#", { qos: 1 });
    const pub = await client(b, "m-pub");
    await pub.client.publishAsync("m/1", "x", { qos: 1 });
    await pub.client.publishAsync("m/2", "y", { qos: 1 });
    await pub.client.publishAsync("m/3", "z", { qos: 0 });
    await sub.waitFor(3);

    const text1: string = (await call(app, "/metrics")).body;
    expect(metric(text1, "ferry_connections")).toBe(2);
    expect(metric(text1, "ferry_sessions")).toBe(2);
    expect(metric(text1, 'ferry_messages_received_total{qos="1"}')).toBe(2);
    expect(metric(text1, 'ferry_messages_received_total{qos="0"}')).toBe(1);
    expect(metric(text1, 'ferry_messages_sent_total{qos="1"}')).toBe(2);
    expect(metric(text1, "ferry_bytes_received_total")).toBeGreaterThan(metric(text0, "ferry_bytes_received_total"));
    expect(metric(text1, "ferry_store_messages")).toBeGreaterThanOrEqual(2);
    expect(metric(text1, "ferry_subscriptions")).toBe(1);
  });

  test("a protocol error is counted in ferry_protocol_errors_total", async () => {
    const b = await broker();
    const app = appFor(b);
    const sock = await Bun.connect({ hostname: "127.0.0.1", port: b.port, socket: { data() {} } });
    sock.write(new Uint8Array([0x30, 0x02, 0x00, 0x00])); // PUBLISH before CONNECT
    await eventually(() => b.server.broker.metrics.protocolErrors > 0, 2000, "protocol error");
    sock.end();
    expect(metric((await call(app, "/metrics")).body, "ferry_protocol_errors_total")).toBe(1);
  });

  test("/readyz is 200 when the store is open and listeners are up, 503 otherwise", async () => {
    let ready: Readiness = { store_open: true, listeners_up: true };
    const app = appFor(await broker(), { ready: () => ready });
    const ok = await call(app, "/readyz");
    expect(ok.status).toBe(200);
    expect(ok.body).toEqual({ ready: true, checks: ready });
    ready = { store_open: true, listeners_up: false };
    const down = await call(app, "/readyz");
    expect(down.status).toBe(503);
    expect(down.body.error).toEqual({ code: "not_ready", message: "not ready: listeners_up" });
  });

  test("the OpenAPI document lists every route the app serves", async () => {
    const app = appFor(await broker());
    const { status, body: doc } = await call(app, "/api/v1/openapi.json");
    expect(status).toBe(200);
    expect(doc.openapi).toMatch(/^3\./);
    const routes = app.routes.filter((r) => r.method !== "ALL");
    expect(routes.length).toBeGreaterThan(15);
    for (const r of routes) {
      const path = r.path.replace(/:(\w+)(\{[^}]*\})?/g, "{$1}");
      expect(doc.paths[path]?.[r.method.toLowerCase()] ? `${r.method} ${path}` : `missing ${r.method} ${path}`).toBe(
        `${r.method} ${path}`,
      );
    }
    // Query parameters come from the zod schemas.
    const history = doc.paths["/api/v1/history"].get.parameters.map((p: Json) => p.name);
    expect(history).toEqual(["topic", "from_offset", "since", "limit"]);
    expect(doc.paths["/api/v1/publish"].post.requestBody.content["application/json"].schema.properties.topic.type).toBe(
      "string",
    );
  });

  test("top topics count the busiest topics in bounded memory", async () => {
    const b = await broker();
    const app = appFor(b);
    const pub = await client(b, "top-pub");
    for (let i = 0; i < 5; i++) await pub.client.publishAsync("hot/topic", "x", { qos: 1 });
    await pub.client.publishAsync("cold/topic", "x", { qos: 1 });
    const { body } = await call(app, "/api/v1/top-topics?limit=1");
    expect(body.data).toEqual([{ topic: "hot/topic", messages: 5, bytes: 5, error: 0 }]);
    expect(body.total_messages).toBe(6);

    const t = new TopTopics(3);
    for (let i = 0; i < 100; i++) {
      t.add("heavy", 1);
      t.add(`rare/${i}`, 1);
    }
    expect(t.tracked).toBe(3);
    expect(t.top(1)[0]!.topic).toBe("heavy");
    expect(t.top(1)[0]!.messages).toBeGreaterThanOrEqual(100);
  });

  test("the served app is built on the first request, yet top topics count from start", async () => {
    const b = await broker({ admin: { port: 0 } });
    const admin = b.server.admin!;
    // Published before anyone has asked the admin API anything.
    const pub = await client(b, "early-pub");
    for (let i = 0; i < 3; i++) await pub.client.publishAsync("early/topic", "x", { qos: 1 });
    const base = `http://${admin.host}:${admin.port}`;
    const first = await Promise.all([fetch(`${base}/healthz`), fetch(`${base}/api/v1/top-topics?limit=1`)]);
    expect(first.map((r) => r.status)).toEqual([200, 200]);
    const body = (await first[1]!.json()) as Json;
    expect(body.data).toEqual([{ topic: "early/topic", messages: 3, bytes: 3, error: 0 }]);
  });
});

describe("admin API: uplinks", () => {
  test("uplink status, pause (the backlog grows) and resume (it drains to the cloud), with metrics", async () => {
    const cloud = await createCloud();
    await cloud.start();
    cleanups.push(() => cloud.stop());
    const b = await broker({
      uplinks: [{
        name: "cloud",
        url: cloud.url,
        forward: [{ filter: "sensors/#", qos: 1 }],
        backoff: { min_ms: 50, max_ms: 200, jitter: 0 },
      }] as FerryConfig["uplinks"],
    });
    const app = appFor(b);
    const cloudSub = await connect(cloud.url, { protocolVersion: 5 });
    cleanups.push(() => cloudSub.end(true));
    await cloudSub.client.subscribeAsync("sensors/#", { qos: 1 });

    const state = async () => (await call(app, "/api/v1/uplinks/cloud")).body;
    await eventually(() => b.server.uplinks.links[0]!.state === "connected", 5000, "uplink connected");
    const list = await call(app, "/api/v1/uplinks");
    expect(list.body.data).toHaveLength(1);
    expect(list.body.data[0]).toMatchObject({ name: "cloud", url: cloud.url, state: "connected", backlog_messages: 0 });

    const paused = await post(app, "/api/v1/uplinks/cloud/pause", {});
    expect(paused.status).toBe(200);
    expect(paused.body.state).toBe("paused");
    const pub = await client(b, "sensor");
    for (let i = 0; i < 3; i++) await pub.client.publishAsync(`sensors/t${i}`, String(i), { qos: 1 });
    expect((await state()).backlog_messages).toBe(3);
    let text: string = (await call(app, "/metrics")).body;
    expect(metric(text, 'ferry_uplink_connected{uplink="cloud"}')).toBe(0);
    expect(metric(text, 'ferry_uplink_paused{uplink="cloud"}')).toBe(1);
    expect(metric(text, 'ferry_uplink_backlog_messages{uplink="cloud"}')).toBe(3);
    // Not connected (above), so it cannot have sent; the cloud's subscriber has nothing either.
    await barrier(cloudSub);
    expect(cloudSub.messages).toHaveLength(0);

    const resumed = await post(app, "/api/v1/uplinks/cloud/resume", {});
    expect(resumed.status).toBe(200);
    expect(resumed.body.state).not.toBe("paused");
    await cloudSub.waitFor(3);
    expect(cloudSub.messages.map((m) => m.payload)).toEqual(["0", "1", "2"]);
    await eventually(() => b.server.uplinks.links[0]!.status().backlogEntries === 0, 5000, "drained");
    text = (await call(app, "/metrics")).body;
    expect(metric(text, 'ferry_uplink_connected{uplink="cloud"}')).toBe(1);
    expect(metric(text, 'ferry_uplink_acknowledged_total{uplink="cloud"}')).toBe(3);
    expect(metric(text, 'ferry_uplink_dropped_total{uplink="cloud",reason="ttl"}')).toBe(0);
    expect((await post(app, "/api/v1/uplinks/nope/pause", {})).status).toBe(404);
  });
});

describe("admin API over a real socket", () => {
  test("a broker with admin on port 0 serves the API with its token; kick, publish and logs work end to end", async () => {
    const b = await broker({ admin: { port: 0, token: TOKEN } });
    const admin = b.server.admin!;
    expect(admin.host).toBe("127.0.0.1");
    expect(admin.port).toBeGreaterThan(0);
    const base = `http://127.0.0.1:${admin.port}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect((await fetch(`${base}/api/v1/broker`)).status).toBe(401);
    const info = await (await fetch(`${base}/api/v1/broker`, { headers: AUTH })).json() as Json;
    expect(info.listeners.mqtt).toBe(`127.0.0.1:${b.port}`);
    expect(info.listeners.admin).toBe(`127.0.0.1:${admin.port}`);
    expect((await fetch(`${base}/readyz`, { headers: AUTH })).status).toBe(200);

    const sub = await client(b, "sock-sub");
    await sub.client.subscribeAsync("net/#", { qos: 1 });
    const published = await fetch(`${base}/api/v1/publish`, {
      method: "POST",
      headers: { ...AUTH, "Content-Type": "application/json" },
      body: JSON.stringify({ topic: "net/hello", payload: "over http", qos: 1 }),
    });
    expect(published.status).toBe(200);
    expect((await sub.waitFor(1))[0]!.payload).toBe("over http");

    const metricsBefore = await (await fetch(`${base}/metrics`, { headers: AUTH })).text();
    expect(metric(metricsBefore, "ferry_connections")).toBe(1);
    const told = new Promise<number | undefined>((resolve) =>
      sub.client.on("disconnect", (p) => resolve(p.reasonCode))
    );
    expect((await fetch(`${base}/api/v1/clients/sock-sub`, { method: "DELETE", headers: AUTH })).status).toBe(200);
    expect(await told).toBe(0x98);
    await eventually(() => b.server.broker.connectedCount === 0, 2000, "kicked");
    const metricsAfter = await (await fetch(`${base}/metrics`, { headers: AUTH })).text();
    expect(metric(metricsAfter, "ferry_connections")).toBe(0);
    expect(metric(metricsAfter, 'ferry_messages_received_total{qos="1"}')).toBe(1);

    // The wiring keeps recent warnings and errors for the dashboard.
    b.server.broker.logger.warn("disk nearly full (test)");
    const logs = await (await fetch(`${base}/api/v1/logs?level=warn`, { headers: AUTH })).json() as Json;
    expect(logs.data[0]).toMatchObject({ level: "warn", message: "disk nearly full (test)" });
    expect(
      metric(
        await (await fetch(`${base}/metrics`, { headers: AUTH })).text(),
        'ferry_log_messages_total{level="warn"}',
      ),
    ).toBe(1);

    await b.stop();
    await expect(fetch(`${base}/healthz`)).rejects.toThrow();
  });

  test("ferry serve --admin-port 0 prints listening http://HOST:PORT and serves /healthz", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ferry-admin-cli-"));
    const { url, out, proc } = await spawnAdminServe([
      process.execPath,
      MAIN,
      ...serveArgs(join(dir, "data"), { admin: true }),
    ]);
    expect(out).toMatch(
      /^listening mqtt:\/\/127\.0\.0\.1:\d+\nlistening http:\/\/127\.0\.0\.1:\d+ \(dashboard; admin API \/api\/v1, \/metrics\)\n$/,
    );
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    expect((await fetch(`${url}/api/v1/broker`)).status).toBe(200); // loopback without a token: open
    proc.kill("SIGTERM");
    expect(await proc.exited).toBe(0);
  });

  test.skipIf(!existsSync(DENO))("under Deno, the admin API is served with Deno.serve", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ferry-admin-deno-"));
    const { url, proc } = await spawnAdminServe([
      DENO,
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      MAIN,
      ...serveArgs(join(dir, "data"), { admin: true }),
    ]);
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    const info = await (await fetch(`${url}/api/v1/broker`)).json() as Json;
    expect(info.store.kind).toBe("sqlite");
    expect(await (await fetch(`${url}/metrics`)).text()).toContain("# TYPE ferry_connections gauge");
    proc.kill("SIGTERM");
    expect(await proc.exited).toBe(0);
  });

  test("ferry serve refuses an admin API off loopback without a token: exit 2 and a clear message", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ferry-admin-cli-"));
    const config = join(dir, "ferry.json");
    await Bun.write(config, JSON.stringify({ admin: { host: "0.0.0.0", port: 0 } }));
    const proc = Bun.spawn([
      process.execPath,
      MAIN,
      "serve",
      "--mqtt-port",
      "0",
      "--config",
      config,
      "--data-dir",
      join(dir, "data"),
    ], {
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    });
    expect(await proc.exited).toBe(2);
    const err = await new Response(proc.stderr).text();
    expect(err).toContain("admin.token: required when the admin API listens on 0.0.0.0");
    expect(await new Response(proc.stdout).text()).toBe("");
  });
});
