/**
 * The resident watch's garbage bound (issue 13, the memory budget's RSS): a full collection
 * whenever the process's resident size grew by the headroom over what it was after the last
 * one, looked at every MiB read from clients, at most every 100 ms, never when the budget is
 * off. In process, on a manual clock, with the resident size and the collector played by the
 * test (a real flood's RSS is bench-memory's row *budget*, not a test).
 */
import { describe, expect, test } from "bun:test";
import type { IPublishPacket } from "mqtt-packet";
import { brokerOptionsFrom } from "../src/config/load.ts";
import { Broker } from "../src/core/broker.ts";
import { silentLogger } from "../src/core/logger.ts";
import { MemoryBudget } from "../src/core/memory-budget.ts";
import {
  garbageHeadroom,
  MIN_COLLECTION_GAP_MS,
  ResidentWatch,
  SAMPLE_EVERY_BYTES,
} from "../src/core/resident-watch.ts";
import { renderMetrics } from "../src/admin/metrics.ts";
import { takeSnapshot } from "../src/admin/metrics-snapshot.ts";
import { MemoryStore } from "../src/store/memory-store.ts";
import { testConfig } from "./helpers/broker.ts";
import { ManualClock, settle } from "./helpers/manual-clock.ts";
import { MemoryClient } from "./helpers/memory-client.ts";
import { memoryConnectionPair } from "./helpers/memory-connection.ts";
import { connectPacket } from "./helpers/raw-client.ts";

const MiB = 1024 * 1024;

/** A watch over a played RSS: `collect` sets it to what the test says survives. */
function played(limit: number, opts: { survives?: () => number; collector?: boolean } = {}) {
  const clock = new ManualClock();
  const state = { rss: 40 * MiB, looks: 0, collections: 0 };
  const budget = new MemoryBudget(limit, clock);
  const watch = new ResidentWatch(
    () => {
      state.looks++;
      return state.rss;
    },
    budget,
    silentLogger,
    clock,
    opts.collector === false ? undefined : () => {
      state.collections++;
      if (opts.survives) state.rss = opts.survives();
    },
  );
  watch.start();
  return { clock, state, watch };
}

