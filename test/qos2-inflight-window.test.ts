/**
 * The in-flight window towards a subscriber when QoS 2 deliveries are past PUBREC (issue 19).
 * `mqtt.max_inflight` bounds the PUBLISHes that await PUBACK/PUBREC; a v5 client's deliveries
 * past PUBREC, which hold only a packet id, count against its Receive Maximum (and at most
 * four windows in all) instead, so a QoS 2 drain is not held in lockstep by the commit each
 * PUBREC needs. A 3.1.1 client, which cannot state a Receive Maximum, keeps one window in all.
 * In process, on the manual clock; the store commits at once.
 */
import { describe, expect, test } from "bun:test";
import type { IPublishPacket } from "mqtt-packet";
import { brokerOn, type GatedBroker, GatedStore } from "./helpers/gated-store.ts";
import { settle } from "./helpers/manual-clock.ts";
import type { MemoryClient } from "./helpers/memory-client.ts";

const WINDOW = 4;

const publishes = (c: MemoryClient) => c.packets.filter((p): p is IPublishPacket => p.cmd === "publish");

/**
 * A persistent subscriber (`version`, Receive Maximum `receiveMaximum` when given) with
 * `n` QoS 2 messages queued for it while it was away, then back and owed them all.
 */
async function backlog(n: number, version: 4 | 5, receiveMaximum?: number) {
  const b = await brokerOn(new GatedStore(), { mqtt: { max_inflight: WINDOW } });
  const first = b.open(version);
  await b.connect(first, "sub", version);
  first.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "t/#", qos: 2 }] }, version);
  await first.next("suback");
  first.send({ cmd: "disconnect" }, version);
  await settle();
  const pub = b.open(5);
  await b.connect(pub, "pub", 5, { clean: true, properties: {} });
  // In rounds below Ferry's Receive Maximum towards publishers, each flow completed with PUBREL.
  for (let from = 0; from < n; from += 500) {
    const ids: number[] = [];
    for (let i = from; i < Math.min(n, from + 500); i++) {
      ids.push(i + 1);
      pub.send({
        cmd: "publish",
        topic: `t/${i}`,
        payload: Buffer.from(`m${i}`),
        qos: 2,
        messageId: i + 1,
        dup: false,
        retain: false,
      });
    }
    await settle();
    for (const id of ids) pub.send({ cmd: "pubrel", messageId: id });
    await settle();
  }
  const sub = b.open(version);
  const props = version === 5
    ? { properties: { sessionExpiryInterval: 3600, ...(receiveMaximum ? { receiveMaximum } : {}) } }
    : {};
  expect(await b.connect(sub, "sub", version, props)).toBe(true);
  await settle();
  return { b, sub, version };
}

/** PUBREC every PUBLISH not answered yet; PUBCOMP nothing. */
async function pubrecAll(sub: MemoryClient, version: 4 | 5, answered: Set<number>) {
  for (const p of publishes(sub)) {
    if (answered.has(p.messageId!)) continue;
    answered.add(p.messageId!);
    sub.send({ cmd: "pubrec", messageId: p.messageId! }, version);
  }
  await settle();
}

function inflight(b: GatedBroker) {
  const s = b.broker.sessions.get("sub")!;
  return { total: s.inflight.size, releasing: s.inflight.releasing };
}

