/**
 * Publisher flow control (issue 13): a publisher whose messages meet an online subscriber
 * with a full queue gets its PUBACK/PUBREC later, when there is room, instead of an ack for
 * a message that is then dropped. In process, on a manual clock (the stall timeout), with
 * raw clients so each packet can be watched.
 */
import { afterEach, describe, expect, test } from "bun:test";
import type { IPublishPacket, Packet } from "mqtt-packet";
import { type InProcessBroker, inProcessBroker } from "./helpers/in-process-broker.ts";
import { brokerOn, GatedStore } from "./helpers/gated-store.ts";
import { settle } from "./helpers/manual-clock.ts";
import type { MemoryClient } from "./helpers/memory-client.ts";

const text = (p: IPublishPacket) => new TextDecoder().decode(p.payload as Uint8Array);
const publishes = (c: MemoryClient) => c.packets.filter((p): p is IPublishPacket => p.cmd === "publish");
const acks = (c: MemoryClient, cmd: Packet["cmd"] = "puback") =>
  c.packets.filter((p) => p.cmd === cmd).map((p) => (p as { messageId?: number }).messageId);

let b: InProcessBroker | undefined;
afterEach(async () => {
  await b?.stop();
  b = undefined;
});

/** A v5 subscriber of `topic` that lets `window` messages be in flight to it and acknowledges nothing yet. */
async function slowSubscriber(broker: InProcessBroker, topic: string, window: number, qos: 1 | 2 = 1, id = "") {
  const sub = await broker.connected(5, { clientId: id, properties: { receiveMaximum: window } });
  sub.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos }] });
  await sub.next("suback");
  return sub;
}

function publish(c: MemoryClient, topic: string, payload: string, qos: 0 | 1 | 2, id: number, version: 4 | 5 = 5) {
  c.send(
    { cmd: "publish", topic, payload: Buffer.from(payload), qos, messageId: id, dup: false, retain: false },
    version,
  );
}

/** Acknowledge every PUBLISH `sub` has received so far (and forget them), in order. */
function ackAll(sub: MemoryClient): string[] {
  const got = publishes(sub);
  sub.packets = sub.packets.filter((p) => p.cmd !== "publish");
  for (const p of got) sub.send({ cmd: p.qos === 2 ? "pubrec" : "puback", messageId: p.messageId! });
  return got.map(text);
}

