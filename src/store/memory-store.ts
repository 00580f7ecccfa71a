import { MinHeap } from "./min-heap.ts";
import type { DeliveryRecord, Message, Mutation, Recovered, SessionRecord, Store, StoreStats } from "./store.ts";

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
  #log = new Map<number, Message>();
  #refs = new Map<number, number>();
  #retained = new Map<string, Message>();
  #sessions = new Map<string, SessionRecord>();
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
    const sessions = [...this.#sessions.values()].map((session) => {
      const deliveries = [...this.#deliveries.values()]
        .filter((d) => d.clientId === session.clientId)
        .sort((a, b) => a.offset - b.offset)
        .flatMap((delivery) => {
          const message = this.#log.get(delivery.offset);
          return message ? [{ delivery: { ...delivery }, message }] : [];
        });
      return {
        session: structuredClone(session),
        deliveries,
        qos2Incoming: [...(this.#qos2.get(session.clientId) ?? [])],
      };
    });
    return Promise.resolve({
      nextOffset: this.#nextOffset,
      retained: [...this.#retained.values()],
      sessions,
      cursors: Object.fromEntries(this.#cursors),
      counters: Object.fromEntries(this.#counters),
    });
  }

  commit(mutations: readonly Mutation[]): Promise<void> {
    for (const m of mutations) this.#apply(m);
    this.#trim();
    return Promise.resolve();
  }

  #apply(m: Mutation): void {
    switch (m.op) {
      case "append":
        if (m.message.offset < this.#nextOffset - 1 && !this.#log.has(m.message.offset)) this.#unordered = true;
        this.#log.set(m.message.offset, m.message);
        this.#pushCandidate(m.message.offset);
        this.#bytes += m.message.payload.byteLength + m.message.topic.length;
        if (m.message.offset >= this.#nextOffset) this.#nextOffset = m.message.offset + 1;
        return;
      case "retain":
        if (m.message) this.#retained.set(m.topic, m.message);
        else this.#retained.delete(m.topic);
        return;
      case "session-put":
        this.#sessions.set(m.session.clientId, structuredClone(m.session));
        return;
      case "session-delete":
        this.#sessions.delete(m.clientId);
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
        if (d) d.phase = "pubrel";
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

  stats(): StoreStats {
    return { messages: this.#log.size, bytes: this.#bytes, droppedMessages: this.#dropped };
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}
