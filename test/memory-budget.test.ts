/**
 * The memory budget (issue 13 part 4, `limits.max_memory`): what Ferry holds for clients is
 * counted as it comes and goes, and as the total nears the budget Ferry refuses new
 * connections, slows publishers and drops only what its policy allows, counted — never a
 * message it acknowledged to an online subscriber. In process, on a manual clock, counting
 * the budget's bytes (not RSS).
 */
import { afterEach, describe, expect, test } from "bun:test";
import type { IPublishPacket, Packet } from "mqtt-packet";
import { brokerOptionsFrom } from "../src/config/load.ts";
import { Broker } from "../src/core/broker.ts";
import { bodyCost, COSTS } from "../src/core/memory-budget.ts";
import { MemoryStore } from "../src/store/memory-store.ts";
import { testConfig } from "./helpers/broker.ts";
import { type InProcessBroker, inProcessBroker } from "./helpers/in-process-broker.ts";
import { ManualClock, settle } from "./helpers/manual-clock.ts";
import type { MemoryClient } from "./helpers/memory-client.ts";

const KiB = 1024;
const MiB = 1024 * KiB;

let b: InProcessBroker | undefined;
afterEach(async () => {
  await b?.stop();
  b = undefined;
});

const publishes = (c: MemoryClient) => c.packets.filter((p): p is IPublishPacket => p.cmd === "publish");

function publish(
  c: MemoryClient,
  topic: string,
  payload: Buffer,
  qos: 0 | 1 | 2,
  id: number,
  version: 4 | 5,
  retain = false,
) {
  c.send({ cmd: "publish", topic, payload, qos, messageId: id, retain, dup: false } as Packet, version);
}

/** A payload that names its publisher and sequence number. */
function numbered(size: number, who: number, seq: number): Buffer {
  const p = Buffer.alloc(size);
  p.writeUInt32BE(who, 0);
  p.writeUInt32BE(seq, 4);
  return p;
}

/** Acknowledge what `sub` received until nothing more comes; returns "who/seq" of every PUBLISH. */
async function drainAll(sub: MemoryClient, got = new Set<string>()): Promise<Set<string>> {
  for (let idle = 0; idle < 3;) {
    const ps = publishes(sub);
    sub.packets = sub.packets.filter((p) => p.cmd !== "publish");
    if (ps.length === 0) idle++;
    else idle = 0;
    for (const p of ps) {
      const pl = p.payload as Buffer;
      got.add(`${pl.readUInt32BE(0)}/${pl.readUInt32BE(4)}`);
      if (p.qos === 1) sub.send({ cmd: "puback", messageId: p.messageId! });
      if (p.qos === 2) sub.send({ cmd: "pubrec", messageId: p.messageId! });
    }
    for (const p of sub.packets.filter((p) => p.cmd === "pubrel")) {
      sub.send({ cmd: "pubcomp", messageId: (p as { messageId: number }).messageId });
    }
    sub.packets = sub.packets.filter((p) => p.cmd !== "pubrel");
    await settle();
  }
  return got;
}

