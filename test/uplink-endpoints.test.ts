/**
 * Issue 16 over real sockets against Debian's mosquitto (MQTT 5): several endpoints and
 * failover, the dedup key and replay marker a cloud consumer sees, the cloud's Receive
 * Maximum, the oldest-pending age during an outage, buffer drops that survive a
 * restart, connection attempts, and a client id that renders an invalid remote topic.
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import mqttPacket, { type Packet } from "mqtt-packet";
import net from "node:net";
import type { FerryConfig } from "../src/config/schema.ts";
import type { Logger } from "../src/core/logger.ts";
import type { DeepPartial, TestBroker } from "./helpers/broker.ts";
import { barrier, connect, eventually, type Received } from "./helpers/clients.ts";
import { type CloudBroker, freePort } from "./helpers/cloud-broker.ts";
import { link, uplinkKit } from "./helpers/uplink-kit.ts";

setDefaultTimeout(30_000);

const kit = uplinkKit();
const { cloud, edge } = kit;
const subscriber = (c: CloudBroker, filter?: string) => kit.cloudSubscriber(c, filter);
const local = (b: TestBroker, opts = {}) => kit.client(b.url, opts);
const prop = (m: Received, name: string) => m.packet.properties?.userProperties?.[name];

/**
 * An MQTT 5 server that sends every client elsewhere: CONNACK 0x9C with a Server
 * Reference, or CONNACK 0 then DISCONNECT 0x9D with one. Counts the connections.
 */
async function redirectingCloud(mode: "connack" | "disconnect", reference: string) {
  const port = await freePort();
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    const parser = mqttPacket.parser({ protocolVersion: 5 });
    const send = (p: Record<string, unknown>) =>
      socket.write(mqttPacket.generate(p as unknown as Packet, { protocolVersion: 5 }));
    parser.on("packet", (p: Packet) => {
      if (p.cmd !== "connect") return;
      if (mode === "connack") {
        send({ cmd: "connack", sessionPresent: false, reasonCode: 0x9c, properties: { serverReference: reference } });
      } else {
        send({ cmd: "connack", sessionPresent: false, reasonCode: 0 });
        send({ cmd: "disconnect", reasonCode: 0x9d, properties: { serverReference: reference } });
      }
      socket.end();
    });
    socket.on("data", (d: Buffer) => parser.parse(d));
  });
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", () => r()));
  const close = () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
  kit.defer(close);
  return { url: `mqtt://127.0.0.1:${port}`, connections: () => connections };
}

function recordingLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const add = (l: string) => (m: string) => void lines.push(`${l} ${m}`);
  return { lines, debug: add("debug"), info: add("info"), warn: add("warn"), error: add("error") };
}

describe("uplink endpoints and failover", () => {
  test("urls: an endpoint that refuses fails over to the next; status and the API show which is in use and each one's last error", async () => {
    const dead = `mqtt://127.0.0.1:${await freePort()}`;
    const c = await cloud();
    await c.start();
    const sub = await subscriber(c);
    const b = await edge({ urls: [dead, c.url], backoff: { min_ms: 50, max_ms: 5000, jitter: 0 } });
    await eventually(() => link(b).state === "connected", 5000, "connected to the second endpoint");
    const s = link(b).status();
    expect(s.url).toBe(c.url);
    expect(s.endpoints.map((e) => e.url)).toEqual([dead, c.url]);
    expect(s.endpoints[0]!.lastError).toMatch(/ECONNREFUSED|refused/i);
    expect(s.endpoints[1]!.lastError).toBeUndefined();
    expect(s.connectAttempts).toBe(2);
    const pub = await local(b);
    await pub.client.publishAsync("sensors/x", "1", { qos: 1 });
    await sub.waitFor(1);
  });

  test("the endpoint in use is killed mid-drain: the link fails over, and every acknowledged message reaches one of the two clouds, in order per topic", async () => {
    const a = await cloud();
    const c = await cloud();
    await a.start();
    await c.start();
    const subA = await subscriber(a);
    const subC = await subscriber(c);
    const b = await edge({ urls: [a.url, c.url], rate: { messages_per_second: 400 } });
    await eventually(() => link(b).state === "connected", 5000, "connected");
    const pub = await local(b);
    for (let i = 0; i < 600; i++) void pub.client.publishAsync("sensors/k", String(i), { qos: 1 });
    await eventually(() => link(b).status().acknowledged >= 150, 10_000, "drain under way");
    await a.stop();
    await eventually(() => link(b).status().url === c.url && link(b).state === "connected", 10_000, "failed over");
    await eventually(() => link(b).status().backlogEntries === 0, 15_000, "drained");
    await barrier(subC); // cloud A is gone; C acknowledged all, so has routed all to its subscriber
    const seen = new Set<number>();
    const first: number[] = [];
    for (const m of [...subA.messages, ...subC.messages]) {
      const n = Number(m.payload);
      if (!seen.has(n)) first.push(n);
      seen.add(n);
    }
    // First arrivals keep the publish order.
    expect(first).toEqual([...first].sort((x, y) => x - y));
    // Nothing is missing except what cloud A acknowledged in its last moments and had not yet
    // passed to its subscriber when it stopped (Mosquitto without persistence loses those; the
    // edge cannot know): such messages lie between the last A delivered and the first C did,
    // and there are at most an in-flight window of them.
    const nums = (ms: { payload: unknown }[]) => ms.map((m) => Number(m.payload));
    const lastA = Math.max(-1, ...nums(subA.messages));
    const firstC = Math.min(600, ...nums(subC.messages));
    const missing = Array.from({ length: 600 }, (_, i) => i).filter((i) => !seen.has(i));
    expect(missing.filter((i) => i <= lastA || i >= firstC)).toEqual([]);
    expect(missing.length).toBeLessThanOrEqual(64);
  });
});

