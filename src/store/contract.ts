import {
  type DeliveryRecord,
  type Message,
  type Mutation,
  queuedDelivery,
  type Recovered,
  RETAINED_COPY_ORIGIN,
  type RetainedStub,
  retainedStub,
  type SessionRecord,
  type Store,
  StoreFullError,
  type SubscriptionRecord,
} from "./store.ts";

/**
 * The behaviour every Store implementation must show, as one suite that each
 * implementation's test file runs (the habit of aedes-persistence's abstract.js).
 * The test API is passed in so this file imports no test runner: bun:test today,
 * Deno's @std/testing/bdd + @std/expect later.
 */

/** The matchers the suite uses; bun:test's and @std/expect's both provide them. */
export interface ContractMatchers {
  toBe(expected: unknown): void;
  toEqual(expected: unknown): void;
  toBeGreaterThan(expected: number): void;
  toBeLessThan(expected: number): void;
  toBeInstanceOf(expected: abstract new (...args: never[]) => unknown): void;
  toHaveLength(expected: number): void;
  toBeUndefined(): void;
}

export interface ContractTestApi {
  describe(label: string, fn: () => void): void;
  test(label: string, fn: () => void | Promise<void>): void;
  expect(actual: unknown): ContractMatchers;
  afterEach(fn: () => Promise<void>): void;
}

export interface StoreUnderTest {
  /** A store on fresh, empty data; the suite calls open() on it. */
  store: Store;
  /**
   * Closes the current store if the implementation needs to, and returns a store on
   * the same data, not yet opened. A memory store returns itself (its state lives in
   * the instance); the SQLite store returns a new instance on the same file.
   */
  reopen: () => Promise<Store>;
  /** Closes whatever is open and removes the data. */
  cleanup: () => Promise<void>;
}

export interface MakeStoreOptions {
  /**
   * Configure the store to trim its log after a few hundred small messages (memory:
   * a low message cap; SQLite: a small maxBytes), so the suite can check what
   * trimming must never remove.
   */
  tightRetention?: boolean;
  /**
   * Trim unreferenced messages older than `messageTtlMs`, reading time from `now`
   * (the same clock for the store and every store reopened on its data). Passed only
   * to stores that declare `ageTrimming` in their StoreFeatures.
   */
  ageTrimming?: { messageTtlMs: number; now: () => number };
}

export type MakeStore = (options?: MakeStoreOptions) => Promise<StoreUnderTest>;

/** Optional behaviour an implementation has; the suite runs the tests for it only then. */
export interface StoreFeatures {
  /** Trims the log by message age (MakeStoreOptions.ageTrimming). The memory store does not. */
  ageTrimming?: boolean;
}

const encoder = new TextEncoder();

function message(offset: number, overrides: Partial<Message> = {}): Message {
  return {
    offset,
    topic: `sensors/${offset}`,
    payload: encoder.encode(`reading ${offset}`),
    qos: 1,
    retain: false,
    receivedAt: 1_700_000_000_000 + offset,
    origin: "publisher-1",
    ...overrides,
  };
}

function session(clientId: string, overrides: Partial<SessionRecord> = {}): SessionRecord {
  return {
    clientId,
    expiryInterval: 3600,
    protocolVersion: 5,
    subscriptions: [{ filter: "sensors/#", qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0 }],
    ...overrides,
  };
}

function delivery(clientId: string, offset: number, overrides: Partial<DeliveryRecord> = {}): DeliveryRecord {
  return { clientId, offset, qos: 1, retain: false, phase: "queued", ...overrides };
}

const appendAll = (messages: Message[]): Mutation[] => messages.map((m) => ({ op: "append", message: m }));

const byTopic = (a: { topic: string }, b: { topic: string }) => (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : 0);

/**
 * The recovered session `clientId`, with its queued and in-flight deliveries merged into
 * one list by offset (queued ones without a message) and its subscriptions in filter order.
 */
function sessionOf(recovered: Recovered, clientId: string) {
  const found = recovered.sessions.find((s) => s.session.clientId === clientId);
  if (!found) return undefined;
  const q = found.queued;
  const queued = Array.from({ length: q.length }, (_, i) => ({
    delivery: queuedDelivery(q, i, clientId),
    bytes: q.bytes[i]!,
    message: undefined as Message | undefined,
  }));
  const inflight = found.inflight.map(({ delivery, message }) => ({
    delivery,
    bytes: message.payload.byteLength,
    message: message as Message | undefined,
  }));
  const deliveries = [...queued, ...inflight].sort((a, b) => a.delivery.offset - b.delivery.offset);
  return { ...found, session: sortedSubscriptions(found.session), deliveries };
}

/** The recovered retained stubs as objects. */
function stubsOf(recovered: Recovered): RetainedStub[] {
  return recovered.retained.topics.map((_, i) => retainedStub(recovered.retained, i));
}

/** Stores return a session's subscriptions in no particular order. */
function sortedSubscriptions(record: SessionRecord): SessionRecord {
  const subscriptions = [...record.subscriptions].sort((
    a,
    b,
  ) => (a.filter < b.filter ? -1 : a.filter > b.filter ? 1 : 0));
  return { ...record, subscriptions };
}