describe("what the memory budget counts", () => {
  test("comes back to nothing once clients, sessions and retained messages are gone", async () => {
    b = await inProcessBroker({ mqtt: { max_queued_messages: 50 } });
    const budget = b.broker.budget;
    // A persistent session that goes offline with messages queued, a shared group, QoS 2 and retained.
    const keeper = await b.connected(5, {
      clientId: "keeper",
      clean: false,
      properties: { sessionExpiryInterval: 600 },
    });
    keeper.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "a/#", qos: 2 }] });
    await keeper.next("suback");
    keeper.close();
    const shared1 = await b.subscriber("$share/g/a/#", 1);
    const shared2 = await b.subscriber("$share/g/a/#", 1);
    const plain = await b.connected(4, {
      clientId: "plain",
      will: { topic: "a/will", payload: Buffer.alloc(300), qos: 1, retain: false },
    });
    plain.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "a/#", qos: 1 }] }, 4);
    await plain.next("suback");
    const pub = await b.connected(5, { clientId: "pub" });
    for (let i = 1; i <= 40; i++) {
      publish(pub, `a/${i % 4}`, numbered(200 + i, 1, i), (i % 3) as 0 | 1 | 2, i, 5, i % 5 === 0);
    }
    await settle();
    expect(budget.messages).toBeGreaterThan(0);
    expect(budget.clients).toBeGreaterThan(0);
    // One member leaves with messages in flight (they move to the other), the plain one drops (its Will goes).
    shared1.close();
    plain.close();
    await drainAll(shared2);
    await settle();

    // Everything goes: the keeper resumes and drains, then ends its session; retained messages are cleared.
    const back = await b.connected(5, { clientId: "keeper", clean: false, properties: { sessionExpiryInterval: 600 } });
    await drainAll(back);
    back.send({ cmd: "disconnect", reasonCode: 0, properties: { sessionExpiryInterval: 0 } } as Packet);
    for (let t = 0; t < 4; t++) publish(pub, `a/${t}`, Buffer.alloc(0), 0, 0, 5, true);
    publish(pub, "a/will", Buffer.alloc(0), 0, 0, 5, true);
    await settle();
    for (const c of [shared2, pub]) c.close();
    await settle();
    expect(b.broker.sessions.size).toBe(0);
    expect(b.broker.retained.size).toBe(0);
    budget.recount();
    expect({ messages: budget.messages, clients: budget.clients, output: budget.output, input: budget.input })
      .toEqual({ messages: 0, clients: 0, output: 0, input: 0 });
  });

  test("a message queued for many sessions counts its body once, and each delivery at a fixed cost", async () => {
    b = await inProcessBroker({});
    const budget = b.broker.budget;
    const n = 20;
    for (let i = 0; i < n; i++) {
      const s = await b.connected(5, { clientId: `off${i}`, clean: false, properties: { sessionExpiryInterval: 600 } });
      s.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "fan", qos: 1 }] });
      await s.next("suback");
      s.close();
    }
    await settle();
    const pub = await b.connected(5, { clientId: "pub" });
    await settle();
    const before = budget.messages;
    const payload = Buffer.alloc(10 * KiB);
    publish(pub, "fan", payload, 1, 1, 5);
    await pub.next("puback");
    const message = { offset: 1, topic: "fan", payload, qos: 1 as const, retain: false, receivedAt: 0, origin: "pub" };
    expect(budget.messages - before).toBe(bodyCost(message) + n * COSTS.entry);
  });
});