describe("Server Reference (MQTT 5)", () => {
  for (const mode of ["connack", "disconnect"] as const) {
    test(`${mode === "connack" ? "CONNACK 0x9C" : "DISCONNECT 0x9D"} with a Server Reference: the uplink goes to the referenced server, which is not in its urls`, async () => {
      const c = await cloud();
      await c.start();
      const sub = await subscriber(c);
      const redirect = await redirectingCloud(mode, `127.0.0.1:${c.port}`);
      const b = await edge({ url: redirect.url, backoff: { min_ms: 50, max_ms: 5000, jitter: 0 } });
      await eventually(() => link(b).state === "connected" && link(b).status().url === c.url, 5000, "redirected");
      expect(redirect.connections()).toBe(1);
      const s = link(b).status();
      expect(s.endpoints.map((e) => e.url)).toEqual([redirect.url, c.url]);
      expect(s.endpoints[0]!.lastError).toContain(`server reference 127.0.0.1:${c.port}`);
      const pub = await local(b);
      await pub.client.publishAsync("sensors/r", "1", { qos: 1 });
      await sub.waitFor(1);
    });
  }
});

describe("what a cloud consumer sees (MQTT 5)", () => {
  test("dedup key: ferry-edge-id, ferry-log-id and ferry-offset, one log id across an edge restart, offsets increasing; ferry-replay on the backlog only", async () => {
    const c = await cloud();
    const dataDir = kit.tempDir("ferry-dedup-");
    const extra: DeepPartial<FerryConfig> = { data_dir: dataDir, storage: { durability: "commit" } };
    let b = await edge({ url: c.url }, extra);
    const pub = await local(b);
    // The cloud is down: these wait in the log (backlog).
    for (let i = 0; i < 3; i++) await pub.client.publishAsync("sensors/d", String(i), { qos: 1 });
    await pub.end(true);
    await b.stop();
    await c.start();
    const sub = await subscriber(c);
    b = await edge({ url: c.url }, extra);
    await sub.waitFor(3);
    await eventually(() => link(b).status().backlogEntries === 0, 5000, "drained");
    const pub2 = await local(b);
    await pub2.client.publishAsync("sensors/d", "3", { qos: 1 });
    const got = await sub.waitFor(4);
    expect(got.map((m) => m.payload)).toEqual(["0", "1", "2", "3"]);
    expect(got.map((m) => prop(m, "ferry-replay"))).toEqual(["true", "true", "true", undefined]);
    const offsets = got.map((m) => Number(prop(m, "ferry-offset")));
    expect(offsets.every((o, i) => i === 0 || o > offsets[i - 1]!)).toBe(true);
    expect(new Set(got.map((m) => prop(m, "ferry-log-id"))).size).toBe(1); // the log outlived the restart
    expect(got.every((m) => prop(m, "ferry-edge-id") === "edge1")).toBe(true);
    expect(got.every((m) => ["synced", "unsynced", "unknown"].includes(String(prop(m, "ferry-clock"))))).toBe(true);
    expect(got.every((m) => typeof prop(m, "ferry-received-at") === "string")).toBe(true);
  });

  test("the cloud's Receive Maximum (3) caps the window; the drain completes without a disconnect", async () => {
    const c = await cloud({ receiveMaximum: 3 });
    await c.start();
    const sub = await subscriber(c);
    const b = await edge({ url: c.url, max_inflight: 100 });
    await eventually(() => link(b).state === "connected", 5000, "connected");
    expect(link(b).status().window).toBe(3);
    const pub = await local(b);
    const all = Array.from({ length: 300 }, (_, i) => pub.client.publishAsync("sensors/rm", String(i), { qos: 1 }));
    await Promise.all(all);
    await sub.waitFor(300, 15_000);
    expect(sub.messages.map((m) => Number(m.payload))).toEqual(Array.from({ length: 300 }, (_, i) => i));
    expect(link(b).status().reconnects).toBe(0);
  });
});

