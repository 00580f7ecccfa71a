import {
  type DeliveryRecord,
  type Message,
  type QoS,
  QUEUED_RETAIN,
  type QueuedDeliveries,
  type Recovered,
  type RecoveredRetained,
  type RecoveredSession,
  type SessionRecord,
} from "./store.ts";

/** The scalar part of a recovery. */
export type RecoveredTail = Pick<Recovered, "nextOffset" | "cursors" | "counters">;

/**
 * What a store's recovery produces, one item at a time, so that it never holds a table at
 * once: the retained index first, then each session followed by its deliveries in
 * delivery order.
 */
export interface RecoverySink {
  retained(topic: string, qos: QoS, bytes: number, expiresAt: number | undefined): void;
  /** A session; the deliveries that follow are its own, until the next session. */
  session(record: SessionRecord, qos2Incoming: number[]): void;
  /** `message` is given for deliveries in flight (phase sent or pubrel, with a packet id). */
  delivery(delivery: DeliveryRecord, bytes: number, message: Message | undefined): void;
}

/**
 * Builds a Recovered in columns: typed arrays grow as items arrive, and no object is made
 * per queued message or retained topic besides the topic string. From the storage thread
 * the arrays cross to the event loop as transferred buffers (`transferables`), not copies.
 */
export class RecoveryBuilder implements RecoverySink {
  #topics: string[] = [];
  #qos = new Uint8Array(256);
  #bytes = new Uint32Array(256);
  #expires = new Float64Array(256);
  #sessions: RecoveredSession[] = [];
  #queue: ColumnsBuilder | undefined;
  #transfer: ArrayBuffer[] = [];

  retained(topic: string, qos: QoS, bytes: number, expiresAt: number | undefined): void {
    const i = this.#topics.length;
    if (i === this.#qos.length) {
      this.#qos = grow(this.#qos, Uint8Array);
      this.#bytes = grow(this.#bytes, Uint32Array);
      this.#expires = grow(this.#expires, Float64Array);
    }
    this.#topics.push(topic);
    this.#qos[i] = qos;
    this.#bytes[i] = bytes;
    this.#expires[i] = expiresAt ?? NaN;
  }

  session(record: SessionRecord, qos2Incoming: number[]): void {
    this.#closeSession();
    this.#queue = new ColumnsBuilder();
    this.#sessions.push({ session: record, inflight: [], queued: EMPTY_QUEUE, qos2Incoming });
  }

  delivery(d: DeliveryRecord, bytes: number, message: Message | undefined): void {
    const owner = this.#sessions.at(-1);
    if (!owner || !this.#queue) throw new Error("recovery: a delivery before any session");
    if (message !== undefined && d.phase !== "queued" && d.packetId !== undefined) {
      owner.inflight.push({ delivery: d, message });
    } else this.#queue.push(d, bytes);
  }

  finish(tail: RecoveredTail): Recovered {
    this.#closeSession();
    const n = this.#topics.length;
    const retained: RecoveredRetained = {
      topics: this.#topics,
      qos: this.#qos.slice(0, n),
      bytes: this.#bytes.slice(0, n),
      expiresAt: this.#expires.slice(0, n),
    };
    this.#transfer.push(...buffers(retained.qos, retained.bytes, retained.expiresAt));
    return { ...tail, retained, sessions: this.#sessions };
  }

  /** The buffers of what `finish` returned, to transfer rather than copy across threads. */
  transferables(): ArrayBuffer[] {
    return this.#transfer;
  }

  #closeSession(): void {
    const owner = this.#sessions.at(-1);
    if (!owner || !this.#queue) return;
    owner.queued = this.#queue.finish();
    const q = owner.queued;
    if (q.length > 0) this.#transfer.push(...buffers(q.offsets, q.bytes, q.flags));
    this.#queue = undefined;
  }
}

const EMPTY_QUEUE: QueuedDeliveries = {
  length: 0,
  offsets: new Float64Array(0),
  bytes: new Uint32Array(0),
  flags: new Uint8Array(0),
  subscriptionIds: new Map(),
};

class ColumnsBuilder {
  #n = 0;
  #offsets = new Float64Array(16);
  #bytes = new Uint32Array(16);
  #flags = new Uint8Array(16);
  #ids: Map<number, number[]> | undefined;

  push(d: DeliveryRecord, bytes: number): void {
    const i = this.#n++;
    if (i === this.#offsets.length) {
      this.#offsets = grow(this.#offsets, Float64Array);
      this.#bytes = grow(this.#bytes, Uint32Array);
      this.#flags = grow(this.#flags, Uint8Array);
    }
    this.#offsets[i] = d.offset;
    this.#bytes[i] = bytes;
    this.#flags[i] = d.qos | (d.retain ? QUEUED_RETAIN : 0);
    if (d.subscriptionIds !== undefined) (this.#ids ??= new Map()).set(i, d.subscriptionIds);
  }

  finish(): QueuedDeliveries {
    if (this.#n === 0) return EMPTY_QUEUE;
    return {
      length: this.#n,
      offsets: this.#offsets.slice(0, this.#n),
      bytes: this.#bytes.slice(0, this.#n),
      flags: this.#flags.slice(0, this.#n),
      subscriptionIds: this.#ids ?? new Map(),
    };
  }
}

/** The buffers of typed arrays made here (never shared memory). */
function buffers(...arrays: Array<Uint8Array | Uint32Array | Float64Array>): ArrayBuffer[] {
  return arrays.map((a) => a.buffer as ArrayBuffer);
}

function grow<T extends Uint8Array | Uint32Array | Float64Array>(
  a: T,
  make: new (n: number) => T,
): T {
  const b = new make(a.length * 2);
  b.set(a);
  return b;
}