describe("the garbage bound", () => {
  test("the headroom is an eighth of the budget, between 8 and 64 MiB", () => {
    expect(garbageHeadroom(128 * MiB)).toBe(16 * MiB);
    expect(garbageHeadroom(16 * MiB)).toBe(8 * MiB);
    expect(garbageHeadroom(4096 * MiB)).toBe(64 * MiB);
  });

  test("collects once RSS grew by more than the headroom over its floor, and starts again from what survived", async () => {
    const { clock, state, watch } = played(128 * MiB, { survives: () => 44 * MiB });
    let read = 0;
    const readMiB = () => watch.onRead(read += SAMPLE_EVERY_BYTES);

    state.rss = 56 * MiB; // +16: not more than the headroom
    readMiB();
    expect(state.collections).toBe(0);
    state.rss = 57 * MiB;
    readMiB();
    expect(state.collections).toBe(1);
    expect(watch.collections).toBe(1);

    // From the 44 MiB that survived: 60 is +16, 61 is more.
    await clock.advance(MIN_COLLECTION_GAP_MS);
    state.rss = 60 * MiB;
    readMiB();
    expect(state.collections).toBe(1);
    state.rss = 61 * MiB;
    readMiB();
    expect(state.collections).toBe(2);
  });

  test("looks at RSS once per MiB read, not per read", () => {
    const { state, watch } = played(128 * MiB);
    const before = state.looks;
    for (let received = 1000; received < SAMPLE_EVERY_BYTES; received += 1000) watch.onRead(received);
    expect(state.looks).toBe(before);
    watch.onRead(SAMPLE_EVERY_BYTES);
    expect(state.looks).toBe(before + 1);
    watch.onRead(SAMPLE_EVERY_BYTES + 1000);
    expect(state.looks).toBe(before + 1);
  });

  test(`asks at most once per ${MIN_COLLECTION_GAP_MS} ms however fast RSS grows`, async () => {
    const { clock, state, watch } = played(128 * MiB, { survives: () => 40 * MiB });
    let read = 0;
    for (let i = 0; i < 50; i++) {
      state.rss = 200 * MiB;
      watch.onRead(read += SAMPLE_EVERY_BYTES);
      await clock.advance(10);
    }
    // 500 ms of looks, every one of them over.
    expect(state.collections).toBe(5);
  });

  test("memory held on purpose (a queue filling) costs one collection per headroom it grows by, not one per look", async () => {
    // Nothing is garbage: a collection leaves RSS where it was.
    const { clock, state, watch } = played(128 * MiB);
    let read = 0;
    for (let i = 0; i < 64; i++) {
      state.rss += MiB;
      watch.onRead(read += SAMPLE_EVERY_BYTES);
      await clock.advance(MIN_COLLECTION_GAP_MS);
    }
    expect(state.collections).toBe(Math.floor(64 / 17));
  });

  test("the floor follows RSS down (the allocator gives pages back after a collection)", async () => {
    const { clock, state, watch } = played(128 * MiB, { survives: () => 80 * MiB });
    let read = 0;
    state.rss = 100 * MiB;
    watch.onRead(read += SAMPLE_EVERY_BYTES);
    expect(state.collections).toBe(1); // 80 MiB right after it
    await clock.advance(MIN_COLLECTION_GAP_MS);
    state.rss = 50 * MiB; // given back since
    watch.onRead(read += SAMPLE_EVERY_BYTES);
    state.rss = 67 * MiB; // +17 over 50
    watch.onRead(read += SAMPLE_EVERY_BYTES);
    expect(state.collections).toBe(2);
  });

  test("the broker's once-a-second sweep looks too", () => {
    const { state, watch } = played(128 * MiB);
    state.rss = 100 * MiB;
    watch.check();
    expect(state.collections).toBe(1);
  });

  test("nothing is collected when the budget is off (max_memory 0) or the runtime cannot collect", () => {
    for (const p of [played(0), played(128 * MiB, { collector: false })]) {
      p.state.rss = 1024 * MiB;
      p.watch.onRead(SAMPLE_EVERY_BYTES);
      p.watch.check();
      expect(p.state.collections).toBe(0);
      expect(p.watch.collections).toBe(0);
    }
  });
});

describe("wired into the broker", () => {
  test("a client's PUBLISHes make it look, and the collections show in the metrics", async () => {
    const clock = new ManualClock();
    let collections = 0;
    // Garbage: four bytes of RSS per byte read, until collected.
    let base = 40 * MiB;
    let garbageFrom = 0;
    const broker: Broker = new Broker({
      options: brokerOptionsFrom(testConfig({ limits: { max_memory: 128 * MiB } }), "test"),
      store: new MemoryStore(),
      clock,
      logger: silentLogger,
      residentBytes: (): number => base + 4 * (broker.metrics.bytesReceived - garbageFrom),
      collectGarbage: () => {
        collections++;
        garbageFrom = broker.metrics.bytesReceived;
        base += 1024; // a little survives
      },
    });
    await broker.start();
    try {
      const { server, client } = memoryConnectionPair("127.0.0.1:1");
      const raw = new MemoryClient(client, 4);
      server.handler = broker.accept(server);
      raw.send(connectPacket(4, { clientId: "flood" }), 4);
      await raw.next("connack");
      const payload = Buffer.alloc(64 * 1024, 0x61);
      // 20 MiB in 64 KiB QoS 0 messages to nobody: 80 MiB of played garbage.
      for (let i = 0; i < 320; i++) {
        raw.send({ cmd: "publish", topic: "t", payload, qos: 0, retain: false, dup: false } as IPublishPacket, 4);
        if (i % 16 === 15) {
          await settle();
          await clock.advance(MIN_COLLECTION_GAP_MS);
        }
      }
      await settle();
      // 16 MiB of headroom is 4 MiB read: 20 MiB read asks about five times.
      expect(collections).toBeGreaterThanOrEqual(4);
      expect(collections).toBeLessThanOrEqual(5);
      const snap = takeSnapshot({ broker, uplinks: () => [] });
      expect(snap.broker.memory.collections).toBe(collections);
      expect(renderMetrics(snap)).toContain(`ferry_memory_collections_total ${collections}`);
    } finally {
      await broker.close();
    }
  });
});
