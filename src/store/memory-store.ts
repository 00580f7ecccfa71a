import { MinHeap } from "./min-heap.ts";
import { RecoveryBuilder } from "./recovery-builder.ts";
import {
  type DeliveryRecord,
  type Message,
  type Mutation,
  type Recovered,
  RETAINED_COPY_ORIGIN,
  type SessionState,
  type Store,
  type StoreStats,
  type SubscriptionRecord,
} from "./store.ts";

const key = (clientId: string, offset: number) => `${clientId}\u0000${offset}`;

/**
 * A store that keeps everything in memory: for tests, and for `durability: memory`
 * where a restart starts empty. It honours the same contract as the SQLite store,
 * including that the log keeps messages that deliveries still refer to. It has no
 * age trimming, only the message cap; like SQLite's size quota, the cap may drop
 * messages above a reader's cursor (counted in stats().droppedMessages).
 */
export class MemoryStore implements Store {
  readonly kind = "memory";
  readonly offloadsBodies = false;
  #log = new Map<number, Message>();
  #refs = new Map<number, number>();
  #retained = new Map<string, Message>();
  #sessions = new Map<string, SessionState>();
  #subscriptions = new Map<string, Map<string, SubscriptionRecord>>();
  #deliveries = new Map<string, DeliveryRecord>();
  #qos2 = new Map<string, Set<number>>();
  #cursors = new Map<string, number>();
  #counters = new Map<string, number>();
  #nextOffset = 1;
  #bytes = 0;
  #dropped = 0;
  /** Set when an append arrived below the highest offset: #log's insertion order is then not offset order. */
  #unordered = false;
  /**
   * Offsets that were unreferenced when pushed: at append, and when their last delivery
   * went. Trimming pops the lowest and skips those referenced again or gone, so it never
   * walks past the messages sessions still owe (that walk, once per commit while a large
   * backlog was owed, made draining 40,000 queued messages take 50 s: issue 19).
   */
  #trimCandidates = new MinHeap();

  /** @param maxLogMessages unreferenced messages kept for history before the oldest are trimmed */
  constructor(private readonly maxLogMessages = 10_000) {}

