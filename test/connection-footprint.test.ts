/**
 * What an idle connection keeps on the JavaScript heap (issue 13, part 7): objects a
 * connection only needs once it does something are made then, not at CONNECT. Counted by
 * class in a heap snapshot after a full collection (bun:jsc's heapStats counts instances
 * of JavaScript classes as "Object"), on the in-process tier: no sockets, so the figures
 * are Ferry's own objects.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { estimateShallowMemoryUsageOf } from "bun:jsc";
import { type BunSocketConnection, listenTcp } from "../src/runtime/bun/tcp-listener.ts";
import { type InProcessBroker, inProcessBroker } from "./helpers/in-process-broker.ts";
import type { MemoryClient } from "./helpers/memory-client.ts";

const N = 400;

/** Live objects by class name. */
function liveByClass(): Record<string, number> {
  Bun.gc(true);
  const snapshot = Bun.generateHeapSnapshot() as unknown as { nodes: number[]; nodeClassNames: string[] };
  const counts: Record<string, number> = {};
  // JavaScriptCore's snapshot: four numbers per node (id, size, class name index, flags).
  for (let i = 2; i < snapshot.nodes.length; i += 4) {
    const name = snapshot.nodeClassNames[snapshot.nodes[i]!]!;
    counts[name] = (counts[name] ?? 0) + 1;
  }
  return counts;
}

describe("an idle connection", () => {
  let b: InProcessBroker;
  const clients: MemoryClient[] = [];
  let before: Record<string, number>;
  let after: Record<string, number>;
  const grew = (name: string) => (after[name] ?? 0) - (before[name] ?? 0);

  beforeAll(async () => {
    b = await inProcessBroker();
    before = liveByClass();
    for (let i = 0; i < N; i++) {
      clients.push(await b.connected(i % 2 === 0 ? 4 : 5, { clientId: `idle-${i}`, clean: true }));
    }
    after = liveByClass();
  });
  afterAll(() => b.stop());

  test("has its connection and session, and they are the ones counted", () => {
    expect(b.broker.clients.size).toBe(N);
    expect(grew("ClientConnection")).toBe(N);
    expect(grew("Session")).toBe(N);
  });

  // JavaScriptCore gives an object of 19 to 26 slots a 224-byte cell, of 27 to 30 a
  // 256-byte one: ClientConnection's boolean flags share one number to stay in the former.
  test("keeps its connection and session in 224-byte objects", () => {
    const c = [...b.broker.clients][0]!;
    expect(estimateShallowMemoryUsageOf(c)).toBeLessThanOrEqual(224);
    expect(estimateShallowMemoryUsageOf(c.session!)).toBeLessThanOrEqual(224);
  });

  test("holds no delivery queue until a message waits for room in its window", async () => {
    expect(grew("DeliveryQueue")).toBeLessThan(N / 10);
    // The first message that waits makes one: a QoS 1 subscriber that does not
    // acknowledge, and one message more than its in-flight window.
    const sub = await b.subscriber("footprint/t", 1);
    const pub = await b.connected(4, { clientId: "footprint-pub" });
    const window = b.config.mqtt.max_inflight;
    for (let i = 1; i <= window + 1; i++) {
      pub.send({
        cmd: "publish",
        topic: "footprint/t",
        payload: Buffer.from("x"),
        qos: 1,
        messageId: i,
        dup: false,
        retain: false,
      }, 4);
    }
    for (let i = 0; i < window; i++) await sub.next("publish");
    await pub.roundTrip();
    const waiting = [...b.broker.sessions.values()].filter((s) => s.queuedCount > 0);
    expect(waiting.map((s) => s.queuedCount)).toEqual([1]);
    expect(liveByClass().DeliveryQueue ?? 0).toBe((before.DeliveryQueue ?? 0) + 1);
  });
});

describe("Bun's TCP adapter", () => {
  // Eight slots: JavaScriptCore's 80-byte cell. One slot more and it takes a 112-byte one
  // (its size classes step from 80 to 112), as it did with the port and the write queue's
  // four fields in slots of their own.
  test("keeps an idle connection in an 80-byte object", async () => {
    const accepted = Promise.withResolvers<BunSocketConnection>();
    const listener = listenTcp("127.0.0.1", 0, (c) => {
      accepted.resolve(c as BunSocketConnection);
      return { onData() {}, onClose() {} };
    });
    const socket = await Bun.connect({ hostname: "127.0.0.1", port: listener.port, socket: { data() {} } });
    try {
      const conn = await accepted.promise;
      expect(estimateShallowMemoryUsageOf(conn)).toBeLessThanOrEqual(80);
      // The port folded into the state number still names the peer.
      expect(conn.remoteAddress).toBe(`127.0.0.1:${socket.localPort}`);
    } finally {
      socket.end();
      listener.stop();
    }
  });
});

describe("Bun's TCP adapter, closing", () => {
  test("reads at most a little of what a peer sends during the linger after a close, then stops", async () => {
    let conn: BunSocketConnection | undefined;
    const listener = listenTcp("127.0.0.1", 0, (c) => {
      conn = c as BunSocketConnection;
      // Closed at its first bytes, as the core closes a client for a malformed packet:
      // nothing is owed, so the linger starts at once.
      return { onData: () => conn!.close(), onClose() {} };
    });
    const net = await import("node:net");
    // Half-open allowed: a flooding peer goes on sending after Ferry's FIN.
    const client = net.connect({ port: listener.port, host: "127.0.0.1", allowHalfOpen: true });
    client.on("error", () => {});
    await new Promise<void>((r) => client.once("connect", () => r()));
    try {
      const chunk = new Uint8Array(64 * 1024).fill(0xc0);
      const until = Date.now() + 1000;
      while (Date.now() < until && !client.destroyed) {
        for (let i = 0; i < 64 && !client.destroyed && client.writableLength < 1024 * 1024; i++) client.write(chunk);
        await new Promise((r) => setTimeout(r, 2));
      }
      // What left the client: the kernel's buffers (4-5 MB on loopback here) and the 64 KiB
      // the linger drops. Read on for the whole 100 ms linger it was 43 MB here.
      const taken = client.bytesWritten - client.writableLength;
      expect(taken).toBeLessThan(16 * 1024 * 1024);
    } finally {
      client.destroy();
      listener.stop();
    }
  });
});
