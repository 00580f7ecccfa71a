/**
 * A QoS 0 flood at a subscriber that never reads (issue 13): each message is dropped for the
 * slow consumer before it becomes a message (nothing of it is held, not even for a moment),
 * counted as slow_consumer, and a publisher whose messages nobody takes is paced — its socket
 * not read — once it passed WASTE_BURST bytes, until the clock earns the rate back. Messages
 * that anyone takes are never paced. In process, on a manual clock.
 */
import { afterEach, describe, expect, test } from "bun:test";
import type { IPublishPacket } from "mqtt-packet";
import { WASTE_BURST, WASTE_RATE } from "../src/core/inbound-flow.ts";
import { type InProcessBroker, inProcessBroker } from "./helpers/in-process-broker.ts";
import { settle } from "./helpers/manual-clock.ts";
import type { MemoryClient } from "./helpers/memory-client.ts";

let b: InProcessBroker | undefined;
afterEach(async () => {
  await b?.stop();
  b = undefined;
});

/** 64-byte QoS 0 PUBLISHes to `topic`, as one write of `count` packets (3.1.1 framing). */
function flood(topic: string, count: number): Buffer {
  const one = Buffer.concat([
    Buffer.from([0x30, 2 + topic.length + 64, 0, topic.length]),
    Buffer.from(topic),
    Buffer.alloc(64, 0x61),
  ]);
  return Buffer.concat(Array.from({ length: count }, () => one));
}

/** A 3.1.1 client subscribed to `topic` at QoS 0 that then stops reading (its end is paused). */
async function stuckSubscriber(topic: string): Promise<MemoryClient> {
  const sub = await b!.connected(4, { clientId: `stuck-${topic}` });
  sub.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 0 }] }, 4);
  await sub.next("suback");
  sub.conn.pause();
  return sub;
}

const publishes = (c: MemoryClient) => c.packets.filter((p): p is IPublishPacket => p.cmd === "publish");

describe("QoS 0 messages nobody can take", () => {
  test("are dropped as slow consumers before anything of them is held, and their publisher is paced", async () => {
    // The slow-consumer bound at its floor (4 KiB), so a few messages fill the stuck subscriber.
    b = await inProcessBroker({ mqtt: { max_buffered_bytes: 4096 }, limits: { max_output_bytes: 4096 } });
    const m = b.broker.metrics;
    await stuckSubscriber("stuck");
    const pub = await b.connected(4, { clientId: "flooder" });
    // Fill the subscriber's output past the bound (these messages are routed the full way).
    pub.conn.write(flood("stuck", 100));
    await settle();
    const baseline = m.droppedSlowConsumer;
    expect(baseline).toBeGreaterThan(0);
    b.broker.budget.resetPeak();
    const peakBefore = b.broker.budget.peak;
    const received = m.messagesReceived[0];

    // 1.5 bursts' worth, in writes of ~36 KiB: the first burst is read, then reading stops.
    const perWrite = 500;
    const packet = 2 + 2 + "stuck".length + 64;
    const writes = Math.ceil((1.5 * WASTE_BURST) / (perWrite * packet));
    for (let i = 0; i < writes; i++) pub.conn.write(flood("stuck", perWrite));
    await settle();
    const handled = m.messagesReceived[0] - received;
    // Paced: past the burst, the rest waits unread (at most the write that crossed it is handled).
    expect(m.pacedPublishers).toBe(1);
    expect(handled * packet).toBeGreaterThanOrEqual(WASTE_BURST);
    expect(handled * packet).toBeLessThanOrEqual(WASTE_BURST + perWrite * packet);
    expect(handled).toBeLessThan(writes * perWrite);
    // Every one was dropped for the slow consumer, and none became a message the budget held.
    expect(m.droppedSlowConsumer - baseline).toBe(handled);
    expect(b.broker.budget.peak).toBe(peakBefore);
    expect(b.broker.budget.messages).toBe(0);

    // Time earns the rate back: reading resumes, and the rest is taken.
    await b.advance(Math.ceil((1000 * WASTE_BURST) / WASTE_RATE));
    expect(m.messagesReceived[0] - received).toBe(writes * perWrite);
    expect(m.droppedSlowConsumer - baseline).toBe(writes * perWrite);
  });

  test("a publisher whose messages a reading subscriber takes is not paced, the stuck one's drops are counted", async () => {
    b = await inProcessBroker({ mqtt: { max_buffered_bytes: 4096 }, limits: { max_output_bytes: 4096 } });
    const m = b.broker.metrics;
    await stuckSubscriber("both");
    const reader = await b.connected(4, { clientId: "reader" });
    reader.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "both", qos: 0 }] }, 4);
    await reader.next("suback");
    const pub = await b.connected(4, { clientId: "publisher" });
    const count = Math.ceil((2 * WASTE_BURST) / (2 + 2 + 4 + 64));
    // Writes the reader can take one at a time (50 × 72 bytes is under its 4 KiB bound).
    for (let sent = 0; sent < count; sent += 50) {
      pub.conn.write(flood("both", Math.min(50, count - sent)));
      await settle();
    }
    expect(m.messagesReceived[0]).toBe(count);
    expect(m.pacedPublishers).toBe(0);
    expect(publishes(reader).length).toBe(count);
    // The stuck one got what fit under its bound, and lost the rest (counted).
    expect(m.droppedSlowConsumer).toBeGreaterThan(count - 100);
  });

  test("a topic nobody subscribes to is not a flood to pace", async () => {
    b = await inProcessBroker();
    const m = b.broker.metrics;
    const pub = await b.connected(4, { clientId: "lonely" });
    const count = Math.ceil((2 * WASTE_BURST) / (2 + 2 + 6 + 64));
    for (let sent = 0; sent < count; sent += 500) pub.conn.write(flood("nobody", Math.min(500, count - sent)));
    await settle();
    expect(m.messagesReceived[0]).toBe(count);
    expect(m.pacedPublishers).toBe(0);
    expect(m.droppedSlowConsumer).toBe(0);
    expect(b.broker.budget.messages).toBe(0);
  });
});
