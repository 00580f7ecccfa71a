import { afterEach, describe, expect, jest, test } from "bun:test";
import { join } from "node:path";
import { spawnSqliteThread } from "../../src/runtime/bun/sqlite-thread-spawn.ts";
import { runStoreContract } from "../../src/store/contract.ts";
import { decodeMutationLists, type EncodedLists } from "../../src/store/mutation-codec.ts";
import { RecoveryBuilder } from "../../src/store/recovery-builder.ts";
import { type StoreThread, ThreadedSqliteStore } from "../../src/store/sqlite/threaded-store.ts";
import { type Message, StoreFullError } from "../../src/store/store.ts";
import { fileStoreFactory, tempDir } from "./sqlite-helpers.ts";

// The same contract as the in-thread stores, through a real Bun Worker. Age trimming is
// left out: it needs an injected clock, and a function cannot cross to a thread.
for (const durability of ["commit", "periodic"] as const) {
  runStoreContract(
    `sqlite on its own thread (${durability})`,
    fileStoreFactory((path, { maxBytes }) =>
      new ThreadedSqliteStore(spawnSqliteThread(), { path, durability, maxBytes })
    ),
    { describe, test, expect, afterEach },
  );
}

const message = (offset: number, bytes = 16): Message => ({
  offset,
  topic: `t/${offset}`,
  payload: new Uint8Array(bytes).fill(offset & 0xff),
  qos: 1,
  retain: false,
  receivedAt: 1_700_000_000_000 + offset,
  origin: "c",
});