describe("publisher flow control", () => {
  test("a QoS 1 PUBACK waits while the online subscriber's queue is full and follows when it has room; nothing is dropped [MQTT-4.6.0-2]", async () => {
    b = await inProcessBroker({ mqtt: { max_queued_messages: 2 } });
    const sub = await slowSubscriber(b, "t", 1);
    const pub = await b.connected(5);
    for (let i = 1; i <= 6; i++) publish(pub, "t", `m${i}`, 1, i);
    await settle();
    // m1 in flight, m2 and m3 fill the queue; m4..m6 are queued over the bound, their acks held.
    expect(publishes(sub).map(text)).toEqual(["m1"]);
    expect(acks(pub)).toEqual([1, 2, 3]);
    expect(b.broker.metrics.publishesHeld).toBe(3);
    const delivered: string[] = [];
    // Each ack lets one more through; the queue has room again once it holds fewer than 2.
    delivered.push(...ackAll(sub));
    await settle();
    delivered.push(...ackAll(sub));
    await settle();
    delivered.push(...ackAll(sub));
    await settle();
    expect(acks(pub)).toEqual([1, 2, 3]);
    delivered.push(...ackAll(sub));
    await settle();
    expect(acks(pub)).toEqual([1, 2, 3, 4, 5, 6]);
    for (let i = 0; i < 3; i++) {
      delivered.push(...ackAll(sub));
      await settle();
    }
    expect(delivered).toEqual(["m1", "m2", "m3", "m4", "m5", "m6"]);
    expect(b.broker.metrics.droppedQueueFull).toBe(0);
  });

  test("a QoS 2 publisher's PUBREC waits the same way", async () => {
    b = await inProcessBroker({ mqtt: { max_queued_messages: 1 } });
    const sub = await slowSubscriber(b, "t", 1, 2);
    const pub = await b.connected(5);
    // QoS 2 deliveries wait for their commit, so these three were routed to an empty queue.
    for (let i = 1; i <= 3; i++) publish(pub, "t", `m${i}`, 2, i);
    await settle();
    publish(pub, "t", "m4", 2, 4);
    await settle();
    expect(acks(pub, "pubrec")).toEqual([1, 2, 3]);
    const complete = async () => {
      const got = ackAll(sub); // PUBREC
      await settle();
      sub.send({ cmd: "pubcomp", messageId: (await sub.next("pubrel")).messageId! });
      await settle();
      return got;
    };
    const delivered = [...await complete()];
    expect(acks(pub, "pubrec")).toEqual([1, 2, 3]);
    delivered.push(...await complete());
    expect(acks(pub, "pubrec")).toEqual([1, 2, 3, 4]);
    delivered.push(...await complete(), ...await complete());
    expect(delivered).toEqual(["m1", "m2", "m3", "m4"]);
    expect(b.broker.metrics.droppedQueueFull).toBe(0);
  });

  test("a subscriber that takes nothing for stalled_subscriber_ms stops holding publishers; then its bound drops, counted, until it catches up", async () => {
    b = await inProcessBroker({ mqtt: { max_queued_messages: 2, stalled_subscriber_ms: 3000 } });
    const sub = await slowSubscriber(b, "t", 1);
    const pub = await b.connected(5);
    for (let i = 1; i <= 4; i++) publish(pub, "t", `m${i}`, 1, i);
    await settle();
    expect(acks(pub)).toEqual([1, 2, 3]);
    await b.advance(2999);
    expect(acks(pub)).toEqual([1, 2, 3]);
    await b.advance(1);
    // Stalled: the held ack goes (m4 is queued, over the bound, not dropped).
    expect(acks(pub)).toEqual([1, 2, 3, 4]);
    expect(b.broker.metrics.subscribersStalled).toBe(1);
    // While stalled, its queue bound applies as for an offline session.
    publish(pub, "t", "m5", 1, 5);
    await settle();
    expect(acks(pub)).toEqual([1, 2, 3, 4, 5]);
    expect(b.broker.metrics.droppedQueueFull).toBe(1);
    // It catches up (its queue empties): publishers wait for it again.
    const delivered: string[] = [];
    for (let i = 0; i < 5; i++) {
      delivered.push(...ackAll(sub));
      await settle();
    }
    expect(delivered).toEqual(["m1", "m2", "m3", "m4"]);
    for (let i = 6; i <= 9; i++) publish(pub, "t", `m${i}`, 1, i);
    await settle();
    expect(acks(pub)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(b.broker.metrics.droppedQueueFull).toBe(1);
  });

  test("a subscriber that keeps taking messages, however slowly, is not stalled", async () => {
    b = await inProcessBroker({ mqtt: { max_queued_messages: 1, stalled_subscriber_ms: 3000 } });
    const sub = await slowSubscriber(b, "t", 1);
    const pub = await b.connected(5);
    for (let i = 1; i <= 8; i++) publish(pub, "t", `m${i}`, 1, i);
    await settle();
    const delivered: string[] = [];
    for (let i = 0; i < 10; i++) {
      await b.advance(2000);
      delivered.push(...ackAll(sub));
      await settle();
    }
    expect(delivered).toEqual(["m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8"]);
    expect(acks(pub)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(b.broker.metrics.subscribersStalled).toBe(0);
    expect(b.broker.metrics.droppedQueueFull).toBe(0);
  });

  test("a subscriber going offline releases the publishers waiting for it", async () => {
    b = await inProcessBroker({ mqtt: { max_queued_messages: 1 } });
    const sub = await slowSubscriber(b, "t", 1, 1, "offline-sub");
    const pub = await b.connected(5);
    for (let i = 1; i <= 4; i++) publish(pub, "t", `m${i}`, 1, i);
    await settle();
    expect(acks(pub)).toEqual([1, 2]);
    sub.close();
    await settle();
    expect(acks(pub)).toEqual([1, 2, 3, 4]);
  });

  test("QoS 0 publishes are not held: past an online subscriber's bound they are dropped and counted (at most once)", async () => {
    b = await inProcessBroker({ mqtt: { max_queued_messages: 1 } });
    const sub = await slowSubscriber(b, "t", 1);
    const pub = await b.connected(5);
    publish(pub, "t", "q1", 1, 1);
    publish(pub, "t", "q1b", 1, 2);
    for (let i = 0; i < 3; i++) publish(pub, "t", `z${i}`, 0, 0);
    publish(pub, "t", "ping", 1, 3);
    await settle();
    expect(b.broker.metrics.droppedQueueFull).toBe(3);
    expect(b.broker.metrics.publishesHeld).toBe(1);
    expect(acks(pub)).toEqual([1, 2]);
    void sub;
  });

  test("an offline persistent session keeps its bound: the overflow is dropped and counted, and no publisher waits", async () => {
    b = await inProcessBroker({ mqtt: { max_queued_messages: 2 } });
    const sub = await b.connected(5, { clientId: "away", clean: false, properties: { sessionExpiryInterval: 600 } });
    sub.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "t", qos: 1 }] });
    await sub.next("suback");
    sub.send({ cmd: "disconnect" });
    await settle();
    const pub = await b.connected(5);
    for (let i = 1; i <= 5; i++) publish(pub, "t", `m${i}`, 1, i);
    await settle();
    expect(acks(pub)).toEqual([1, 2, 3, 4, 5]);
    expect(b.broker.metrics.droppedQueueFull).toBe(3);
    expect(b.broker.metrics.publishesHeld).toBe(0);
  });

  test("fan-out: one slow subscriber holds the publisher's acks; the other gets every message meanwhile", async () => {
    b = await inProcessBroker({ mqtt: { max_queued_messages: 2 } });
    const slow = await slowSubscriber(b, "t", 1);
    const fast = await b.connected(5);
    fast.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "t", qos: 1 }] });
    await fast.next("suback");
    const pub = await b.connected(5);
    for (let i = 1; i <= 6; i++) publish(pub, "t", `m${i}`, 1, i);
    const got: string[] = [];
    for (let i = 0; i < 6; i++) {
      await settle();
      got.push(...ackAll(fast));
    }
    expect(got).toEqual(["m1", "m2", "m3", "m4", "m5", "m6"]);
    expect(acks(pub)).toEqual([1, 2, 3]);
    const slowGot: string[] = [];
    for (let i = 0; i < 8; i++) {
      slowGot.push(...ackAll(slow));
      await settle();
    }
    expect(slowGot).toEqual(["m1", "m2", "m3", "m4", "m5", "m6"]);
    expect(acks(pub)).toEqual([1, 2, 3, 4, 5, 6]);
  });

  test("shared subscription: with every member's queue full the message goes to a connected member and the publisher waits", async () => {
    b = await inProcessBroker({ mqtt: { max_queued_messages: 1 } });
    const a = await slowSubscriber(b, "$share/g/t", 1);
    const c = await slowSubscriber(b, "$share/g/t", 1);
    const pub = await b.connected(5);
    for (let i = 1; i <= 6; i++) publish(pub, "t", `m${i}`, 1, i);
    await settle();
    // Two in flight and two queued, one per member; m5 and m6 wait for room.
    expect(acks(pub)).toEqual([1, 2, 3, 4]);
    const got: string[] = [];
    for (let i = 0; i < 6; i++) {
      got.push(...ackAll(a), ...ackAll(c));
      await settle();
    }
    expect(got.sort()).toEqual(["m1", "m2", "m3", "m4", "m5", "m6"]);
    expect(acks(pub)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(b.broker.metrics.droppedQueueFull).toBe(0);
  });

  test("a publisher that disconnects while its ack is held was not acknowledged: it re-sends after reconnecting [MQTT-4.4.0-1]", async () => {
    b = await inProcessBroker({ mqtt: { max_queued_messages: 1 } });
    const sub = await slowSubscriber(b, "t", 1);
    const persistent = { clientId: "pub", clean: false, properties: { sessionExpiryInterval: 600 } };
    const pub = await b.connected(5, persistent);
    for (let i = 1; i <= 3; i++) publish(pub, "t", `m${i}`, 1, i);
    await settle();
    expect(acks(pub)).toEqual([1, 2]);
    pub.close();
    await settle();
    const again = await b.connected(5, persistent);
    again.send({
      cmd: "publish",
      topic: "t",
      payload: Buffer.from("m3"),
      qos: 1,
      messageId: 3,
      dup: true,
      retain: false,
    });
    const delivered: string[] = [];
    for (let i = 0; i < 5; i++) {
      delivered.push(...ackAll(sub));
      await settle();
    }
    expect(acks(again)).toEqual([3]);
    // At least once: m3 arrives (the first copy was queued before its publisher left).
    expect(delivered.slice(0, 3)).toEqual(["m1", "m2", "m3"]);
    expect(delivered.filter((m) => m !== "m3")).toEqual(["m1", "m2"]);
  });
});

