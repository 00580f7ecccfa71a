/**
 * Recovery that streams (issue 13, part 5): after a restart the broker holds the retained
 * index and each session's queue as offsets and sizes, and reads bodies from SQLite a page
 * at a time as they are sent. These tests count the bodies the broker holds (no timing,
 * no RSS): a bound that would be the whole backlog if recovery loaded it.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Packet } from "mqtt-packet";
import { brokerOptionsFrom } from "../src/config/load.ts";
import { Broker } from "../src/core/broker.ts";
import { PAGE as MADE_AT_ONCE } from "../src/core/delivery-queue.ts";
import { COSTS } from "../src/core/memory-budget.ts";
import { silentLogger } from "../src/core/logger.ts";
import type { Session } from "../src/core/session.ts";
import { bunAdapters } from "../src/runtime/bun/server.ts";
import { bunSqliteDriver } from "../src/runtime/bun/sqlite-driver.ts";
import { openStoreWith } from "../src/runtime/open-store.ts";
import { SqliteStore } from "../src/store/sqlite/sqlite-store.ts";
import type { Message, Mutation, Store } from "../src/store/store.ts";
import { testConfig } from "./helpers/broker.ts";
import { ManualClock, settle } from "./helpers/manual-clock.ts";
import { MemoryClient } from "./helpers/memory-client.ts";
import { memoryConnectionPair } from "./helpers/memory-connection.ts";
import { tempDir } from "./store/sqlite-helpers.ts";

const RETAINED = 2_000;
const QUEUED = 2_000;
/** Ferry's default in-flight window (mqtt.max_inflight). */
const WINDOW = 64;
/** The loader's page and an offline session's resident entries, lowered so that small backlogs show the bound. */
const PAGE = 64;
const RESIDENT_WHEN_OFFLINE = 64;
/**
 * What a draining session may hold: its window in flight, plus what the loader read ahead
 * (a page, and the next one it starts before the first is used up).
 */
const RESIDENT_BOUND = WINDOW + 2 * PAGE;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

let cleanups: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  cleanups = [];
});

/** A data directory whose store holds retained messages and a backlog for the offline session "sleeper". */
async function preparedDataDir(retained: number, queued: number): Promise<string> {
  const { dir, remove } = tempDir("ferry-backlog-");
  cleanups.push(remove);
  const dataDir = join(dir, "data");
  mkdirSync(dataDir);
  const store = new SqliteStore(bunSqliteDriver, { path: join(dataDir, "ferry.db"), durability: "commit" });
  let offset = (await store.open()).nextOffset;
  const now = Date.UTC(2026, 0, 1);
  const msg = (topic: string, payload: string, retain: boolean): Message => ({
    offset: offset++,
    topic,
    payload: encoder.encode(payload),
    qos: 1,
    retain,
    receivedAt: now,
    origin: "prep",
  });
  await store.commit([{
    op: "session-put",
    session: {
      clientId: "sleeper",
      expiryInterval: 0xffffffff,
      protocolVersion: 5,
      disconnectedAt: now,
      subscriptions: [{ filter: "queued/#", qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0 }],
    },
  }]);
  const list: Mutation[] = [];
  for (let i = 0; i < retained; i++) {
    list.push({ op: "retain", topic: `retained/${i}`, message: msg(`retained/${i}`, `r${i}`, true) });
  }
  for (let i = 0; i < queued; i++) {
    const m = msg(`queued/${i % 10}`, `q${i}`, false);
    list.push({ op: "append", message: m });
    list.push({
      op: "delivery-put",
      delivery: { clientId: "sleeper", offset: m.offset, qos: 1, retain: false, phase: "queued" },
    });
  }
  await store.commit(list);
  await store.close();
  return dataDir;
}

/** A store that counts the bodies it hands out, and can hold reads back until released. */
class WatchedStore implements Store {
  bodiesRead = 0;
  #gate: Promise<void> | undefined;
  #open: (() => void) | undefined;