describe("as the total nears max_memory", () => {
  test(
    "a flood at a subscriber that acknowledges nothing: the total stays under the budget plus the margin; publishers are slowed, never acknowledged and then dropped; new clients are refused",
    async () => {
      const LIMIT = 8 * MiB;
      const OUTPUT = 64 * KiB;
      const SIZE = 4 * KiB;
      b = await inProcessBroker({
        limits: { max_memory: LIMIT, max_output_bytes: OUTPUT },
        mqtt: { max_queued_messages: 100_000 },
      });
      const budget = b.broker.budget;
      const metrics = b.broker.metrics;
      // An online subscriber that takes a few messages and acknowledges none of them (yet).
      const stuck = await b.connected(5, { clientId: "stuck", properties: { receiveMaximum: 8 } });
      stuck.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "t/#", qos: 1 }] });
      await stuck.next("suback");
      // An offline persistent session on the same topics.
      const away = await b.connected(5, {
        clientId: "away",
        clean: false,
        properties: { sessionExpiryInterval: 3600 },
      });
      away.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "t/#", qos: 1 }] });
      await away.next("suback");
      away.close();
      // A QoS 0 subscriber that does not read at all.
      const deaf = await b.connected(4, { clientId: "deaf" });
      deaf.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "q/#", qos: 0 }] }, 4);
      await deaf.next("suback");
      deaf.pause();

      // Four 3.1.1 publishers send 2,000 QoS 1 messages each without waiting for acks (32 MiB in
      // all, four times the budget), and one floods QoS 0.
      const pubs: MemoryClient[] = [];
      for (let k = 0; k < 4; k++) pubs.push(await b.connected(4, { clientId: `pub${k}` }));
      const flooder = await b.connected(4, { clientId: "flooder" });
      const connections = b.broker.clients.size;
      budget.resetPeak();
      const N = 2000;
      for (let i = 0; i < N; i++) {
        for (let k = 0; k < 4; k++) publish(pubs[k]!, `t/${k}`, numbered(SIZE, k, i), 1, (i % 65_000) + 1, 4);
        publish(flooder, "q/x", numbered(SIZE, 9, i), 0, 0, 4);
      }
      await settle();
      expect(budget.used).toBeGreaterThanOrEqual(budget.full);
      expect(budget.throttled).toBeGreaterThan(0);

      // New clients are refused while the total is past 3/4 of the budget: v5 0x97, 3.1.1 code 3.
      expect((await b.attempt(5, { clientId: "late5" })).ack.reasonCode).toBe(0x97);
      expect((await b.attempt(4, { clientId: "late4" })).ack.returnCode).toBe(3);
      expect(metrics.refusedMemoryConnections).toBe(2);

      // The subscriber stays stuck: publishers are slowed (one message each per
      // mqtt.stalled_subscriber_ms), not stopped, and what passes the budget is refused.
      for (let t = 0; t < 4; t++) await b.advance(5_000);

      // What Ferry held never passed the budget by more than the margin: per connection, a
      // read (here one packet), its output bound plus one packet, and the deliveries of one
      // publish (the one that crossed) to every session.
      const margin = connections * (OUTPUT + 2 * (SIZE + 64)) + b.broker.sessions.size * COSTS.entry;
      expect(budget.peak).toBeLessThanOrEqual(LIMIT + margin);
      // Only what the policy allows was dropped: the offline session's additions and QoS 0.
      expect(metrics.droppedMemory).toBeGreaterThan(0);
      expect(metrics.droppedQueueFull + metrics.droppedQueueBytes).toBe(0);
      expect(metrics.throttledPublishers).toBeGreaterThan(0);

      // The subscriber reads again: every message a publisher got a PUBACK for reaches it.
      const got = await drainAll(stuck);
      let acked = 0;
      for (let k = 0; k < 4; k++) {
        const n = pubs[k]!.packets.filter((p) => p.cmd === "puback").length;
        acked += n;
        for (let i = 0; i < n; i++) expect(got.has(`${k}/${i}`)).toBe(true);
      }
      expect(acked).toBeGreaterThan(0);
      expect(acked).toBeLessThan(4 * N);
    },
    60_000,
  );

  describe("at each level (pressure put on the budget directly)", () => {
    const LIMIT = 8 * MiB;
    /** Make the budget count `used` bytes in all (as if held by clients), output counted afresh. */
    const pressure = (used: number) => {
      const budget = b!.broker.budget;
      budget.recount();
      budget.addClients(used - budget.used);
    };

    test("3/4: connections are refused, an offline session's queue and QoS 0 queues take nothing (counted); online QoS 1 still flows", async () => {
      b = await inProcessBroker({ limits: { max_memory: LIMIT } });
      const away = await b.connected(5, { clientId: "away", clean: false, properties: { sessionExpiryInterval: 60 } });
      away.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "x", qos: 1 }] });
      await away.next("suback");
      away.close();
      const online = await b.subscriber("x", 1);
      const pub = await b.connected(5, { clientId: "pub" });
      pressure(b.broker.budget.high);
      expect((await b.attempt(5, { clientId: "new" })).ack.reasonCode).toBe(0x97);
      publish(pub, "x", Buffer.from("m1"), 1, 1, 5);
      expect((await pub.next("puback")).reasonCode ?? 0).toBe(0);
      expect(publishes(await online).length).toBe(1);
      expect(b.broker.sessions.get("away")!.queuedCount).toBe(0);
      expect(b.broker.metrics.droppedMemory).toBe(1);
      // A client taking over its own session is not a new one.
      const again = await b.attempt(5, { clientId: "pub" });
      expect(again.ack.reasonCode).toBe(0);
      pressure(0);
      expect((await b.attempt(5, { clientId: "new" })).ack.reasonCode).toBe(0);
    });

    test("7/8: a publisher's acks wait and its reading pauses until the total is below 3/4", async () => {
      b = await inProcessBroker({ limits: { max_memory: LIMIT } });
      await b.subscriber("x", 1);
      const pub = await b.connected(4, { clientId: "pub" });
      pressure(b.broker.budget.full);
      publish(pub, "x", Buffer.from("m1"), 1, 1, 4);
      publish(pub, "x", Buffer.from("m2"), 1, 2, 4);
      await settle();
      // Routed (the subscriber has it), not acknowledged, and nothing more read.
      expect(pub.packets.filter((p) => p.cmd === "puback")).toEqual([]);
      expect(b.broker.metrics.messagesReceived[1]).toBe(1);
      expect(b.broker.budget.throttled).toBe(1);
      const conn = [...b.broker.clients].find((c) => c.clientId === "pub")!;
      expect(conn.memoryHeld).toBe(true);
      pressure(b.broker.budget.high - 1);
      await settle();
      expect(pub.packets.filter((p) => p.cmd === "puback").map((p) => (p as { messageId: number }).messageId))
        .toEqual([1, 2]);
      expect(b.broker.budget.throttled).toBe(0);
      expect(conn.memoryHeld).toBe(false);
    });

    test("7/8: a publisher with messages in flight to it keeps being read (their acks free memory); only its acks wait", async () => {
      b = await inProcessBroker({ limits: { max_memory: LIMIT } });
      const both = await b.connected(5, { clientId: "both" });
      both.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "in", qos: 1 }] });
      await both.next("suback");
      const other = await b.connected(5, { clientId: "other" });
      publish(other, "in", Buffer.from("for both"), 1, 1, 5);
      const delivery = await both.next("publish");
      pressure(b.broker.budget.full);
      publish(both, "out", Buffer.from("m"), 1, 7, 5);
      await settle();
      const conn = [...b.broker.clients].find((c) => c.clientId === "both")!;
      expect(conn.memoryHeld).toBe(false);
      expect(both.packets.filter((p) => p.cmd === "puback")).toEqual([]);
      // Its PUBACK for the delivery is read and handled.
      both.send({ cmd: "puback", messageId: delivery.messageId! });
      await settle();
      expect(b.broker.sessions.get("both")!.inflight.size).toBe(0);
    });

    test("7/8, for longer than mqtt.stalled_subscriber_ms: waiting publishers go on (slowed, not stopped), logged once", async () => {
      b = await inProcessBroker({ limits: { max_memory: LIMIT }, mqtt: { stalled_subscriber_ms: 1000 } });
      await b.subscriber("x", 1);
      const pub = await b.connected(4, { clientId: "pub" });
      pressure(b.broker.budget.full);
      publish(pub, "x", Buffer.from("m1"), 1, 1, 4);
      await settle();
      expect(pub.packets.filter((p) => p.cmd === "puback")).toEqual([]);
      await b.advance(1000);
      expect(pub.packets.filter((p) => p.cmd === "puback").length).toBe(1);
    });

    test("the budget itself: a v5 publish is refused with 0x97 before it is routed, a 3.1.1 one closes its connection without a PUBACK, QoS 0 is dropped", async () => {
      b = await inProcessBroker({ limits: { max_memory: LIMIT } });
      const sub = await b.subscriber("x", 1);
      const v5 = await b.connected(5, { clientId: "v5" });
      const v4 = await b.connected(4, { clientId: "v4" });
      pressure(LIMIT);
      publish(v5, "x", Buffer.from("no"), 1, 1, 5);
      expect((await v5.next("puback")).reasonCode).toBe(0x97);
      publish(v5, "x", Buffer.from("no"), 2, 2, 5);
      expect((await v5.next("pubrec")).reasonCode).toBe(0x97);
      publish(v5, "x", Buffer.from("no"), 0, 0, 5);
      publish(v4, "x", Buffer.from("no"), 1, 1, 4);
      await v4.waitClosed();
      expect(v4.packets.filter((p) => p.cmd === "puback")).toEqual([]);
      await sub.roundTrip();
      expect(publishes(sub)).toEqual([]);
      expect(b.broker.metrics.refusedMemoryPublishes).toBe(3);
      expect(b.broker.metrics.droppedMemory).toBe(1);
    });
  });

  test("max_memory 0 counts and enforces nothing", async () => {
    b = await inProcessBroker({ limits: { max_memory: 0 } });
    b.broker.budget.addClients(1024 * MiB);
    expect((await b.attempt(5, { clientId: "c" })).ack.reasonCode).toBe(0);
    expect(b.broker.budget.overHigh).toBe(false);
  });
});

