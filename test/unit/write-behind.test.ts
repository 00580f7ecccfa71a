/**
 * WriteBehind's decisions against a recording store on the manual clock: bookkeeping waits
 * for the next commit (or its delay), except while the store gathers lists for a transaction
 * that is coming anyway, when it goes at once; order is kept either way.
 */
import { describe, expect, test } from "bun:test";
import { WriteBehind } from "../../src/core/write-behind.ts";
import { MemoryStore } from "../../src/store/memory-store.ts";
import type { Mutation } from "../../src/store/store.ts";
import { ManualClock } from "../helpers/manual-clock.ts";

/** A memory store that records each list handed to commit, and says whether it gathers. */
class RecordingStore extends MemoryStore {
  lists: string[][] = [];
  gathers = false;
  override commit(mutations: readonly Mutation[]): Promise<void> {
    this.lists.push(mutations.map((m) => m.op === "delivery-delete-offset" ? `done ${m.offset}` : m.op));
    return super.commit(mutations);
  }
  gathering(): boolean {
    return this.gathers;
  }
}

const done = (offset: number): Mutation => ({ op: "delivery-delete-offset", clientId: "sub", offset });
const counter: Mutation = { op: "counter-put", name: "n", value: 1 };

describe("WriteBehind", () => {
  test("bookkeeping waits for the next commit and goes just before it", async () => {
    const store = new RecordingStore();
    const writes = new WriteBehind(store, new ManualClock(), 5);
    await writes.open();
    void writes.later([done(1)]);
    void writes.later([done(2)]);
    expect(store.lists).toEqual([]);
    await writes.commit([counter]);
    expect(store.lists).toEqual([["done 1", "done 2"], ["counter-put"]]);
  });

  test("with nothing to ride on, bookkeeping goes after the delay", async () => {
    const store = new RecordingStore();
    const clock = new ManualClock();
    const writes = new WriteBehind(store, clock, 5);
    await writes.open();
    const durable = writes.later([done(1)]);
    await clock.advance(4);
    expect(store.lists).toEqual([]);
    await clock.advance(1);
    await durable;
    expect(store.lists).toEqual([["done 1"]]);
  });

  test("while the store gathers (a commit window runs), bookkeeping goes once the task is done, one list for the task", async () => {
    const store = new RecordingStore();
    const writes = new WriteBehind(store, new ManualClock(), 5);
    await writes.open();
    void writes.later([done(1)]);
    expect(store.lists).toEqual([]);
    store.gathers = true;
    void writes.later([done(2)]);
    const last = writes.later([done(3)]);
    expect(store.lists).toEqual([]);
    await last; // microtasks ran: handed over without the clock moving
    expect(store.lists).toEqual([["done 1", "done 2", "done 3"]]);
    // A commit in the same task takes what waits along first, as ever.
    void writes.later([done(4)]);
    await writes.commit([counter]);
    expect(store.lists.slice(1)).toEqual([["done 4"], ["counter-put"]]);
  });
});
