/**
 * The uplink under stress, against a real cloud broker (mosquitto, or a second Ferry
 * with FERRY_TEST_CLOUD=ferry or when mosquitto is missing): the cloud restarted in the
 * middle of a drain, Ferry killed with SIGKILL in the middle of a drain, strict versus
 * live-first ordering, the acknowledgement watchdog against a cloud that never
 * acknowledges, TLS and mutual TLS with certificate reload, permanent refusals, and the
 * cursor across a graceful restart. The rate limit, backoff and pacing are timing logic,
 * tested on a manual clock in test/unit/uplink-link.test.ts.
 *
 * Delivery is at least once: after a cut, what was in flight is sent again. So the
 * checks are on first occurrences (per topic, in order, without gaps) and on how many
 * duplicates a cut may cause, never on exact timing.
 */
import { beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import mqttPacket, { type Packet } from "mqtt-packet";
import { copyFileSync, readFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import type { FerryConfig } from "../src/config/schema.ts";
import { type DeepPartial, startBroker, type TestBroker } from "./helpers/broker.ts";
import { type BrokerProcess, spawnBroker } from "./helpers/broker-process.ts";
import { makeCerts, type TestCerts } from "./helpers/certs.ts";
import { barrier, connect, eventually, type Received, type TestClient } from "./helpers/clients.ts";
import { type CloudBroker, freePort } from "./helpers/cloud-broker.ts";
import {
  drainedTo,
  firstArrivals,
  link,
  numbered,
  publishMany,
  uplinkConfig,
  uplinkKit,
  type UplinkOverrides,
} from "./helpers/uplink-kit.ts";

setDefaultTimeout(15_000);

const kit = uplinkKit();
const { cloud, cloudSubscriber, persistentCloudSubscriber, tempDir } = kit;
const edge = (url: string, uplink: UplinkOverrides = {}, extra: DeepPartial<FerryConfig> = {}) =>
  kit.edge({ url, ...uplink }, extra);
const localClient = (url: string, opts = {}) => kit.client(url, opts);

/** A failed connect, and a retry that failed too (a third attempt has begun): it stays refused. */
async function refusedTwice(b: TestBroker): Promise<void> {
  await eventually(
    () => link(b).status().lastError !== undefined && link(b).status().connectAttempts >= 3,
    5000,
    "two failed connects",
  );
}

const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);
const remote = (topic: string) => `site/edge1/${topic}`;

describe("uplink resilience", () => {
  test("cloud restarted mid-drain: everything arrives, first arrivals in order per topic, re-sends only of what was in flight", async () => {
    const c = await cloud({ persistent: true });
    await c.start();
    const resume = await persistentCloudSubscriber(c, "site/#");
    await c.stop();
    // Rate-limited, so the drain lasts long enough to be cut in the middle.
    const b = await edge(c.url, { rate: { messages_per_second: 1000 }, max_inflight: 50 });
    const pub = await localClient(b.url);
    const topics = ["sensors/a", "sensors/b", "sensors/c"];
    await publishMany(pub, numbered(topics, 1000));
    await c.start();
    await eventually(() => link(b).status().acknowledged >= 500, 10_000, "drain under way");
    const atCut = link(b).status();
    await c.restart();
    await eventually(() => link(b).status().backlogEntries === 0, 12_000, "backlog drained after the restart");
    const end = link(b).status();
    expect(atCut.acknowledged).toBeLessThan(3000); // the cut really was mid-drain
    expect(end.reconnects).toBeGreaterThanOrEqual(1);
    expect(end.acknowledged).toBeGreaterThanOrEqual(3000);

    const sub = await resume();
    await sub.waitFor(3000, 10_000);
    await barrier(sub); // drained (above): the cloud has routed every re-send to it
    const { byTopic, duplicates } = firstArrivals(sub.messages);
    for (const t of topics) expect(byTopic.get(remote(t))).toEqual(range(0, 1000));
    // Only what was in flight when the connection was cut can arrive twice.
    expect(duplicates).toBeLessThanOrEqual(50 * end.reconnects);
  });

  test("Ferry SIGKILLed mid-drain and restarted on its data dir: every message it acknowledged reaches the cloud, in order", async () => {
    const c = await cloud();
    await c.start();
    const sub = await cloudSubscriber(c, "site/#");
    const dataDir = join(tempDir("ferry-uplink-kill-"), "data");
    const config = {
      edge_id: "edge1",
      log_level: "error",
      storage: { durability: "commit" },
      mqtt: { sys_interval: 0 },
      uplinks: [uplinkConfig({ url: c.url, rate: { messages_per_second: 500 }, max_inflight: 50 })],
    };
    const procs: BrokerProcess[] = [];
    kit.defer(async () => {
      for (const p of procs) await p.kill();
    });
    const first = await spawnBroker({ dataDir, config });
    procs.push(first);
    const topics = ["sensors/x", "sensors/y"];
    // The publisher keeps going until the kill; what Ferry acknowledged is what must arrive.
    const acked = new Map<string, number[]>(topics.map((t) => [t, []]));
    let sent = 0;
    const pub = await connect(`mqtt://127.0.0.1:${first.port}`, { protocolVersion: 5, clientId: "pub" });
    kit.defer(() => pub.end(true));
    let stop = false;
    const publishing = (async () => {
      const inflight = new Set<Promise<unknown>>();
      for (let i = 0; !stop && i < 5000; i++) {
        for (const t of topics) {
          const p = pub.client.publishAsync(t, String(i), { qos: 1 }).then(() => acked.get(t)!.push(i), () => {});
          inflight.add(p);
          void p.finally(() => inflight.delete(p));
          sent = i;
        }
        while (inflight.size >= 100 && !stop) await Promise.race(inflight);
      }
    })();
    await eventually(
      () => acked.get("sensors/x")!.length >= 1000 && sub.messages.length >= 300,
      10_000,
      "ingest and drain under way",
    );
    const ackedAtKill = topics.reduce((n, t) => n + acked.get(t)!.length, 0);
    const deliveredAtKill = sub.messages.length;
    await first.kill("SIGKILL");
    stop = true; // the loop sends nothing after its next step: `sent` is final
    void publishing;
    expect(deliveredAtKill).toBeLessThan(ackedAtKill); // killed with a backlog left

    const second = await spawnBroker({ dataDir, config });
    procs.push(second);
    // New messages after the restart continue each topic's numbering.
    const after = await connect(`mqtt://127.0.0.1:${second.port}`, { protocolVersion: 5, clientId: "pub2" });
    kit.defer(() => after.end(true));
    const next = sent + 1;
    await publishMany(after, numbered(topics, 50, next));
    for (const t of topics) acked.get(t)!.push(...range(next, 50));

    const want = (t: string) => new Set(acked.get(t)!);
    await eventually(
      () => {
        const { byTopic } = firstArrivals(sub.messages);
        return topics.every((t) => {
          const got = new Set(byTopic.get(remote(t)) ?? []);
          for (const i of want(t)) if (!got.has(i)) return false;
          return true;
        });
      },
      12_000,
      "every acknowledged message at the cloud",
    );
    const { byTopic } = firstArrivals(sub.messages);
    for (const t of topics) {
      const firsts = byTopic.get(remote(t))!;
      // First arrivals strictly increasing: order kept across the kill.
      for (let i = 1; i < firsts.length; i++) expect(firsts[i]!).toBeGreaterThan(firsts[i - 1]!);
      // Nothing arrives that was never published.
      expect(Math.max(...firsts)).toBeLessThan(next + 50);
    }
    // The dedup key is stable across the kill and every re-send: one log id, and each
    // message keeps its offset however often it arrives.
    const prop = (m: Received, k: string) => m.packet.properties?.userProperties?.[k];
    expect(new Set(sub.messages.map((m) => prop(m, "ferry-log-id"))).size).toBe(1);
    const offsetOf = new Map<string, string | string[] | undefined>();
    for (const m of sub.messages) {
      const key = `${m.topic} ${m.payload}`;
      if (!offsetOf.has(key)) offsetOf.set(key, prop(m, "ferry-offset"));
      expect(prop(m, "ferry-offset")).toBe(offsetOf.get(key));
    }
    // The README's recipe (strict order: per topic, drop what is not above the highest
    // offset seen) leaves exactly the first arrivals.
    const highest = new Map<string, number>();
    const kept: Received[] = [];
    for (const m of sub.messages) {
      const o = Number(prop(m, "ferry-offset"));
      if (o <= (highest.get(m.topic) ?? 0)) continue;
      highest.set(m.topic, o);
      kept.push(m);
    }
    expect(kept.length).toBe(offsetOf.size);
  });

  /** A backlog of 2,000 on one topic while the cloud is down, then 20 live messages on another mid-drain. */
  async function backlogThenLive(ordering: "strict" | "live-first"): Promise<Received[]> {
    const c = await cloud({ persistent: true });
    await c.start();
    const resume = await persistentCloudSubscriber(c, "site/#");
    await c.stop();
    const b = await edge(c.url, { ordering, rate: { messages_per_second: 500 }, max_inflight: 20 });
    const pub = await localClient(b.url);
    await publishMany(pub, numbered(["sensors/backlog"], 2000));
    await c.start();
    // Past the rate limiter's one-second burst: about three seconds of backlog left.
    await eventually(() => link(b).status().acknowledged >= 600, 10_000, "drain under way");
    expect(link(b).status().backlogEntries).toBeGreaterThan(0);
    for (let i = 0; i < 20; i++) await pub.client.publishAsync("sensors/live", String(i), { qos: 1 });
    await eventually(() => link(b).status().backlogEntries === 0, 12_000, "backlog drained");
    const sub = await resume();
    await sub.waitFor(2020, 10_000);
    await barrier(sub);
    return sub.messages;
  }

  test("strict ordering: the backlog goes first, then live messages, all in log order", async () => {
    const got = await backlogThenLive("strict");
    const expected = [
      ...range(0, 2000).map((i) => `${remote("sensors/backlog")} ${i}`),
      ...range(0, 20).map((i) => `${remote("sensors/live")} ${i}`),
    ];
    expect(got.map((m) => `${m.topic} ${m.payload}`)).toEqual(expected);
  });

  test("live-first ordering: live messages arrive before the backlog has drained, and nothing is lost", async () => {
    const got = await backlogThenLive("live-first");
    const { byTopic, duplicates } = firstArrivals(got);
    expect(byTopic.get(remote("sensors/backlog"))).toEqual(range(0, 2000));
    expect(byTopic.get(remote("sensors/live"))).toEqual(range(0, 20));
    expect(duplicates).toBe(0);
    const lastLive = got.findLastIndex((m) => m.topic === remote("sensors/live"));
    const lastBacklog = got.findLastIndex((m) => m.topic === remote("sensors/backlog"));
    expect(lastLive).toBeLessThan(lastBacklog);
    // Hundreds of backlog messages were still to come when the last live one arrived.
    expect(lastBacklog - lastLive).toBeGreaterThan(200);
  });

  test("ack watchdog: a cloud that never acknowledges is dropped after ack_timeout_seconds; nothing is lost once a real cloud is there", async () => {
    const port = await freePort();
    const real = await cloud({ persistent: true, port });
    await real.start();
    const resume = await persistentCloudSubscriber(real, "site/#");
    await real.stop();
    const fake = await silentCloud(port);
    kit.defer(() => fake.close());
    const b = await edge(`mqtt://127.0.0.1:${port}`, { ack_timeout_seconds: 1 });
    const pub = await localClient(b.url);
    await publishMany(pub, numbered(["sensors/w"], 30));
    await eventually(() => link(b).status().reconnects > 0, 8000, "watchdog reconnect");
    const s = link(b).status();
    expect(s.lastError).toMatch(/acknowledg/);
    expect(s.acknowledged).toBe(0);
    // On the next connection the same messages come again, in order, flagged DUP.
    await eventually(() => (fake.received()[1]?.length ?? 0) > 0, 5000, "re-sends on a second connection");
    const [first, second] = fake.received();
    expect(first!.length).toBeGreaterThan(0); // it was sending, just never acknowledged
    expect(first!.every((p) => !p.dup)).toBe(true);
    expect(second!.every((p) => p.dup)).toBe(true);
    expect(second!.map((p) => p.payload)).toEqual(first!.slice(0, second!.length).map((p) => p.payload));

    await fake.close();
    await real.start();
    await eventually(() => link(b).status().backlogEntries === 0, 10_000, "drained into the real cloud");
    const sub = await resume();
    await sub.waitFor(30);
    await barrier(sub);
    expect(sub.messages.map((m) => Number(m.payload))).toEqual(range(0, 30));
  });

  test("a message the cloud refuses for good (PUBACK 0x87) is counted in dropped_refused and does not block the ones after it", async () => {
    const c = await cloud({ denyPublish: ["site/edge1/sensors/blocked/#"] });
    await c.start();
    const sub = await cloudSubscriber(c, "site/#");
    const b = await edge(c.url);
    await eventually(() => link(b).state === "connected", 5000, "uplink connected");
    const pub = await localClient(b.url);
    const items: Array<[string, string]> = [];
    for (let i = 0; i < 50; i++) {
      items.push(["sensors/ok", String(i)]);
      if (i % 10 === 0) items.push([`sensors/blocked/${i}`, String(i)]);
    }
    await publishMany(pub, items, 1);
    await sub.waitFor(50);
    await eventually(() => link(b).status().backlogEntries === 0, 5000, "cursor at the end");
    const s = link(b).status();
    expect(s.droppedRefused).toBe(5);
    expect(s.reconnects).toBe(0);
    expect(s.lastError).toContain("refused");
    expect(sub.messages.map((m) => `${m.topic} ${m.payload}`)).toEqual(
      range(0, 50).map((i) => `${remote("sensors/ok")} ${i}`),
    );
  });

  test("ws:// reaches a cloud's MQTT-over-WebSocket listener", async () => {
    const wsCloud = await startBroker({ listeners: { ws_port: 0 } }); // a second Ferry, whatever the cloud kind
    kit.defer(() => wsCloud.stop());
    const sub = await localClient(wsCloud.url);
    await sub.client.subscribeAsync("site/#", { qos: 1 });
    const b = await edge(wsCloud.wsUrl);
    await eventually(() => link(b).state === "connected", 5000, "uplink connected over WebSocket");
    const pub = await localClient(b.url);
    await publishMany(pub, numbered(["sensors/ws"], 20));
    await sub.waitFor(20);
    expect(sub.messages.map((m) => Number(m.payload))).toEqual(range(0, 20));
  });

  test("a retained message is forwarded once, not again when the broker logs its copy for a persistent session", async () => {
    const c = await cloud();
    await c.start();
    const sub = await cloudSubscriber(c, "site/#");
    const b = await edge(c.url);
    await eventually(() => link(b).state === "connected", 5000, "uplink connected");
    const pub = await localClient(b.url);
    await pub.client.publishAsync("sensors/state", "on", { qos: 1, retain: true });
    await sub.waitFor(1);
    // A persistent QoS 1 subscriber: its copy of the retained message goes into the log.
    const s = await localClient(b.url, {
      clientId: "persistent",
      clean: false,
      properties: { sessionExpiryInterval: 600 },
    });
    await s.client.subscribeAsync("sensors/#", { qos: 1 });
    await s.waitFor(1);
    // The next message makes the link read the log past the copy.
    await pub.client.publishAsync("sensors/other", "1", { qos: 1 });
    await sub.waitFor(2);
    await drainedTo(b, sub);
    expect(sub.messages.map((m) => `${m.topic} ${m.payload}`)).toEqual([
      `${remote("sensors/state")} on`,
      `${remote("sensors/other")} 1`,
    ]);
  });

  test("the cursor survives a graceful restart: only what was in flight is sent again, and nothing once drained", async () => {
    const c = await cloud();
    await c.start();
    const sub = await cloudSubscriber(c, "site/#");
    const dataDir = tempDir("ferry-uplink-cursor-");
    const extra: DeepPartial<FerryConfig> = { data_dir: dataDir, storage: { durability: "commit" } };
    const uplink: UplinkOverrides = { rate: { messages_per_second: 500 }, max_inflight: 20 };
    let b = await edge(c.url, uplink, extra);
    const pub = await localClient(b.url);
    await publishMany(pub, numbered(["sensors/g"], 1500));
    await eventually(() => link(b).status().acknowledged >= 600, 10_000, "drain under way");
    await pub.end(true);
    await b.stop(); // graceful, mid-drain
    b = await edge(c.url, uplink, extra);
    await eventually(() => link(b).status().backlogEntries === 0, 12_000, "drained after the restart");
    await sub.waitFor(1500, 5000);
    await barrier(sub);
    let { byTopic, duplicates } = firstArrivals(sub.messages);
    expect(byTopic.get(remote("sensors/g"))).toEqual(range(0, 1500));
    expect(duplicates).toBeLessThanOrEqual(20); // at most the in-flight window
    const before = sub.messages.length;

    // Fully drained, then restarted: nothing at all is sent again.
    await b.stop();
    b = await edge(c.url, uplink, extra);
    const pub2 = await localClient(b.url);
    await pub2.client.publishAsync("sensors/g", "1500", { qos: 1 });
    await sub.waitFor(before + 1);
    await drainedTo(b, sub);
    expect(sub.messages.length).toBe(before + 1);
    ({ byTopic, duplicates } = firstArrivals(sub.messages));
    expect(byTopic.get(remote("sensors/g"))).toEqual(range(0, 1501));
  });
});

describe("uplink over TLS", () => {
  let certs: TestCerts;
  beforeAll(() => {
    certs = makeCerts("edge1");
  });

  const serverTls = () => ({ cert: certs.serverCert, key: certs.serverKey });

  async function tlsSubscriber(c: CloudBroker): Promise<TestClient> {
    return await cloudSubscriber(c, "site/#", {
      ca: readFileSync(certs.ca),
      cert: readFileSync(certs.clientCert),
      key: readFileSync(certs.clientKey),
    });
  }

  test("mqtts:// with the cloud's CA connects and forwards", async () => {
    const c = await cloud({ tls: serverTls() });
    await c.start();
    expect(c.url).toStartWith("mqtts://");
    const sub = await tlsSubscriber(c);
    const b = await edge(c.url, { tls: { ca: certs.ca } });
    await eventually(() => link(b).state === "connected", 5000, "uplink connected over TLS");
    const pub = await localClient(b.url);
    await pub.client.publishAsync("sensors/tls", "1", { qos: 1 });
    const [m] = await sub.waitFor(1);
    expect(m!.topic).toBe(remote("sensors/tls"));
  });

  test("a CA that did not sign the cloud's certificate fails with a certificate error in last_error", async () => {
    const c = await cloud({ tls: serverTls() });
    await c.start();
    const b = await edge(c.url, { tls: { ca: certs.badCert } });
    await refusedTwice(b);
    const s = link(b).status();
    expect(s.state).not.toBe("connected");
    expect(s.lastError).toMatch(/^connect: TLS: the cloud's certificate is not trusted \(check tls\.ca\)/);
  });

  test("mutual TLS: refused without a client certificate, connected with one", async () => {
    const c = await cloud({ tls: { ...serverTls(), ca: certs.ca, requireClientCert: true } });
    await c.start();
    const without = await edge(c.url, { tls: { ca: certs.ca } });
    await refusedTwice(without);
    expect(link(without).status().state).not.toBe("connected");
    expect(link(without).status().lastError).toMatch(/^connect: TLS: the cloud requires a client certificate/);

    const sub = await tlsSubscriber(c);
    const withCert = await edge(c.url, { tls: { ca: certs.ca, cert: certs.clientCert, key: certs.clientKey } });
    await eventually(() => link(withCert).state === "connected", 5000, "uplink connected with a client certificate");
    const pub = await localClient(withCert.url);
    await pub.client.publishAsync("sensors/mtls", "1", { qos: 1 });
    const [m] = await sub.waitFor(1);
    expect(m!.topic).toBe(remote("sensors/mtls"));
  });

  test("uplinks.reload() reconnects with the certificate files as they are now", async () => {
    const c = await cloud({ tls: { ...serverTls(), ca: certs.ca, requireClientCert: true } });
    await c.start();
    const sub = await tlsSubscriber(c);
    const dir = tempDir("ferry-uplink-certs-");
    const cert = join(dir, "client.crt");
    const key = join(dir, "client.key");
    const install = (from: { cert: string; key: string }) => {
      copyFileSync(from.cert, cert);
      copyFileSync(from.key, key);
    };
    install({ cert: certs.clientCert, key: certs.clientKey });
    const b = await edge(c.url, { tls: { ca: certs.ca, cert, key } });
    await eventually(() => link(b).state === "connected", 5000, "connected with the first certificate");

    // A certificate the cloud's CA did not sign: after the reload the link cannot get in.
    install({ cert: certs.badCert, key: certs.badKey });
    b.server.uplinks.reload();
    await eventually(
      () => link(b).status().lastError?.startsWith("connect") === true,
      5000,
      "refused with the new files",
    );
    expect(link(b).state).not.toBe("connected");

    // A renewed certificate the CA did sign: the reload picks it up.
    install({ cert: certs.renewedCert, key: certs.renewedKey });
    b.server.uplinks.reload();
    await eventually(() => link(b).state === "connected", 5000, "connected with the renewed certificate");
    const pub = await localClient(b.url);
    await pub.client.publishAsync("sensors/renewed", "1", { qos: 1 });
    const [m] = await sub.waitFor(1);
    expect(m!.topic).toBe(remote("sensors/renewed"));
  });
});

/**
 * A "cloud" that accepts the connection (CONNACK, SUBACK, PINGRESP) but never
 * acknowledges a PUBLISH, like a broker wedged behind a working TCP connection.
 */
async function silentCloud(
  port: number,
): Promise<{ close(): Promise<void>; received(): Array<Array<{ payload: string; dup: boolean }>> }> {
  /** The PUBLISH packets of each connection, in order. */
  const received: Array<Array<{ payload: string; dup: boolean }>> = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    const publishes: Array<{ payload: string; dup: boolean }> = [];
    received.push(publishes);
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    let version: 4 | 5 = 5;
    let parser = mqttPacket.parser({ protocolVersion: 5 });
    const send = (p: Record<string, unknown>) =>
      socket.write(mqttPacket.generate(p as unknown as Packet, { protocolVersion: version }));
    const onPacket = (p: Packet) => {
      switch (p.cmd) {
        case "connect":
          version = p.protocolVersion === 5 ? 5 : 4;
          if (version !== 5) {
            parser = mqttPacket.parser({ protocolVersion: version });
            parser.on("packet", onPacket);
          }
          send({ cmd: "connack", sessionPresent: false, ...(version === 5 ? { reasonCode: 0 } : { returnCode: 0 }) });
          break;
        case "subscribe":
          send({ cmd: "suback", messageId: p.messageId, granted: p.subscriptions.map((s) => s.qos) });
          break;
        case "pingreq":
          send({ cmd: "pingresp" });
          break;
        case "publish":
          publishes.push({ payload: String(p.payload), dup: p.dup }); // and no PUBACK, ever
          break;
        default:
          break;
      }
    };
    parser.on("packet", onPacket);
    socket.on("data", (d: Buffer) => parser.parse(d));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve());
  });
  let closed: Promise<void> | undefined;
  return {
    received: () => received,
    close: () =>
      closed ??= new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