describe("sqlite on its own thread", () => {
  test("lists committed in one turn share one transaction, and each settles on its own", async () => {
    const { dir, remove } = tempDir();
    const store = new ThreadedSqliteStore(spawnSqliteThread(), { path: join(dir, "ferry.db"), durability: "commit" });
    try {
      await store.open();
      const before = store.stats().transactions;
      await Promise.all(
        Array.from({ length: 50 }, (_, i) => store.commit([{ op: "append", message: message(i + 1) }])),
      );
      expect(store.stats().messages).toBe(50);
      // 50 lists from one turn cross in one message and commit together.
      expect(store.stats().transactions - before).toBe(1);
      const log = await store.readLog(1, 100);
      expect(log.map((m) => m.offset)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
      expect(log[7]!.payload).toEqual(new Uint8Array(16).fill(8));
    } finally {
      await store.close();
      remove();
    }
  });

  test("a refused list rejects with StoreFullError while the others in its batch commit", async () => {
    const { dir, remove } = tempDir();
    const path = join(dir, "ferry.db");
    // A quota far below an empty database's size: every append is refused, acks are not.
    const store = new ThreadedSqliteStore(spawnSqliteThread(), { path, durability: "commit", maxBytes: 1024 });
    try {
      await store.open();
      const appended = store.commit([{ op: "append", message: message(1) }]);
      const cursor = store.commit([{ op: "cursor-put", name: "up", offset: 0 }]);
      const refusal = await appended.then(() => undefined, (e: unknown) => e);
      expect(refusal).toBeInstanceOf(StoreFullError);
      await cursor;
      expect(store.stats().full).toBe(true);
    } finally {
      await store.close();
      remove();
    }
  });

  test("a store that cannot open rejects open() and ends its thread", async () => {
    const { dir, remove } = tempDir();
    const path = join(dir, "not-a-db");
    await Bun.write(path, "this is not SQLite".repeat(100));
    const store = new ThreadedSqliteStore(spawnSqliteThread(), { path, durability: "commit" });
    try {
      await expect(store.open()).rejects.toThrow(/not a SQLite database/);
    } finally {
      await store.close();
      remove();
    }
  });

  test("if the thread dies, waiting and later calls fail and onFatal is told once", async () => {
    // A stand-in thread: the event-loop side is pure logic, so a fake end is enough here.
    const posted: unknown[] = [];
    let terminated = 0;
    const thread: StoreThread = {
      onmessage: null,
      onerror: null,
      postMessage: (m: unknown) => posted.push(m),
      terminate: () => terminated++,
    };
    const fatal: Error[] = [];
    const store = new ThreadedSqliteStore(thread, {
      path: "/x/ferry.db",
      durability: "commit",
      onFatal: (e) => fatal.push(e),
    });
    const opening = store.open();
    thread.onmessage!({
      data: {
        t: "opened",
        recovered: new RecoveryBuilder().finish({ nextOffset: 1, cursors: {} }),
        stats: store.stats(),
      },
    } as MessageEvent);
    await opening;
    const pending = store.commit([{ op: "append", message: message(1) }]);
    thread.onerror!({ message: "boom", preventDefault() {} } as ErrorEvent);
    await expect(pending).rejects.toThrow(/storage thread failed: boom/);
    await expect(store.commit([{ op: "append", message: message(2) }])).rejects.toThrow(/boom/);
    await expect(store.readLog(1, 10)).rejects.toThrow(/boom/);
    expect(fatal.length).toBe(1);
    expect(terminated).toBeGreaterThan(0);
    await store.close();
  });

  test("periodic: commits resolve at once without waiting for the thread, and a failed flush refuses appends until one succeeds", async () => {
    // A stand-in thread that never answers a commit: the event-loop side alone decides.
    const posted: Array<{ t: string }> = [];
    const thread: StoreThread = {
      onmessage: null,
      onerror: null,
      postMessage: (m: unknown) => posted.push(m as { t: string }),
      terminate: () => {},
    };
    const reported: Error[] = [];
    const store = new ThreadedSqliteStore(thread, {
      path: "/x/ferry.db",
      durability: "periodic",
      onError: (e) => reported.push(e),
    });
    const stats = { ...store.stats() };
    const opening = store.open();
    const reply = (data: unknown) => thread.onmessage!({ data } as MessageEvent);
    reply({ t: "opened", recovered: new RecoveryBuilder().finish({ nextOffset: 1, cursors: {} }), stats });
    await opening;
    await store.commit([{ op: "append", message: message(1) }]); // no answer needed
    reply({ t: "flushed", error: { name: "Error", message: "disk I/O error" }, stats });
    expect(reported.map((e) => e.message)).toEqual(["disk I/O error"]);
    await expect(store.commit([{ op: "append", message: message(2) }])).rejects.toThrow(/disk I\/O error/);
    await store.commit([{ op: "cursor-put", name: "u", offset: 1 }]); // no append: still taken
    reply({ t: "flushed", stats: { ...stats, full: true } });
    const refusal = await store.commit([{ op: "append", message: message(3) }]).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(refusal).toBeInstanceOf(StoreFullError);
    reply({ t: "flushed", stats });
    await store.commit([{ op: "append", message: message(4) }]);
    await new Promise((r) => setTimeout(r, 5));
    // The lists did go to the thread, batched per turn.
    expect(posted.filter((m) => m.t === "commit").length).toBeGreaterThan(0);
  });

  /** A store on a stand-in thread that records what is posted and answers only when told. */
  async function standIn(options: { commitWindowMs?: number } = {}) {
    const posted: Array<{ t: string; seq?: number; encoded?: EncodedLists }> = [];
    const thread: StoreThread = {
      onmessage: null,
      onerror: null,
      postMessage: (m: unknown) => posted.push(m as { t: string }),
      terminate: () => {},
    };
    const store = new ThreadedSqliteStore(thread, { path: "/x/ferry.db", durability: "commit", ...options });
    const stats = { ...store.stats() };
    const reply = (data: unknown) => thread.onmessage!({ data } as MessageEvent);
    const opening = store.open();
    reply({ t: "opened", recovered: new RecoveryBuilder().finish({ nextOffset: 1, cursors: {} }), stats });
    await opening;
    const commits = () => posted.filter((m) => m.t === "commit");
    /** Answers batch `i` as committed, giving its buffer back as the thread does. */
    const answer = (i: number) => {
      const batch = commits()[i]!;
      reply({ t: "committed", seq: batch.seq, outcomes: null, stats, buffer: batch.encoded!.buffer });
    };
    return { store, posted, commits, answer };
  }
  const nextTurn = () => new Promise<void>((r) => setImmediate(r));
  const offsets = (encoded: EncodedLists) =>
    decodeMutationLists(encoded).map((list) => list.map((m) => (m.op === "append" ? m.message.offset : -1)));

  test("one batch is in flight at a time: lists from later turns go together once it is answered, in its buffer", async () => {
    const { store, commits, answer } = await standIn();
    const first = store.commit([{ op: "append", message: message(1) }]);
    await nextTurn();
    expect(commits().length).toBe(1);
    const later = [2, 3, 4].map((n) => store.commit([{ op: "append", message: message(n) }]));
    await nextTurn();
    await nextTurn();
    expect(commits().length).toBe(1); // waiting for the answer, not posted turn by turn
    answer(0);
    await first;
    expect(commits().length).toBe(2);
    expect(offsets(commits()[1]!.encoded!)).toEqual([[2], [3], [4]]);
    const fifth = store.commit([{ op: "append", message: message(5) }]);
    answer(1);
    await Promise.all(later);
    expect(commits().length).toBe(3);
    // The first batch's buffer came back with its answer and carries the third: two buffers
    // take turns, none is made per batch.
    expect(commits()[2]!.encoded!.buffer).toBe(commits()[0]!.encoded!.buffer);
    answer(2);
    await fifth;
  });

  test("a read sends what has gathered even while a batch is in flight, so the thread applies it before the read", async () => {
    const { store, posted, commits, answer } = await standIn();
    void store.commit([{ op: "append", message: message(1) }]);
    await nextTurn();
    void store.commit([{ op: "append", message: message(2) }]);
    void store.readMessages([2]);
    expect(posted.map((m) => m.t).slice(-3)).toEqual(["commit", "commit", "read-messages"]);
    expect(offsets(commits()[1]!.encoded!)).toEqual([[2]]);
    answer(0);
    answer(1);
  });

  test("with a commit window, lists arriving within it after a commit wait for its end (fake timers)", async () => {
    const { store, commits, answer } = await standIn({ commitWindowMs: 50 });
    jest.useFakeTimers();
    try {
      const first = store.commit([{ op: "append", message: message(1) }]);
      await nextTurn();
      expect(commits().length).toBe(1); // no commit before it: no window to wait for
      answer(0);
      await first;
      const second = store.commit([{ op: "append", message: message(2) }]);
      await nextTurn();
      jest.advanceTimersByTime(40);
      await nextTurn();
      expect(commits().length).toBe(1);
      jest.advanceTimersByTime(10);
      expect(commits().length).toBe(2);
      expect(offsets(commits()[1]!.encoded!)).toEqual([[2]]);
      answer(1);
      await second;
    } finally {
      jest.useRealTimers();
    }
  });

  test("it gathers while its commit window runs, and bookkeeping (sent marks, deletions) neither ends the window nor counts as company (fake timers)", async () => {
    const { store, commits, answer } = await standIn({ commitWindowMs: 50 });
    jest.useFakeTimers();
    try {
      expect(store.gathering()).toBe(false);
      const first = store.commit([{ op: "append", message: message(1) }]);
      expect(store.gathering()).toBe(true); // going at the end of this turn
      await nextTurn();
      answer(0);
      await first;
      expect(store.gathering()).toBe(true); // the window started with the first commit
      const held = [store.commit([{ op: "append", message: message(2) }])];
      for (let i = 0; i < 40; i++) {
        held.push(store.commit([{ op: "delivery-delete-offset", clientId: "s", offset: i }]));
      }
      await nextTurn();
      jest.advanceTimersByTime(49);
      await nextTurn();
      expect(commits().length).toBe(1); // 41 lists wait, 40 of them bookkeeping: no early commit
      jest.advanceTimersByTime(1);
      expect(commits().length).toBe(2);
      // One list of company in that window (the 40 bookkeeping lists are none): waiting did
      // not pay, so no window starts with this commit.
      expect(store.gathering()).toBe(false);
      answer(1);
      await Promise.all(held);
    } finally {
      jest.useRealTimers();
    }
  });
});