describe("downlink safety", () => {
  test("downlink_acl: a cloud command the local ACL denies to that identity is not published, nor one for a $ topic; both are counted", async () => {
    const c = await cloud();
    await c.start();
    const b = await edge({
      url: c.url,
      downlink: [{ filter: "cmd/${edge_id}/#", topic: "${topic}", strip: "cmd/edge1/", qos: 1 }],
      downlink_acl: { username: "cloud-commands" },
    }, {
      acl: {
        default: "allow",
        rules: [{ action: "publish", topic: "secret/#", permission: "deny", username: "cloud-commands" }],
      },
    });
    await eventually(() => link(b).state === "connected", 5000, "connected");
    const watcher = await local(b);
    await watcher.client.subscribeAsync("#", { qos: 1 });
    const cloudPub = await connect(c.url, { protocolVersion: 5 });
    kit.defer(() => cloudPub.end(true));
    for (const t of ["cmd/edge1/secret/door", "cmd/edge1/$SYS/broker/uptime", "cmd/edge1/lamp"]) {
      await cloudPub.client.publishAsync(t, "1", { qos: 1 });
    }
    await watcher.waitFor(1);
    // The link hands downlink messages to the broker in the order the cloud sent them: the
    // refused ones came before "lamp".
    await barrier(watcher);
    expect(watcher.messages.map((m) => m.topic)).toEqual(["lamp"]);
    const s = link(b).status();
    expect(s.downlinkRefused).toBe(2);
    expect(s.downlinkReceived).toBe(1);
  });
});

describe("uplink counters over real sockets", () => {
  test("oldest pending climbs while the cloud is down (it comes from the log), and connection attempts are counted", async () => {
    const c = await cloud();
    const b = await edge({ url: c.url });
    const pub = await local(b);
    await pub.client.publishAsync("sensors/o", "1", { qos: 1 });
    await eventually(() => link(b).status().oldestPendingMs >= 1000, 4000, "oldest pending from the log");
    const s = link(b).status();
    expect(s.state).not.toBe("connected");
    expect(s.reconnects).toBe(0);
    expect(s.connectAttempts).toBeGreaterThan(3);
    await c.start();
    await eventually(() => link(b).status().backlogEntries === 0, 5000, "drained");
    expect(link(b).status().oldestPendingMs).toBe(0);
  });

  test("buffer.max_messages drops are logged with their offsets and still counted after a restart", async () => {
    const c = await cloud();
    const dataDir = kit.tempDir("ferry-drops-");
    const extra: DeepPartial<FerryConfig> = { data_dir: dataDir, storage: { durability: "commit" } };
    const log = recordingLogger();
    let b = await edge({ url: c.url, buffer: { max_messages: 50 } }, extra, log);
    const pub = await local(b);
    for (let i = 0; i < 200; i++) await pub.client.publishAsync("sensors/b", String(i), { qos: 1 });
    expect(link(b).status().droppedBuffer).toBe(150);
    const lines = log.lines.filter((l) => l.startsWith("warn") && l.includes("buffer.max_messages"));
    expect(lines.length).toBeGreaterThan(0);
    expect(lines[0]).toMatch(/skipped 1 message\(s\) at offsets \d+-\d+/);
    await pub.end(true);
    await b.stop();
    b = await edge({ url: c.url, buffer: { max_messages: 50 } }, extra);
    expect(link(b).status().droppedBuffer).toBe(150);
  });

  test("a client id that renders a wildcard into the remote topic (${clientid} = 'evil/#') is skipped and counted; messages after it still arrive", async () => {
    const c = await cloud();
    await c.start();
    const sub = await subscriber(c, "d/#");
    const b = await edge({ url: c.url, forward: [{ filter: "sensors/#", topic: "d/${clientid}/${topic}", qos: 1 }] });
    await eventually(() => link(b).state === "connected", 5000, "connected");
    const evil = await local(b, { clientId: "evil/#" });
    const good = await local(b, { clientId: "good" });
    await evil.client.publishAsync("sensors/x", "bad", { qos: 1 });
    await good.client.publishAsync("sensors/x", "ok", { qos: 1 });
    await sub.waitFor(1);
    await eventually(() => link(b).status().backlogEntries === 0, 5000, "cursor at the end");
    const s = link(b).status();
    expect(s.droppedInvalid).toBe(1);
    expect(s.reconnects).toBe(0);
    expect(sub.messages.map((m) => `${m.topic} ${m.payload}`)).toEqual(["d/good/sensors/x ok"]);
  });
});