  constructor(private readonly inner: Store) {}

  get kind() {
    return this.inner.kind;
  }
  get offloadsBodies() {
    return this.inner.offloadsBodies;
  }
  open() {
    return this.inner.open();
  }
  commit(mutations: readonly Mutation[]) {
    return this.inner.commit(mutations);
  }
  readLog(from: number, limit: number) {
    return this.inner.readLog(from, limit);
  }
  async readMessages(offsets: readonly number[]) {
    const messages = await this.inner.readMessages(offsets);
    await this.#gate;
    this.bodiesRead += messages.length;
    return messages;
  }
  async readRetained(topics: readonly string[]) {
    const messages = await this.inner.readRetained(topics);
    await this.#gate;
    this.bodiesRead += messages.length;
    return messages;
  }
  stats() {
    return this.inner.stats();
  }
  close() {
    return this.inner.close();
  }

  /** Reads wait until `release()`. */
  hold(): void {
    this.#gate = new Promise((resolve) => (this.#open = resolve));
  }

  release(): void {
    this.#open?.();
    this.#gate = undefined;
  }
}

/** A broker on `dataDir` with commit durability (SQLite on its thread, as deployed), started. */
async function brokerOn(dataDir: string) {
  const config = testConfig({
    data_dir: dataDir,
    storage: { durability: "commit" },
    mqtt: { max_queued_messages: 100_000 },
  });
  const store = new WatchedStore(openStoreWith(bunAdapters, config, silentLogger));
  const broker = new Broker({
    options: brokerOptionsFrom(config, "test"),
    store,
    clock: new ManualClock(),
    logger: silentLogger,
  });
  await broker.start();
  broker.registry.loader.pageSize = PAGE;
  for (const s of broker.sessions.values()) lowerResident(s);
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await broker.close();
    await settle();
  };
  cleanups.push(stop);
  let port = 50_000;
  const connect = async (connect: Record<string, unknown>) => {
    const { server, client } = memoryConnectionPair(`127.0.0.1:${port++}`);
    const raw = new MemoryClient(client, 5);
    server.handler = broker.accept(server);
    raw.send(
      { cmd: "connect", protocolId: "MQTT", protocolVersion: 5, clean: true, keepalive: 0, ...connect } as Packet,
    );
    const ack = await raw.next("connack");
    expect(ack.reasonCode ?? 0).toBe(0);
    return raw;
  };
  return { broker, store, connect, stop };
}

function lowerResident(s: Session): void {
  s.residentWhenOffline = { entries: RESIDENT_WHEN_OFFLINE, bytes: 1024 * 1024 };
}

const SLEEPER = { clientId: "sleeper", clean: false, properties: { sessionExpiryInterval: 0xffffffff } };

/**
 * Receive `n` PUBLISHes on `client`, acknowledging each, and check `resident()` before
 * every acknowledgement. Returns the payloads in arrival order.
 */
async function drain(client: MemoryClient, n: number, resident: () => number, max: number): Promise<string[]> {
  const got: string[] = [];
  let highest = 0;
  while (got.length < n) {
    const p = await client.next("publish");
    got.push(decoder.decode(p.payload as Uint8Array));
    highest = Math.max(highest, resident());
    if (p.qos === 1) client.send({ cmd: "puback", messageId: p.messageId! });
  }
  expect(highest).toBeLessThanOrEqual(max);
  return got;
}

/** Bodies a session holds: in flight, and loaded or resident in its queue. */
const bodiesHeld = (s: Session) => s.inflight.size + s.queue.resident();

/**
 * The most the memory budget may count for a session's queue of `queued` messages while
 * `resident` of their bodies (payloads under 16 bytes, topics under 16 characters) are in
 * memory: every entry as an object, every resident body.
 */
const budgetBound = (queued: number, resident: number) => queued * COSTS.entry + resident * (COSTS.message + 16 + 32);