/** What recovery says of a retained message: no body, its size. */
function stubOf(m: Message): RetainedStub {
  return {
    topic: m.topic,
    qos: m.qos,
    bytes: m.payload.byteLength,
    ...(m.expiresAt !== undefined ? { expiresAt: m.expiresAt } : {}),
  };
}

/** Copies into a plain Uint8Array, so comparisons do not depend on Buffer vs Uint8Array. */
const bytes = (b: Uint8Array) => Array.from(b);

export function runStoreContract(
  name: string,
  makeStore: MakeStore,
  t: ContractTestApi,
  features: StoreFeatures = {},
): void {
  const { describe, test, expect, afterEach } = t;
  let cleanups: Array<() => Promise<void>> = [];

  /** Opens a fresh store; returns it with a `reopen` that hands back the reopened store and its recovery. */
  async function fresh(options?: MakeStoreOptions) {
    const made = await makeStore(options);
    cleanups.push(made.cleanup);
    const recovered = await made.store.open();
    return {
      store: made.store,
      recovered,
      reopen: async () => {
        const store = await made.reopen();
        return { store, recovered: await store.open() };
      },
    };
  }

  /**
   * Waits until `check` holds. Stores may apply lists after commit() resolved (SQLite
   * in periodic mode flushes on a timer), so effects that only show in stats() come
   * eventually rather than at once.
   */
  async function eventually(check: () => boolean, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!check() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
  }

  afterEach(async () => {
    const pending = cleanups;
    cleanups = [];
    for (const cleanup of pending) await cleanup();
  });

  describe(`${name} store contract`, () => {
    test("a fresh store recovers nothing", async () => {
      const { recovered } = await fresh();
      expect(recovered.nextOffset).toBeGreaterThan(0);
      expect(stubsOf(recovered)).toEqual([]);
      expect(recovered.sessions).toEqual([]);
    });

    test("readLog returns appended messages oldest first, from an offset, up to a limit", async () => {
      const { store, recovered } = await fresh();
      const base = recovered.nextOffset;
      const messages = Array.from({ length: 10 }, (_, i) => message(base + i));
      await store.commit(appendAll(messages.slice(0, 4)));
      await store.commit(appendAll(messages.slice(4)));

      const all = await store.readLog(base, 100);
      expect(all.map((m) => m.offset)).toEqual(messages.map((m) => m.offset));
      expect(all[3]).toEqual(messages[3]);

      const window = await store.readLog(base + 5, 3);
      expect(window.map((m) => m.offset)).toEqual([base + 5, base + 6, base + 7]);
      expect(await store.readLog(base + 10, 5)).toEqual([]);
      expect(await store.readLog(base, 0)).toEqual([]);
      expect(store.stats().messages).toBe(10);
    });

    test("readLog orders by offset even when lists arrive out of offset order", async () => {
      const { store, recovered } = await fresh();
      const base = recovered.nextOffset;
      await store.commit(appendAll([message(base + 2)]));
      await store.commit(appendAll([message(base), message(base + 1)]));
      const log = await store.readLog(base, 10);
      expect(log.map((m) => m.offset)).toEqual([base, base + 1, base + 2]);
    });

    test("nextOffset after reopen is greater than every appended offset", async () => {
      const { store, recovered, reopen } = await fresh();
      const base = recovered.nextOffset;
      await store.commit(appendAll(Array.from({ length: 5 }, (_, i) => message(base + i))));
      await store.commit(appendAll([message(base + 100)]));
      const again = await reopen();
      expect(again.recovered.nextOffset).toBeGreaterThan(base + 100);
      const log = await again.store.readLog(base, 100);
      expect(log.map((m) => m.offset)).toEqual([base, base + 1, base + 2, base + 3, base + 4, base + 100]);
    });

    test("retained messages are set, replaced and cleared, and survive reopen", async () => {
      const { store, reopen } = await fresh();
      const a1 = message(0, { topic: "home/a", retain: true, qos: 0 });
      const b = message(0, { topic: "home/b", retain: true, qos: 0 });
      const c = message(7, { topic: "home/c", retain: true, qos: 2 });
      const a2 = message(0, { topic: "home/a", retain: true, qos: 0, payload: encoder.encode("newer") });
      await store.commit([
        { op: "retain", topic: "home/a", message: a1 },
        { op: "retain", topic: "home/b", message: b },
        { op: "retain", topic: "home/c", message: c },
      ]);
      await store.commit([
        { op: "retain", topic: "home/a", message: a2 },
        { op: "retain", topic: "home/b", message: null },
      ]);
      const { store: reopened, recovered } = await reopen();
      // Recovery gives the index only; the bodies are read by topic.
      expect(stubsOf(recovered).sort(byTopic)).toEqual([stubOf(a2), stubOf(c)]);
      expect(await reopened.readRetained(["home/c", "home/b", "home/a"])).toEqual([c, a2]);
      expect(bytes((await reopened.readRetained(["home/a"]))[0]!.payload)).toEqual(bytes(a2.payload));
    });

    test("clearing a retained topic that has none is harmless", async () => {
      const { store, reopen } = await fresh();
      await store.commit([{ op: "retain", topic: "nothing/here", message: null }]);
      const { recovered } = await reopen();
      expect(stubsOf(recovered)).toEqual([]);
    });

    test("sessions are put, replaced and deleted, and survive reopen", async () => {
      const { store, reopen } = await fresh();
      const one = session("one");
      const two = session("two", { protocolVersion: 4, expiryInterval: 0xffffffff, owner: "alice" });
      await store.commit([{ op: "session-put", session: one }, { op: "session-put", session: two }]);
      const oneReplaced = session("one", {
        disconnectedAt: 1_700_000_123_456,
        owner: null, // an anonymous owner is kept as such, not as "no owner recorded"
        subscriptions: [
          {
            filter: "$share/g/a/+",
            qos: 2,
            noLocal: true,
            retainAsPublished: true,
            retainHandling: 2,
            subscriptionId: 42,
          },
          { filter: "b/#", qos: 0, noLocal: false, retainAsPublished: false, retainHandling: 1 },
        ],
      });
      await store.commit([{ op: "session-put", session: oneReplaced }]);
      await store.commit([{ op: "session-put", session: session("three") }]);
      await store.commit([{ op: "session-delete", clientId: "three" }]);

      const { recovered } = await reopen();
      const sessions = recovered.sessions.map((s) => sortedSubscriptions(s.session))
        .sort((a, b) => a.clientId.localeCompare(b.clientId));
      expect(sessions).toEqual([oneReplaced, two]);
      expect(sessionOf(recovered, "two")!.deliveries).toEqual([]);
      expect(sessionOf(recovered, "two")!.qos2Incoming).toEqual([]);
    });

    test("subscriptions change one at a time; a session update keeps them; a session put replaces them", async () => {
      const { store, reopen } = await fresh();
      const sub = (filter: string, overrides: Partial<SubscriptionRecord> = {}): SubscriptionRecord => ({
        filter,
        qos: 1,
        noLocal: false,
        retainAsPublished: false,
        retainHandling: 0,
        ...overrides,
      });
      await store.commit([{ op: "session-put", session: session("c", { subscriptions: [sub("a/#"), sub("b/#")] }) }]);
      await store.commit([
        { op: "subscription-put", clientId: "c", subscription: sub("c/+", { qos: 2, subscriptionId: 9 }) },
        { op: "subscription-put", clientId: "c", subscription: sub("a/#", { qos: 0, noLocal: true }) },
        { op: "subscription-delete", clientId: "c", filter: "b/#" },
        // Removing a subscription the session does not have is harmless.
        { op: "subscription-delete", clientId: "c", filter: "never/subscribed" },
      ]);
      // Connect and disconnect write the session's own fields; its subscriptions stay.
      await store.commit([{
        op: "session-update",
        session: {
          clientId: "c",
          expiryInterval: 60,
          protocolVersion: 4,
          disconnectedAt: 1_700_000_000_999,
          owner: "bob",
        },
      }]);
      let again = await reopen();
      expect(sessionOf(again.recovered, "c")!.session).toEqual({
        clientId: "c",
        expiryInterval: 60,
        protocolVersion: 4,
        disconnectedAt: 1_700_000_000_999,
        owner: "bob",
        subscriptions: [sub("a/#", { qos: 0, noLocal: true }), sub("c/+", { qos: 2, subscriptionId: 9 })],
      });

      // A whole record replaces the subscriptions; a delete takes them with the session.
      await again.store.commit([{ op: "session-put", session: session("c", { subscriptions: [sub("z")] }) }]);
      again = await reopen();
      expect(sessionOf(again.recovered, "c")!.session.subscriptions).toEqual([sub("z")]);
      await again.store.commit([{ op: "session-delete", clientId: "c" }]);
      await again.store.commit([{
        op: "session-update",
        session: { clientId: "c", expiryInterval: 5, protocolVersion: 5 },
      }]);
      again = await reopen();
      expect(sessionOf(again.recovered, "c")!.session).toEqual({
        clientId: "c",
        expiryInterval: 5,
        protocolVersion: 5,
        subscriptions: [],
      });
    });

    test("deleting a session removes its deliveries and QoS 2 state, not other sessions'", async () => {
      const { store, recovered: first, reopen } = await fresh();
      const m = message(first.nextOffset);
      await store.commit([
        { op: "append", message: m },
        { op: "session-put", session: session("gone") },
        { op: "session-put", session: session("kept") },
        { op: "delivery-put", delivery: delivery("gone", m.offset) },
        { op: "delivery-put", delivery: delivery("kept", m.offset) },
        { op: "qos2-in-put", clientId: "gone", packetId: 9 },
        { op: "qos2-in-put", clientId: "kept", packetId: 9 },
      ]);
      await store.commit([{ op: "session-delete", clientId: "gone" }]);
      // A new session under the same client id starts empty.
      await store.commit([{ op: "session-put", session: session("gone") }]);

      const { recovered } = await reopen();
      expect(sessionOf(recovered, "gone")!.deliveries).toEqual([]);
      expect(sessionOf(recovered, "gone")!.qos2Incoming).toEqual([]);
      expect(sessionOf(recovered, "kept")!.deliveries.map((d) => d.delivery.offset)).toEqual([m.offset]);
      expect(sessionOf(recovered, "kept")!.qos2Incoming).toEqual([9]);
    });

    test("a delivery goes queued → sent → pubrel → deleted, each step surviving reopen", async () => {
      const made = await fresh();
      let store = made.store;
      const base = made.recovered.nextOffset;
      const m = message(base, { qos: 2 });
      await store.commit([
        { op: "append", message: m },
        { op: "session-put", session: session("c") },
        { op: "delivery-put", delivery: delivery("c", base, { qos: 2, subscriptionIds: [3, 7] }) },
      ]);

      let again = await made.reopen();
      store = again.store;
      let owed = sessionOf(again.recovered, "c")!.deliveries;
      expect(owed).toHaveLength(1);
      expect(owed[0]!.delivery).toEqual(delivery("c", base, { qos: 2, subscriptionIds: [3, 7] }));
      // Queued: its size, not its body.
      expect(owed[0]!.message).toBeUndefined();
      expect(owed[0]!.bytes).toBe(m.payload.byteLength);

      await store.commit([{ op: "delivery-sent", clientId: "c", offset: base, packetId: 11 }]);
      again = await made.reopen();
      store = again.store;
      owed = sessionOf(again.recovered, "c")!.deliveries;
      expect(owed[0]!.delivery).toEqual(
        delivery("c", base, { qos: 2, subscriptionIds: [3, 7], packetId: 11, phase: "sent" }),
      );
      // In flight: it comes with its message, to be re-sent at once.
      expect(owed[0]!.message).toEqual(m);

      await store.commit([{ op: "delivery-pubrel", clientId: "c", offset: base, packetId: 11 }]);
      again = await made.reopen();
      store = again.store;
      owed = sessionOf(again.recovered, "c")!.deliveries;
      expect(owed[0]!.delivery.phase).toBe("pubrel");
      expect(owed[0]!.delivery.packetId).toBe(11);
      expect(owed[0]!.message).toEqual(m);

      await store.commit([{ op: "delivery-delete-offset", clientId: "c", offset: base }]);
      again = await made.reopen();
      expect(sessionOf(again.recovered, "c")!.deliveries).toEqual([]);
      // The message itself stays in the log: deliveries only refer to it.
      expect((await again.store.readLog(base, 1)).map((x) => x.offset)).toEqual([base]);
    });

    test("a delivery that goes from queued straight to pubrel is recovered in flight under the pubrel's packet id", async () => {
      // Its "sent" mark was never written (WriteBehind.supersede): the pubrel carries the id.
      const made = await fresh();
      const base = made.recovered.nextOffset;
      const m = message(base, { qos: 2 });
      await made.store.commit([
        { op: "append", message: m },
        { op: "session-put", session: session("c") },
        { op: "delivery-put", delivery: delivery("c", base, { qos: 2 }) },
      ]);
      await made.store.commit([{ op: "delivery-pubrel", clientId: "c", offset: base, packetId: 4242 }]);
      const again = await made.reopen();
      const owed = sessionOf(again.recovered, "c")!.deliveries;
      expect(owed[0]!.delivery).toEqual(delivery("c", base, { qos: 2, packetId: 4242, phase: "pubrel" }));
      expect(owed[0]!.message).toEqual(m);
    });

    test("deliveries are recovered in offset order with their sizes, and readMessages gives their bodies", async () => {
      const { store, recovered: first, reopen } = await fresh();
      const base = first.nextOffset;
      const messages = Array.from({ length: 6 }, (_, i) => message(base + i, { topic: `t/${i}` }));
      await store.commit([{ op: "session-put", session: session("c") }, ...appendAll(messages)]);
      // Put them in a scrambled order, over several lists.
      for (const i of [4, 1, 5, 0, 3, 2]) {
        await store.commit([{ op: "delivery-put", delivery: delivery("c", base + i, { retain: i === 0 }) }]);
      }
      await store.commit([{ op: "delivery-delete-offset", clientId: "c", offset: base + 3 }]);
      // A QoS 1 delivery sent, then acknowledged.
      await store.commit([{ op: "delivery-sent", clientId: "c", offset: base + 5, packetId: 1 }]);
      await store.commit([{ op: "delivery-delete-offset", clientId: "c", offset: base + 5 }]);

      const { store: reopened, recovered } = await reopen();
      const owed = sessionOf(recovered, "c")!.deliveries;
      expect(owed.map((d) => d.delivery.offset)).toEqual([base, base + 1, base + 2, base + 4]);
      expect(owed.map((d) => d.bytes)).toEqual([0, 1, 2, 4].map((i) => messages[i]!.payload.byteLength));
      expect(owed.map((d) => d.message)).toEqual([undefined, undefined, undefined, undefined]);
      expect(await reopened.readMessages(owed.map((d) => d.delivery.offset))).toEqual([
        messages[0],
        messages[1],
        messages[2],
        messages[4],
      ]);
      expect(owed[0]!.delivery.retain).toBe(true);
      expect(owed[1]!.delivery.retain).toBe(false);
    });

    test("readMessages and readRetained give bodies in the order asked, without those missing, and see lists committed just before", async () => {
      const { store, recovered } = await fresh();
      const base = recovered.nextOffset;
      const m = (i: number) => message(base + i, { topic: `r/${i}` });
      await store.commit(appendAll([m(0), m(1), m(2)]));
      expect(await store.readMessages([base + 2, base + 99, base])).toEqual([m(2), m(0)]);
      expect(await store.readMessages([])).toEqual([]);
      // Not awaited: a read made after commit() sees the list, durable or not yet.
      void store.commit([
        { op: "append", message: m(3) },
        { op: "retain", topic: "r/3", message: { ...m(3), retain: true } },
      ]);
      expect(await store.readMessages([base + 3, base + 1])).toEqual([m(3), m(1)]);
      expect(await store.readRetained(["r/3", "r/0"])).toEqual([{ ...m(3), retain: true }]);
      void store.commit([{ op: "retain", topic: "r/3", message: null }]);
      expect(await store.readRetained(["r/3"])).toEqual([]);
      expect(await store.readRetained([])).toEqual([]);
    });

    test("retained-copy logs the retained message as it is when applied, with its delivery; nothing for a topic without one", async () => {
      const { store, recovered: first, reopen } = await fresh();
      const base = first.nextOffset;
      const retained = message(0, { topic: "state/a", retain: true, qos: 1, origin: "device" });
      const newer = { ...retained, payload: encoder.encode("newer") };
      await store.commit([
        { op: "retain", topic: "state/a", message: retained },
        { op: "session-put", session: session("c") },
      ]);
      const copyAt = (offset: number, topic: string): Mutation => ({
        op: "retained-copy",
        topic,
        offset,
        delivery: delivery("c", offset, { retain: true }),
      });
      // The retain replaced in the same list comes first: the copy is of the newer one.
      void store.commit([{ op: "retain", topic: "state/a", message: newer }, copyAt(base, "state/a")]);
      const copy = { ...newer, offset: base, origin: RETAINED_COPY_ORIGIN };
      expect(await store.readMessages([base])).toEqual([copy]);
      await store.commit([copyAt(base + 1, "state/none")]);
      const again = await reopen();
      expect(await again.store.readMessages([base, base + 1])).toEqual([copy]);
      expect(sessionOf(again.recovered, "c")!.deliveries.map((d) => d.delivery)).toEqual([
        delivery("c", base, { retain: true }),
      ]);
      expect(again.recovered.nextOffset).toBeGreaterThan(base);
      // The original stays retained; the copy is an ordinary log entry.
      expect(await again.store.readRetained(["state/a"])).toEqual([newer]);
    });

    test("a delivery put again with a packet id and phase replaces the queued one", async () => {
      const { store, recovered: first, reopen } = await fresh();
      const m = message(first.nextOffset);
      await store.commit([
        { op: "append", message: m },
        { op: "session-put", session: session("c") },
        { op: "delivery-put", delivery: delivery("c", m.offset) },
      ]);
      await store.commit([
        { op: "delivery-put", delivery: delivery("c", m.offset, { packetId: 5, phase: "sent", qos: 0 }) },
      ]);
      const { recovered } = await reopen();
      expect(sessionOf(recovered, "c")!.deliveries.map((d) => d.delivery)).toEqual([
        delivery("c", m.offset, { packetId: 5, phase: "sent", qos: 0 }),
      ]);
    });

    test("incoming QoS 2 packet ids are put and deleted per client", async () => {
      const { store, reopen } = await fresh();
      await store.commit([
        { op: "session-put", session: session("a") },
        { op: "session-put", session: session("b") },
        { op: "qos2-in-put", clientId: "a", packetId: 1 },
        { op: "qos2-in-put", clientId: "a", packetId: 2 },
        { op: "qos2-in-put", clientId: "a", packetId: 65535 },
        { op: "qos2-in-put", clientId: "b", packetId: 2 },
      ]);
      // A duplicate PUBLISH with the same id is idempotent.
      await store.commit([{ op: "qos2-in-put", clientId: "a", packetId: 1 }]);
      await store.commit([{ op: "qos2-in-delete", clientId: "a", packetId: 2 }]);
      const { recovered } = await reopen();
      expect([...sessionOf(recovered, "a")!.qos2Incoming].sort((x, y) => x - y)).toEqual([1, 65535]);
      expect(sessionOf(recovered, "b")!.qos2Incoming).toEqual([2]);
    });

    test("MQTT 5 properties round-trip exactly, binary correlation data included", async () => {
      const { store, recovered: first, reopen } = await fresh();
      const base = first.nextOffset;
      const correlationData = Uint8Array.from({ length: 256 }, (_, i) => 255 - i);
      const full = message(base, {
        expiresAt: 1_700_000_999_000,
        properties: {
          payloadFormatIndicator: true,
          contentType: "application/json; charset=utf-8",
          responseTopic: "replies/ünïcode/✓",
          correlationData,
          userProperties: { single: "1", many: ["x", "y", "x"], empty: "", "key with spaces": [] },
        },
        topic: "dévices/🚀/state",
        origin: "client-ü",
      });
      const sparse = message(base + 1, { properties: { payloadFormatIndicator: false } });
      const emptyProps = message(base + 2, { properties: {} });
      const emptyCorrelation = message(base + 3, { properties: { correlationData: new Uint8Array(0) } });
      const all = [full, sparse, emptyProps, emptyCorrelation];
      await store.commit([
        ...appendAll(all),
        { op: "retain", topic: full.topic, message: { ...full, retain: true } },
        { op: "session-put", session: session("c") },
        { op: "delivery-put", delivery: delivery("c", base) },
      ]);

      const { store: reopened, recovered } = await reopen();
      const logged = await reopened.readLog(base, 10);
      expect(logged).toEqual(all);
      expect(await reopened.readMessages(all.map((x) => x.offset))).toEqual(all);
      const props = logged[0]!.properties!;
      expect(props.correlationData).toBeInstanceOf(Uint8Array);
      expect(bytes(props.correlationData!)).toEqual(bytes(correlationData));
      expect(logged[0]!.expiresAt).toBe(1_700_000_999_000);
      expect(logged[1]!.expiresAt).toBeUndefined();
      expect(logged[1]!.properties).toEqual({ payloadFormatIndicator: false });
      expect(logged[2]!.properties).toEqual({});
      expect(logged[3]!.properties!.correlationData).toBeInstanceOf(Uint8Array);
      expect(logged[3]!.properties!.correlationData).toHaveLength(0);
      expect(stubsOf(recovered)).toEqual([stubOf(full)]);
      const retained = await reopened.readRetained([full.topic]);
      expect(retained).toEqual([{ ...full, retain: true }]);
      expect(bytes(retained[0]!.properties!.correlationData!)).toEqual(bytes(correlationData));
      expect(sessionOf(recovered, "c")!.deliveries[0]!.bytes).toBe(full.payload.byteLength);
    });

    test("payload bytes round-trip exactly: empty, every byte value, large, and a view into a larger buffer", async () => {
      const { store, recovered: first, reopen } = await fresh();
      const base = first.nextOffset;
      const everyByte = Uint8Array.from({ length: 512 }, (_, i) => i % 256);
      const large = Uint8Array.from({ length: 300_000 }, (_, i) => (i * 7919) & 0xff);
      const backing = Uint8Array.from([0xaa, 0xbb, 1, 2, 3, 0xcc]);
      const view = backing.subarray(2, 5);
      const payloads = [new Uint8Array(0), everyByte, large, view, Uint8Array.of(0)];
      const messages = payloads.map((payload, i) => message(base + i, { payload }));
      await store.commit([
        ...appendAll(messages),
        {
          op: "retain",
          topic: "empty/retained",
          message: message(0, { topic: "empty/retained", payload: new Uint8Array(0) }),
        },
      ]);

      const { store: reopened } = await reopen();
      const logged = await reopened.readLog(base, 10);
      expect(logged).toHaveLength(payloads.length);
      expect(await reopened.readMessages(messages.map((x) => x.offset))).toHaveLength(payloads.length);
      logged.forEach((m, i) => {
        expect(m.payload).toBeInstanceOf(Uint8Array);
        expect(m.payload.byteLength).toBe(payloads[i]!.byteLength);
        expect(bytes(m.payload)).toEqual(bytes(payloads[i]!));
      });
      expect(bytes(logged[3]!.payload)).toEqual([1, 2, 3]);
      const [empty] = await reopened.readRetained(["empty/retained"]);
      expect(empty!.payload).toBeInstanceOf(Uint8Array);
      expect(empty!.payload.byteLength).toBe(0);
    });

    test("a message owed to a session is never trimmed from the log", async () => {
      const { store, recovered: first, reopen } = await fresh({ tightRetention: true });
      const base = first.nextOffset;
      await store.commit([
        { op: "append", message: message(base) },
        { op: "session-put", session: session("slow") },
        { op: "delivery-put", delivery: delivery("slow", base) },
      ]);
      // Enough unreferenced traffic behind it to force trimming in a tight store.
      const filler = new Uint8Array(1024).fill(7);
      for (let batch = 0; batch < 20; batch++) {
        const start = base + 1 + batch * 100;
        await store.commit(appendAll(Array.from({ length: 100 }, (_, i) => message(start + i, { payload: filler }))));
      }
      const last = base + 2000;
      // Reopening first lets stores that trim in the background (or at close) catch up.
      const { store: reopened, recovered } = await reopen();
      const head = await reopened.readLog(base, 2);
      expect(head[0]!.offset).toBe(base);
      // Trimming did happen, right behind the owed message.
      expect(head[1]!.offset).toBeGreaterThan(base + 1);
      expect(reopened.stats().messages).toBeLessThan(2001);
      expect(sessionOf(recovered, "slow")!.deliveries.map((d) => d.delivery.offset)).toEqual([base]);
      expect(await reopened.readMessages([base])).toEqual([message(base)]);
      expect(recovered.nextOffset).toBeGreaterThan(last);
      const tail = await reopened.readLog(last, 10);
      expect(tail.map((m) => m.offset)).toEqual([last]);

      // Once acknowledged, it becomes ordinary history and may go.
      await reopened.commit([{ op: "delivery-delete-offset", clientId: "slow", offset: base }]);
      await reopened.commit(
        appendAll(Array.from({ length: 100 }, (_, i) => message(last + 1 + i, { payload: filler }))),
      );
      const third = await reopen();
      expect((await third.store.readLog(base, 1))[0]!.offset).toBeGreaterThan(base);
    });

    test("counters are put, replaced, survive reopen, and do not hold the log like a cursor", async () => {
      const { store, recovered: first, reopen } = await fresh();
      expect(first.counters ?? {}).toEqual({});
      const base = first.nextOffset;
      await store.commit([
        ...appendAll([message(base)]),
        { op: "counter-put", name: "uplink/cloud/dropped-buffer", value: 7 },
        { op: "counter-put", name: "other", value: 1 },
      ]);
      await store.commit([{ op: "counter-put", name: "uplink/cloud/dropped-buffer", value: 34_583 }]);
      const again = await reopen();
      expect(again.recovered.counters).toEqual({ "uplink/cloud/dropped-buffer": 34_583, other: 1 });
      expect(again.recovered.cursors).toEqual({});
      expect(again.recovered.nextOffset).toBe(base + 1);
    });

    test("cursors are put, replaced and deleted, and survive reopen", async () => {
      const { store, recovered: first, reopen } = await fresh();
      expect(first.cursors).toEqual({});
      const base = first.nextOffset;
      await store.commit([
        ...appendAll([message(base), message(base + 1)]),
        { op: "cursor-put", name: "uplink", offset: base },
        { op: "cursor-put", name: "history", offset: 0 },
        { op: "cursor-put", name: "nuage/☁", offset: base + 1 },
      ]);
      await store.commit([{ op: "cursor-put", name: "uplink", offset: base + 1 }]);
      await store.commit([{ op: "cursor-delete", name: "history" }]);
      // Deleting a cursor that does not exist is harmless.
      await store.commit([{ op: "cursor-delete", name: "never-existed" }]);
      // A reader's name is data: one called __proto__ is an ordinary entry.
      await store.commit([{ op: "cursor-put", name: "__proto__", offset: 3 }]);

      let again = await reopen();
      const sorted = (cursors: Record<string, number>) =>
        Object.entries(cursors).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      expect(sorted(again.recovered.cursors)).toEqual([
        ["__proto__", 3],
        ["nuage/☁", base + 1],
        ["uplink", base + 1],
      ]);
      expect(Object.getPrototypeOf(again.recovered.cursors)).toBe(Object.prototype);

      await again.store.commit([
        { op: "cursor-delete", name: "__proto__" },
        { op: "cursor-delete", name: "nuage/☁" },
      ]);
      again = await reopen();
      expect(again.recovered.cursors).toEqual({ uplink: base + 1 });
      // Cursors only point into the log; they change nothing in it.
      expect((await again.store.readLog(base, 10)).map((m) => m.offset)).toEqual([base, base + 1]);
    });

    test("the size quota may drop messages above a cursor, oldest first, and counts them", async () => {
      const { store, recovered: first, reopen } = await fresh({ tightRetention: true });
      const base = first.nextOffset;
      // The reader has read nothing yet: every message is above its cursor.
      await store.commit([{ op: "cursor-put", name: "uplink", offset: base - 1 }]);
      const filler = new Uint8Array(1024).fill(7);
      const total = 2000;
      for (let start = 0; start < total; start += 100) {
        await store.commit(
          appendAll(Array.from({ length: 100 }, (_, i) => message(base + start + i, { payload: filler }))),
        );
      }
      await eventually(() => (store.stats().droppedMessages ?? 0) > 0);
      const stats = store.stats();
      expect(stats.droppedMessages ?? 0).toBeGreaterThan(0);
      expect(stats.messages + stats.droppedMessages!).toBe(total);
      // What is left is the newest, contiguous suffix: the oldest went first.
      const log = await store.readLog(0, total);
      expect(log).toHaveLength(stats.messages);
      expect(log[0]!.offset).toBe(base + stats.droppedMessages!);
      expect(log.at(-1)!.offset).toBe(base + total - 1);

      // The store does not move the cursor: the reader finds out from the log.
      const again = await reopen();
      expect(again.recovered.cursors).toEqual({ uplink: base - 1 });
      expect((await again.store.readLog(base, 1))[0]!.offset).toBeGreaterThan(base);
    });

    test("many concurrent commits all resolve and all land", async () => {
      const { store, recovered: first, reopen } = await fresh();
      const base = first.nextOffset;
      const count = 500;
      const commits: Promise<void>[] = [];
      for (let i = 0; i < count; i++) {
        const m = message(base + i);
        commits.push(
          store.commit([
            { op: "append", message: m },
            { op: "session-put", session: session(`c${i % 10}`) },
            { op: "delivery-put", delivery: delivery(`c${i % 10}`, m.offset) },
          ]),
        );
      }
      // Empty lists are legal and resolve too.
      commits.push(store.commit([]));
      const results = await Promise.allSettled(commits);
      expect(results.filter((r) => r.status === "rejected")).toHaveLength(0);

      const { store: reopened, recovered } = await reopen();
      const log = await reopened.readLog(base, count + 10);
      expect(log.map((m) => m.offset)).toEqual(Array.from({ length: count }, (_, i) => base + i));
      expect(recovered.sessions).toHaveLength(10);
      for (const { session: { clientId } } of recovered.sessions) {
        const owed = sessionOf(recovered, clientId)!.deliveries;
        expect(owed).toHaveLength(count / 10);
        const offsets = owed.map((d) => d.delivery.offset);
        expect(offsets).toEqual([...offsets].sort((a, b) => a - b));
      }
    });

    test("StoreFullError is an Error that callers can tell apart", () => {
      // Part of the contract's vocabulary: the broker maps it to a reason code.
      const error = new StoreFullError("full");
      expect(error).toBeInstanceOf(Error);
      expect(error.name).toBe("StoreFullError");
    });
  });

  if (features.ageTrimming) {
    describe(`${name} store contract: cursors and age trimming`, () => {
      const ttl = 60_000;

      /** A store that trims by age on a clock the test moves; see MakeStoreOptions.ageTrimming. */
      async function aging() {
        const clock = { now: 1_700_000_000_000 };
        const made = await fresh({ ageTrimming: { messageTtlMs: ttl, now: () => clock.now } });
        return { ...made, clock };
      }

      /**
       * Moves the clock well past the TTL and past any check interval, lets the store
       * trim (an empty list is a commit like any other), and reopens so that stores
       * which trim in the background or at close have caught up.
       */
      async function age(made: Awaited<ReturnType<typeof aging>>, store: Store) {
        made.clock.now += 10 * ttl;
        await store.commit([]);
        return made.reopen();
      }

      const offsets = async (store: Store, from: number) => (await store.readLog(from, 100)).map((m) => m.offset);

      test("age trimming keeps every message above the lowest cursor, and owed ones below it", async () => {
        const made = await aging();
        const base = made.recovered.nextOffset;
        const received = made.clock.now;
        await made.store.commit([
          ...appendAll(Array.from({ length: 10 }, (_, i) => message(base + i, { receivedAt: received }))),
          { op: "session-put", session: session("slow") },
          { op: "delivery-put", delivery: delivery("slow", base + 1) },
          { op: "cursor-put", name: "uplink", offset: base + 6 },
          { op: "cursor-put", name: "archive", offset: base + 3 },
        ]);
        const { store, recovered } = await age(made, made.store);
        // At or below the lowest cursor (base + 3) and unreferenced: expired. Above: kept.
        expect(await offsets(store, base)).toEqual([base + 1, ...Array.from({ length: 6 }, (_, i) => base + 4 + i)]);
        expect(recovered.cursors).toEqual({ uplink: base + 6, archive: base + 3 });
        expect(sessionOf(recovered, "slow")!.deliveries.map((d) => d.delivery.offset)).toEqual([base + 1]);
      });

      test("moving or deleting cursors releases their messages to age trimming", async () => {
        const made = await aging();
        const base = made.recovered.nextOffset;
        const received = made.clock.now;
        await made.store.commit([
          ...appendAll(Array.from({ length: 10 }, (_, i) => message(base + i, { receivedAt: received }))),
          { op: "cursor-put", name: "uplink", offset: base + 2 },
          { op: "cursor-put", name: "archive", offset: base - 1 },
        ]);
        let again = await age(made, made.store);
        // The archive reader has read nothing: everything stays, however old.
        expect(await offsets(again.store, base)).toHaveLength(10);

        await again.store.commit([{ op: "cursor-put", name: "archive", offset: base + 5 }]);
        again = await age(made, again.store);
        // Now the lowest cursor is the uplink's.
        expect(await offsets(again.store, base)).toEqual(Array.from({ length: 7 }, (_, i) => base + 3 + i));

        await again.store.commit([{ op: "cursor-delete", name: "uplink" }]);
        again = await age(made, again.store);
        expect(await offsets(again.store, base)).toEqual([base + 6, base + 7, base + 8, base + 9]);

        await again.store.commit([{ op: "cursor-delete", name: "archive" }]);
        again = await age(made, again.store);
        // No cursors left: age alone decides.
        expect(await offsets(again.store, base)).toEqual([]);
        expect(again.recovered.cursors).toEqual({});
        expect(again.recovered.nextOffset).toBeGreaterThan(base + 9);
      });

      test("young messages are kept whatever the cursors say", async () => {
        const made = await aging();
        const base = made.recovered.nextOffset;
        await made.store.commit([
          ...appendAll(Array.from({ length: 3 }, (_, i) => message(base + i, { receivedAt: made.clock.now }))),
          { op: "cursor-put", name: "uplink", offset: base + 100 },
        ]);
        made.clock.now += ttl / 2;
        await made.store.commit([]);
        const again = await made.reopen();
        expect(await offsets(again.store, base)).toEqual([base, base + 1, base + 2]);
      });
    });
  }
}