  open(): Promise<Recovered> {
    this.#dropped = 0; // stats count "since open", as in the SQLite store
    const out = new RecoveryBuilder();
    for (const m of this.#retained.values()) out.retained(m.topic, m.qos, m.payload.byteLength, m.expiresAt);
    const owed = new Map<string, DeliveryRecord[]>();
    for (const d of this.#deliveries.values()) {
      const list = owed.get(d.clientId);
      if (list) list.push(d);
      else owed.set(d.clientId, [d]);
    }
    for (const [clientId, state] of this.#sessions) {
      const subscriptions = [...(this.#subscriptions.get(clientId)?.values() ?? [])];
      out.session(structuredClone({ ...state, subscriptions }), [...(this.#qos2.get(clientId) ?? [])]);
      for (const d of (owed.get(clientId) ?? []).sort((a, b) => a.offset - b.offset)) {
        const message = this.#log.get(d.offset);
        if (!message) continue;
        out.delivery({ ...d }, message.payload.byteLength, message);
      }
    }
    return Promise.resolve(out.finish({
      nextOffset: this.#nextOffset,
      cursors: Object.fromEntries(this.#cursors),
      counters: Object.fromEntries(this.#counters),
    }));
  }

  commit(mutations: readonly Mutation[]): Promise<void> {
    for (const m of mutations) this.#apply(m);
    this.#trim();
    return Promise.resolve();
  }

  #apply(m: Mutation): void {
    switch (m.op) {
      case "append":
        this.#append(m.message);
        return;
      case "retained-copy": {
        const source = this.#retained.get(m.topic);
        if (!source) return;
        this.#append({ ...source, offset: m.offset, origin: RETAINED_COPY_ORIGIN });
        this.#apply({ op: "delivery-put", delivery: m.delivery });
        return;
      }
      case "retain":
        if (m.message) this.#retained.set(m.topic, m.message);
        else this.#retained.delete(m.topic);
        return;
      case "session-put": {
        const { subscriptions, ...state } = structuredClone(m.session);
        this.#sessions.set(state.clientId, state);
        this.#subscriptions.set(state.clientId, new Map(subscriptions.map((sub) => [sub.filter, sub])));
        return;
      }
      case "session-update": {
        const { subscriptions: _, ...state } = structuredClone(m.session) as SessionState & { subscriptions?: unknown };
        this.#sessions.set(state.clientId, state);
        return;
      }
      case "subscription-put": {
        let subs = this.#subscriptions.get(m.clientId);
        if (!subs) this.#subscriptions.set(m.clientId, subs = new Map());
        subs.set(m.subscription.filter, { ...m.subscription });
        return;
      }
      case "subscription-delete":
        this.#subscriptions.get(m.clientId)?.delete(m.filter);
        return;
      case "session-delete":
        this.#sessions.delete(m.clientId);
        this.#subscriptions.delete(m.clientId);
        for (const [k, d] of this.#deliveries) {
          if (d.clientId === m.clientId) this.#dropDelivery(k, d);
        }
        this.#qos2.delete(m.clientId);
        return;
      case "delivery-put": {
        const k = key(m.delivery.clientId, m.delivery.offset);
        if (!this.#deliveries.has(k)) {
          this.#refs.set(m.delivery.offset, (this.#refs.get(m.delivery.offset) ?? 0) + 1);
        }
        this.#deliveries.set(k, { ...m.delivery });
        return;
      }
      case "delivery-sent": {
        const d = this.#deliveries.get(key(m.clientId, m.offset));
        if (d) {
          d.packetId = m.packetId;
          d.phase = "sent";
        }
        return;
      }
      case "delivery-pubrel": {
        const d = this.#deliveries.get(key(m.clientId, m.offset));
        if (d) {
          d.packetId = m.packetId;
          d.phase = "pubrel";
        }
        return;
      }
      case "delivery-delete-offset": {
        const k = key(m.clientId, m.offset);
        const d = this.#deliveries.get(k);
        if (d) this.#dropDelivery(k, d);
        return;
      }
      case "qos2-in-put": {
        let set = this.#qos2.get(m.clientId);
        if (!set) this.#qos2.set(m.clientId, set = new Set());
        set.add(m.packetId);
        return;
      }
      case "qos2-in-delete":
        this.#qos2.get(m.clientId)?.delete(m.packetId);
        return;
      case "cursor-put":
        this.#cursors.set(m.name, m.offset);
        return;
      case "cursor-delete":
        this.#cursors.delete(m.name);
        return;
      case "counter-put":
        this.#counters.set(m.name, m.value);
        return;
    }
  }

  #append(message: Message): void {
    if (message.offset < this.#nextOffset - 1 && !this.#log.has(message.offset)) this.#unordered = true;
    this.#log.set(message.offset, message);
    this.#pushCandidate(message.offset);
    this.#bytes += message.payload.byteLength + message.topic.length;
    if (message.offset >= this.#nextOffset) this.#nextOffset = message.offset + 1;
  }

  #dropDelivery(k: string, d: DeliveryRecord): void {
    this.#deliveries.delete(k);
    const n = (this.#refs.get(d.offset) ?? 1) - 1;
    if (n <= 0) {
      this.#refs.delete(d.offset);
      this.#pushCandidate(d.offset);
    } else this.#refs.set(d.offset, n);
  }

  /** Re-sorts the log by offset; readLog and trimming rely on insertion order being offset order. */
  #order(): void {
    if (!this.#unordered) return;
    this.#log = new Map([...this.#log].sort(([a], [b]) => a - b));
    this.#unordered = false;
  }

  #pushCandidate(offset: number): void {
    // Stale entries (referenced again, or pushed twice) leave only when popped; rebuild
    // when they outnumber the log, so the heap stays within a small multiple of it.
    if (this.#trimCandidates.size > 2 * this.#log.size + 1024) {
      this.#trimCandidates = new MinHeap();
      for (const o of this.#log.keys()) if (!this.#refs.has(o)) this.#trimCandidates.push(o);
    }
    this.#trimCandidates.push(offset);
  }

  /** Drops the oldest unreferenced messages, in batches: past cap + 10 %, down to the cap. */
  #trim(): void {
    const slack = Math.max(1, Math.floor(this.maxLogMessages / 10));
    if (this.#log.size <= this.maxLogMessages + slack) return;
    const candidates = this.#trimCandidates;
    while (this.#log.size > this.maxLogMessages && candidates.size > 0) {
      const offset = candidates.pop();
      this.trimSteps++;
      if (this.#refs.has(offset)) continue; // owed again; pushed anew when its last delivery goes
      const message = this.#log.get(offset);
      if (message === undefined) continue; // a stale duplicate
      this.#log.delete(offset);
      this.#bytes -= message.payload.byteLength + message.topic.length;
      this.#dropped++;
    }
  }

  /** Candidates examined by trimming since construction: for the test that trimming stays linear. */
  trimSteps = 0;

  readLog(from: number, limit: number): Promise<Message[]> {
    const out: Message[] = [];
    if (limit <= 0) return Promise.resolve(out);
    this.#order();
    for (const [offset, message] of this.#log) {
      if (offset < from) continue;
      out.push(message);
      if (out.length >= limit) break;
    }
    return Promise.resolve(out);
  }

  readMessages(offsets: readonly number[]): Promise<Message[]> {
    const out: Message[] = [];
    for (const offset of offsets) {
      const message = this.#log.get(offset);
      if (message) out.push(message);
    }
    return Promise.resolve(out);
  }

  readRetained(topics: readonly string[]): Promise<Message[]> {
    const out: Message[] = [];
    for (const topic of topics) {
      const message = this.#retained.get(topic);
      if (message) out.push(message);
    }
    return Promise.resolve(out);
  }

  stats(): StoreStats {
    return { messages: this.#log.size, bytes: this.#bytes, droppedMessages: this.#dropped };
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