describe("QoS 2 deliveries past PUBREC and the in-flight window", () => {
  test("v5: PUBRECs open the window for more PUBLISHes while PUBCOMPs are owed, up to four windows in all [MQTT-3.3.4-9]", async () => {
    const { b, sub } = await backlog(40, 5);
    expect(publishes(sub)).toHaveLength(WINDOW);
    const answered = new Set<number>();
    for (let round = 1; round <= 5; round++) await pubrecAll(sub, 5, answered);
    // Each round's PUBRELs went out, and with them room for a window of new PUBLISHes, until
    // 4 × the window are in flight, 12 of them past PUBREC.
    expect(publishes(sub)).toHaveLength(4 * WINDOW);
    expect(sub.packets.filter((p) => p.cmd === "pubrel")).toHaveLength(4 * WINDOW);
    expect(inflight(b)).toEqual({ total: 4 * WINDOW, releasing: 4 * WINDOW });
    // One PUBCOMP frees one place.
    sub.send({ cmd: "pubcomp", messageId: publishes(sub)[0]!.messageId! }, 5);
    await settle();
    expect(publishes(sub)).toHaveLength(4 * WINDOW + 1);
  });

  test("v5: never more than the client's Receive Maximum in all, those past PUBREC included", async () => {
    const { b, sub } = await backlog(40, 5, 6);
    expect(publishes(sub)).toHaveLength(WINDOW);
    const answered = new Set<number>();
    for (let round = 1; round <= 3; round++) await pubrecAll(sub, 5, answered);
    expect(publishes(sub)).toHaveLength(6);
    expect(inflight(b).total).toBe(6);
  });

  test("3.1.1: one window in all, as Mosquitto's max_inflight_messages counts it", async () => {
    const { b, sub } = await backlog(40, 4);
    expect(publishes(sub)).toHaveLength(WINDOW);
    const answered = new Set<number>();
    await pubrecAll(sub, 4, answered);
    expect(sub.packets.filter((p) => p.cmd === "pubrel")).toHaveLength(WINDOW);
    expect(publishes(sub)).toHaveLength(WINDOW);
    for (const p of publishes(sub)) sub.send({ cmd: "pubcomp", messageId: p.messageId! }, 4);
    await settle();
    expect(publishes(sub)).toHaveLength(2 * WINDOW);
    expect(inflight(b)).toEqual({ total: WINDOW, releasing: 0 });
  });

  test("a delivery past PUBREC holds no payload; the drain completes in order, each message once", async () => {
    const n = 40;
    const { b, sub } = await backlog(n, 5);
    const answered = new Set<number>();
    await pubrecAll(sub, 5, answered);
    const s = b.broker.sessions.get("sub")!;
    const past = [...s.inflight.values()].filter((o) => o.phase === "pubrel");
    expect(past.length).toBeGreaterThan(0);
    for (const o of past) expect(o.message.payload.byteLength).toBe(0);
    // Complete every flow as it comes until all n are through.
    const completed = new Set<number>();
    for (let guard = 0; guard < 100 && completed.size < n; guard++) {
      await pubrecAll(sub, 5, answered);
      for (const p of sub.packets) {
        if (p.cmd === "pubrel" && !completed.has(p.messageId!)) {
          completed.add(p.messageId!);
          sub.send({ cmd: "pubcomp", messageId: p.messageId! }, 5);
        }
      }
      await settle();
    }
    const texts = publishes(sub).map((p) => new TextDecoder().decode(p.payload as Uint8Array));
    expect(texts).toEqual(Array.from({ length: n }, (_, i) => `m${i}`));
    expect(inflight(b)).toEqual({ total: 0, releasing: 0 });
  });

  /** Drain `n` queued QoS 2 messages, answering every PUBLISH and PUBREL: store lists and mutations per message. */
  async function drainCost(n: number) {
    const { b, sub } = await backlog(n, 5);
    const lists = b.store.committed.length;
    const mutations = b.store.committed.reduce((a, l) => a + l.length, 0);
    const answered = new Set<number>();
    const completed = new Set<number>();
    let seen = 0;
    for (let guard = 0; guard < 10 * n && completed.size < n; guard++) {
      const packets = sub.packets;
      for (; seen < packets.length; seen++) {
        const p = packets[seen]!;
        if (p.cmd === "publish" && !answered.has(p.messageId!)) {
          answered.add(p.messageId!);
          sub.send({ cmd: "pubrec", messageId: p.messageId! }, 5);
        } else if (p.cmd === "pubrel" && !completed.has(p.messageId!)) {
          completed.add(p.messageId!);
          sub.send({ cmd: "pubcomp", messageId: p.messageId! }, 5);
        }
      }
      await settle();
      await b.clock.advance(10); // WriteBehind's bookkeeping goes on its own after a few ms
    }
    expect(publishes(sub)).toHaveLength(n);
    return {
      lists: (b.store.committed.length - lists) / n,
      mutations: (b.store.committed.reduce((a, l) => a + l.length, 0) - mutations) / n,
    };
  }

  // A drain whose work per message grew with the backlog took 42 s for 40,000 QoS 2 messages
  // (issue 19); the store work per message must not depend on how many are queued.
  test("the store work per drained QoS 2 message does not grow with the backlog", async () => {
    const small = await drainCost(200);
    const large = await drainCost(1_600);
    expect(large.mutations).toBeLessThanOrEqual(small.mutations * 1.1);
    expect(large.lists).toBeLessThanOrEqual(small.lists * 1.1);
    // A "pubrel" phase and a deletion per message at most, a "sent" mark when nothing supersedes it.
    expect(large.mutations).toBeLessThanOrEqual(3);
  });
});
