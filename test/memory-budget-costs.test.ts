/**
 * The memory budget charges fixed costs for what it cannot weigh (src/core/memory-budget.ts,
 * COSTS): these tests measure them on this runtime — the JavaScript heap, ArrayBuffer
 * contents included, after a full collection, per object, over many objects — and fail
 * when a charge is below what it measures, which would let the budget undercount.
 */
import { describe, expect, test } from "bun:test";
import { heapStats } from "bun:jsc";
import { Pending } from "../src/core/delivery-queue.ts";
import { bodyCost, COSTS } from "../src/core/memory-budget.ts";
import type { Outbound } from "../src/core/session.ts";
import { DeliveryQueue } from "../src/core/delivery-queue.ts";
import type { Message } from "../src/store/store.ts";
import mqttPacket from "mqtt-packet";
import { inProcessBroker } from "./helpers/in-process-broker.ts";
import { settle } from "./helpers/manual-clock.ts";
import { memoryConnectionPair } from "./helpers/memory-connection.ts";

/** Heap bytes (objects and ArrayBuffer contents) after a full collection. */
function heap(): number {
  Bun.gc(true);
  Bun.gc(true);
  return heapStats().heapSize;
}

/** Bytes per item that `make(n)` keeps alive, over `n` items. */
function perItem(n: number, make: (n: number) => unknown): number {
  const before = heap();
  const kept = make(n);
  const after = heap();
  // Keep `kept` alive until measured.
  expect(kept).toBeDefined();
  return (after - before) / n;
}

const N = 50_000;

/** A message as inbound-flow.ts makes one: its payload copied out of the read. */
function message(i: number, size: number): Message {
  const payload = Buffer.allocUnsafeSlow(size);
  payload.fill(i & 0xff);
  return {
    offset: i + 1,
    topic: "sensors/line-3/temperature",
    payload,
    qos: 1,
    retain: false,
    receivedAt: Date.now(),
    origin: "client-17",
  };
}

describe("the memory budget's fixed costs cover what they stand for", () => {
  test("a message body: the Message, its Buffer and ArrayBuffer (64 B payloads)", () => {
    const measured = perItem(N, (n) => Array.from({ length: n }, (_, i) => message(i, 64)));
    const m = message(0, 64);
    // The array slot holding each is counted too: an overestimate of the message alone.
    expect(bodyCost(m)).toBeGreaterThanOrEqual(measured);
  });

  test("a queued delivery: its Outbound and its slot in the queue", () => {
    const shared = message(0, 64);
    const measured = perItem(N, (n) => {
      const q = new DeliveryQueue();
      for (let i = 0; i < n; i++) {
        const o: Outbound = {
          message: shared,
          qos: 1,
          retain: false,
          subscriptionIds: undefined,
          packetId: 0,
          phase: "queued",
          shareKey: undefined,
          cache: undefined,
        };
        q.push(o);
      }
      return q;
    });
    expect(COSTS.entry).toBeGreaterThanOrEqual(measured);
  });

  test("a pending delivery (body in the store): its Pending and its slot in the queue", () => {
    const measured = perItem(N, (n) => {
      const q = new DeliveryQueue();
      for (let i = 0; i < n; i++) q.push(new Pending(i + 1, undefined, 64, 1, false, undefined));
      return q;
    });
    expect(COSTS.entry).toBeGreaterThanOrEqual(measured);
  });

  for (const connected of [false, true]) {
    test(
      `${
        connected ? "a connected client" : "an offline persistent session"
      } with one subscription (memory store: its records too)`,
      async () => {
        const b = await inProcessBroker({});
        // Raw connections (no test client keeping timers and received bytes): what stays is the broker's.
        const handler = { onData() {}, onClose() {} };
        const open = async (i: number) => {
          const { server, client } = memoryConnectionPair(`127.0.0.1:${20_000 + i}`);
          client.handler = handler;
          server.handler = b.broker.accept(server);
          const v5 = { protocolVersion: 5 } as const;
          client.write(mqttPacket.generate({
            cmd: "connect",
            protocolId: "MQTT",
            protocolVersion: 5,
            clean: false,
            keepalive: 0,
            clientId: `device-${i.toString().padStart(6, "0")}`,
            properties: { sessionExpiryInterval: 3600 },
          }, v5));
          client.write(mqttPacket.generate({
            cmd: "subscribe",
            messageId: 1,
            subscriptions: [{ topic: `devices/${i}/commands/#`, qos: 1 }],
          }, v5));
          await settle();
          if (!connected) client.close();
        };
        try {
          await open(99_999);
          await settle();
          const n = 2_000;
          const before = heap();
          const chargedBefore = b.broker.budget.clients;
          for (let i = 0; i < n; i++) await open(i);
          await settle();
          const measured = (heap() - before) / n;
          const charged = (b.broker.budget.clients - chargedBefore) / n;
          expect(b.broker.sessions.size).toBe(n + 1);
          expect(charged).toBeGreaterThanOrEqual(measured);
        } finally {
          await b.stop();
        }
      },
      60_000,
    );
  }
});
