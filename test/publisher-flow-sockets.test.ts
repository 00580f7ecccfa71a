/**
 * Publisher flow control over real sockets with the `mqtt` npm client (issue 13): a
 * publisher flooding QoS 1 at an online subscriber that does not keep up gets no PUBACK
 * for a message that is then dropped, in every durability mode; its acks wait until the
 * subscriber's queue has room. The kernel logic is tested in process in
 * publisher-flow.test.ts.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startBroker } from "./helpers/broker.ts";
import { connect, eventually } from "./helpers/clients.ts";

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const TOTAL = 300;
const WINDOW = 5; // the subscriber's Receive Maximum
const BOUND = 20; // mqtt.max_queued_messages

describe("a publisher flooding QoS 1 at a subscriber that does not keep up", () => {
  for (const durability of ["memory", "periodic", "commit"] as const) {
    for (const version of [5, 4] as const) {
      test(`${durability}, publisher v${version === 5 ? "5" : "3.1.1"}: no PUBACK for a message that is then dropped; the acks wait for room`, async () => {
        const dataDir = mkdtempSync(join(tmpdir(), "ferry-flow-"));
        dirs.push(dataDir);
        const b = await startBroker({
          data_dir: dataDir,
          storage: { durability, flush_interval_ms: 50 },
          mqtt: { max_queued_messages: BOUND },
        });
        try {
          // The subscriber holds every acknowledgement until `flowing` (mqtt.js reads no further meanwhile).
          let flowing = false;
          const held: Array<() => void> = [];
          const received: string[] = [];
          const sub = await connect(b.url, {
            protocolVersion: 5,
            properties: { receiveMaximum: WINDOW },
            customHandleAcks: (_topic, message, _packet, done) => {
              received.push(message.toString());
              if (flowing) done(0);
              else held.push(() => done(0));
            },
          });
          await sub.client.subscribeAsync("flood/t", { qos: 1 });
          const pub = await connect(b.url, { protocolVersion: version });
          const acked = new Set<number>();
          const sends = Array.from(
            { length: TOTAL },
            (_, i) => pub.client.publishAsync("flood/t", `m${i}`, { qos: 1 }).then(() => acked.add(i)),
          );
          const m = b.server.broker.metrics;
          // Everything has arrived and been routed; the window and the queue are full.
          await eventually(
            () => m.messagesReceived[1] === TOTAL && acked.size >= WINDOW + BOUND && m.publishesHeld > 0,
            10_000,
            () => `received ${m.messagesReceived[1]}, acked ${acked.size}, held ${m.publishesHeld}`,
          );
          // Acknowledged: what is in flight and what fits the queue; the rest waits, none dropped.
          expect(acked.size).toBe(WINDOW + BOUND);
          expect(m.droppedQueueFull + m.droppedQueueBytes).toBe(0);
          flowing = true;
          for (const release of held.splice(0)) release();
          await Promise.all(sends);
          await eventually(() => received.length >= TOTAL, 10_000, () => `subscriber has ${received.length}`);
          // Every acknowledged message arrived, in order.
          expect(received).toEqual(Array.from({ length: TOTAL }, (_, i) => `m${i}`));
          expect(m.droppedQueueFull + m.droppedQueueBytes).toBe(0);
          await pub.end();
          await sub.end();
        } finally {
          await b.stop();
        }
      });
    }
  }
});