describe("restart with a backlog holds the index, not the bodies (issue 13)", () => {
  test("recovery holds no bodies; a resuming session holds at most its window and a page or two while it drains", async () => {
    const dataDir = await preparedDataDir(RETAINED, QUEUED);
    const { broker, store, connect } = await brokerOn(dataDir);
    const s = broker.sessions.get("sleeper")!;
    expect(broker.retained.size).toBe(RETAINED);
    expect(broker.retained.residentCount).toBe(0);
    expect(s.queuedCount).toBe(QUEUED);
    expect(s.queue.resident()).toBe(0);
    expect(store.bodiesRead).toBe(0);
    // The memory budget counts the backlog as the store's columns, and no bodies.
    expect(broker.budget.messages).toBe(QUEUED * COSTS.column);

    const client = await connect(SLEEPER);
    let budgetHighest = 0;
    const got = await drain(client, QUEUED, () => {
      budgetHighest = Math.max(budgetHighest, broker.budget.messages);
      return bodiesHeld(s);
    }, RESIDENT_BOUND);
    // Every queued message, once and in order.
    expect(got).toEqual(Array.from({ length: QUEUED }, (_, i) => `q${i}`));
    expect(s.queuedCount).toBe(0);
    expect(store.bodiesRead).toBe(QUEUED);
    // Draining, it counted the columns, a page of them made into entries, and the bodies it
    // read (not the backlog's); drained, nothing.
    expect(budgetHighest).toBeLessThanOrEqual(
      QUEUED * COSTS.column + MADE_AT_ONCE * COSTS.entry + budgetBound(RESIDENT_BOUND, RESIDENT_BOUND),
    );
    await settle();
    expect(broker.budget.messages).toBe(0);
  });

  test("a subscription matching recovered retained messages reads them a page at a time", async () => {
    const dataDir = await preparedDataDir(RETAINED, 0);
    const { broker, connect } = await brokerOn(dataDir);
    const client = await connect({ clientId: "reader" });
    client.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "retained/#", qos: 1 }] });
    await client.next("suback");
    const s = broker.sessions.get("reader")!;
    const got = await drain(client, RETAINED, () => bodiesHeld(s), RESIDENT_BOUND);
    expect(new Set(got)).toEqual(new Set(Array.from({ length: RETAINED }, (_, i) => `r${i}`)));
    // The index still holds none of them: bodies were read for this subscriber only.
    expect(broker.retained.residentCount).toBe(0);
  });

  test("a recovered retained message still reaches a new subscriber before a newer live one on its topic [MQTT-3.3.1-9]", async () => {
    const dataDir = await preparedDataDir(3, 0);
    const { store, connect } = await brokerOn(dataDir);
    const subscriber = await connect({ clientId: "sub" });
    const publisher = await connect({ clientId: "pub" });
    // The retained body's read is held back until the live message has been published.
    store.hold();
    subscriber.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "retained/1", qos: 1 }] });
    await subscriber.next("suback");
    publisher.send({
      cmd: "publish",
      topic: "retained/1",
      payload: Buffer.from("live"),
      qos: 1,
      retain: false,
      dup: false,
      messageId: 1,
    });
    await publisher.next("puback");
    store.release();
    const first = await subscriber.next("publish");
    const second = await subscriber.next("publish");
    expect([decoder.decode(first.payload as Uint8Array), first.retain]).toEqual(["r1", true]);
    expect([decoder.decode(second.payload as Uint8Array), second.retain]).toEqual(["live", false]);
  });

  test("retained messages sent to a persistent session on SUBSCRIBE are durable before they are read", async () => {
    const dataDir = await preparedDataDir(RETAINED, 0);
    let b = await brokerOn(dataDir);
    const client = await b.connect({ clientId: "keeper", clean: false, properties: { sessionExpiryInterval: 3600 } });
    // Nothing is read before the broker stops: every retained message is queued as a copy
    // the store made itself (retained-copy), committed with the SUBSCRIBE's turn.
    b.store.hold();
    client.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "retained/#", qos: 1 }] });
    await client.next("suback");
    await b.stop();
    b.store.release();

    b = await brokerOn(dataDir);
    const s = b.broker.sessions.get("keeper")!;
    expect(s.queuedCount).toBe(RETAINED);
    expect(s.queue.resident()).toBe(0);
    const again = await b.connect({ clientId: "keeper", clean: false, properties: { sessionExpiryInterval: 3600 } });
    const got = await drain(again, RETAINED, () => bodiesHeld(s), RESIDENT_BOUND);
    expect(new Set(got)).toEqual(new Set(Array.from({ length: RETAINED }, (_, i) => `r${i}`)));
  });

  test("an offline persistent session keeps at most a page of bodies; it gets every message when it returns", async () => {
    const dataDir = await preparedDataDir(0, 0);
    const { broker, store, connect } = await brokerOn(dataDir);
    const publisher = await connect({ clientId: "pub" });
    const n = 3 * RESIDENT_WHEN_OFFLINE + 17;
    for (let i = 0; i < n; i++) {
      publisher.send({
        cmd: "publish",
        topic: `queued/${i % 10}`,
        payload: Buffer.from(`live${i}`),
        qos: 1,
        retain: false,
        dup: false,
        messageId: (i % 60_000) + 1,
      });
    }
    for (let i = 0; i < n; i++) await publisher.next("puback");
    const s = broker.sessions.get("sleeper")!;
    expect(s.queuedCount).toBe(n);
    expect(s.queue.resident()).toBe(RESIDENT_WHEN_OFFLINE);
    // The memory budget counts an entry for each, and only the resident bodies.
    expect(broker.budget.messages).toBeGreaterThan(n * COSTS.entry);
    expect(broker.budget.messages).toBeLessThanOrEqual(budgetBound(n, RESIDENT_WHEN_OFFLINE));

    const client = await connect(SLEEPER);
    const got = await drain(client, n, () => bodiesHeld(s), RESIDENT_BOUND);
    expect(got).toEqual(Array.from({ length: n }, (_, i) => `live${i}`));
    expect(store.bodiesRead).toBe(n - RESIDENT_WHEN_OFFLINE);
    await settle();
    expect(broker.budget.messages).toBe(0);
  });

  test("a session that goes offline with a long queue sets aside all but a page of it", async () => {
    const dataDir = await preparedDataDir(0, 0);
    const { broker, connect } = await brokerOn(dataDir);
    const sleeper = await connect(SLEEPER);
    // It reads nothing: its window fills, and the rest queues in memory while it is online.
    const publisher = await connect({ clientId: "pub" });
    const n = 2 * RESIDENT_WHEN_OFFLINE + WINDOW + 5;
    for (let i = 0; i < n; i++) {
      publisher.send({
        cmd: "publish",
        topic: "queued/x",
        payload: Buffer.from(`m${i}`),
        qos: 1,
        retain: false,
        dup: false,
        messageId: i + 1,
      });
    }
    for (let i = 0; i < n; i++) await publisher.next("puback");
    const s = broker.sessions.get("sleeper")!;
    expect(s.queue.resident()).toBe(n - WINDOW);
    sleeper.close();
    await settle();
    expect(s.client).toBeUndefined();
    expect(s.queue.resident()).toBe(RESIDENT_WHEN_OFFLINE);
    // Set aside: the budget no longer counts those bodies (the window in flight stays).
    expect(broker.budget.messages).toBeLessThanOrEqual(budgetBound(n, RESIDENT_WHEN_OFFLINE + WINDOW));

    const back = await connect(SLEEPER);
    const got = await drain(back, n, () => bodiesHeld(s), RESIDENT_BOUND + WINDOW);
    // The window that was in flight comes again first (DUP), then the queue in order.
    expect(got).toEqual(Array.from({ length: n }, (_, i) => `m${i}`));
    await settle();
    expect(broker.budget.messages).toBe(0);
  });
});
