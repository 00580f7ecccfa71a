import { afterEach, describe, expect, test } from "bun:test";
import { runStoreContract } from "../../src/store/contract.ts";
import { MemoryStore } from "../../src/store/memory-store.ts";
import { MinHeap } from "../../src/store/min-heap.ts";
import type { Message, Mutation } from "../../src/store/store.ts";

runStoreContract(
  "memory",
  (options) => {
    // State lives in the instance, so "reopening" is opening the same one again.
    const store = new MemoryStore(options?.tightRetention ? 100 : undefined);
    return Promise.resolve({ store, reopen: () => Promise.resolve(store), cleanup: () => store.close() });
  },
  { describe, test, expect, afterEach },
);

describe("MemoryStore trimming", () => {
  const msg = (offset: number): Message => ({
    offset,
    topic: "t",
    payload: new Uint8Array(8),
    qos: 1,
    retain: false,
    receivedAt: 0,
    origin: "local",
  });

  /**
   * A session owes `n` messages (each appended and queued in its own commit, as a live
   * broker does), then acknowledges them one per commit. Returns trimming's candidate
   * examinations per message.
   */
  async function stepsPerMessage(n: number): Promise<number> {
    const store = new MemoryStore(100);
    await store.open();
    await store.commit([{
      op: "session-put",
      session: { clientId: "c", expiryInterval: 60, protocolVersion: 5, subscriptions: [] },
    }]);
    for (let o = 1; o <= n; o++) {
      await store.commit([
        { op: "append", message: msg(o) },
        { op: "delivery-put", delivery: { clientId: "c", offset: o, qos: 1, retain: false, phase: "queued" } },
      ]);
    }
    for (let o = 1; o <= n; o++) await store.commit([{ op: "delivery-delete-offset", clientId: "c", offset: o }]);
    expect(store.stats().messages).toBeLessThanOrEqual(110); // the cap and its slack still hold
    return store.trimSteps / n;
  }

  // Walking the log from its oldest entry on every commit while a backlog was owed made
  // a 40,000-message drain take 50 s (issue 19); the work per message must not grow with it.
  test("work per message stays constant as the owed backlog grows", async () => {
    const small = await stepsPerMessage(2_000);
    const large = await stepsPerMessage(16_000);
    expect(large).toBeLessThan(4);
    expect(large).toBeLessThan(small * 1.5 + 0.5);
  });

  test("the oldest unreferenced messages go first", async () => {
    const store = new MemoryStore(10);
    await store.open();
    await store.commit([{
      op: "session-put",
      session: { clientId: "c", expiryInterval: 60, protocolVersion: 5, subscriptions: [] },
    }]);
    const owed = new Set([2, 5, 7]);
    for (let o = 1; o <= 12; o++) {
      const list: Mutation[] = [{ op: "append", message: msg(o) }];
      if (owed.has(o)) {
        list.push({
          op: "delivery-put",
          delivery: { clientId: "c", offset: o, qos: 1, retain: false, phase: "queued" },
        });
      }
      await store.commit(list);
    }
    // 12 > 10 + 1: trimmed down to 10, dropping the two oldest unreferenced (1 and 3).
    expect((await store.readLog(0, 100)).map((m) => m.offset)).toEqual([2, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    await store.commit([{ op: "delivery-delete-offset", clientId: "c", offset: 2 }]);
    await store.commit([{ op: "append", message: msg(13) }, { op: "append", message: msg(14) }]);
    // 12 again: 2 is unreferenced now and the oldest, then 4.
    expect((await store.readLog(0, 100)).map((m) => m.offset)).toEqual([5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
  });
});

describe("MinHeap", () => {
  test("pops in ascending order, duplicates included, against a sort", () => {
    let seed = 7;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % 1000;
    const heap = new MinHeap();
    const mirror: number[] = [];
    for (let round = 0; round < 2000; round++) {
      if (rand() < 600 || heap.size === 0) {
        const v = rand();
        heap.push(v);
        mirror.push(v);
      } else {
        mirror.sort((a, b) => a - b);
        expect(heap.pop()).toBe(mirror.shift()!);
      }
      expect(heap.size).toBe(mirror.length);
    }
    expect(() => new MinHeap().pop()).toThrow(RangeError);
  });
});