describe("a 3.1.1 publisher past receive_maximum unacknowledged publishes", () => {
  test("is no longer read until half of them are acknowledged, and keep alive does not count that time [MQTT-3.1.2-22]", async () => {
    const store = new GatedStore();
    const g = await brokerOn(store, { mqtt: { receive_maximum: 4 } });
    const pub = g.open(4);
    await g.connect(pub, "pub311", 4, { clean: true, keepalive: 10 });
    store.gated = true; // every PUBACK waits for its commit
    for (let i = 1; i <= 10; i++) publish(pub, "t", `m${i}`, 1, i, 4);
    await settle();
    const appended = () => store.committed.flat().filter((m) => m.op === "append").length;
    // Four owe their PUBACK: Ferry stops reading; the other six wait in the socket.
    expect(appended()).toBe(4);
    // Far past 1.5 × keep alive, but Ferry is the one not reading: still connected.
    await g.clock.advance(60_000);
    expect(pub.closed).toBe(false);
    store.flush();
    await settle();
    // Acked, so read again; the rest come in (and are held behind their commits in turn).
    expect(acks(pub)).toEqual([1, 2, 3, 4]);
    for (let i = 0; i < 4; i++) {
      store.flush();
      await settle();
    }
    expect(appended()).toBe(10);
    expect(acks(pub)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    await g.clock.advance(16_000);
    expect(pub.closed).toBe(true); // now its silence is its own: keep alive applies again
  });
});