describe("the metrics of the budget", () => {
  test("$SYS/broker/memory/… (/metrics and the API: test/metrics.test.ts)", async () => {
    b = await inProcessBroker({ limits: { max_memory: 64 * MiB }, mqtt: { sys_interval: 1 } });
    const sub = await b.subscriber("$SYS/broker/memory/#", 0);
    await b.advance(1000);
    await sub.roundTrip();
    const topics = new Map(publishes(sub).map((p) => [p.topic, Number((p.payload as Buffer).toString())]));
    expect(topics.get("$SYS/broker/memory/limit")).toBe(64 * MiB);
    expect(topics.get("$SYS/broker/memory/used")).toBeGreaterThan(0);
    for (const name of ["peak", "messages", "clients", "output", "input", "publishers/slowed", "refused/connections"]) {
      expect(topics.has(`$SYS/broker/memory/${name}`)).toBe(true);
    }
  });
});

describe("the process's resident memory, as a sanity check of the budget", () => {
  test("is logged once when it grew by more than twice the budget since start, and shown in the snapshot", async () => {
    const clock = new ManualClock();
    const warnings: string[] = [];
    let rss = 40 * MiB;
    const broker = new Broker({
      options: brokerOptionsFrom(testConfig({ limits: { max_memory: 8 * MiB } }), "test"),
      store: new MemoryStore(),
      clock,
      logger: { debug() {}, info() {}, warn: (m) => warnings.push(m), error() {} },
      residentBytes: () => rss,
    });
    await broker.start();
    try {
      rss += 16 * MiB; // twice the budget: not more
      await clock.advance(1000);
      expect(warnings).toEqual([]);
      rss += 1 * MiB;
      await clock.advance(1000);
      await clock.advance(1000);
      expect(warnings.length).toBe(1);
      expect(warnings[0]).toContain("memory outside the budget is growing");
    } finally {
      await broker.close();
    }
  });
});
