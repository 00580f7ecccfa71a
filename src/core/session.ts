import type { Message, QoS, SessionRecord, SubscriptionRecord } from "../store/store.ts";
import type { EncodeCache } from "./outbound-encoder.ts";
import { InflightTable } from "./inflight-table.ts";
import type { Peer } from "./peer.ts";

/** One message owed to a session, in its queue or in flight. */
export interface Outbound {
  message: Message;
  qos: QoS;
  /** RETAIN flag to send (retain-as-published already applied). */
  retain: boolean;
  subscriptionIds: number[] | undefined;
  packetId: number;
  phase: "queued" | "sent" | "pubrel";
  /** `group\0filter` of the shared subscription it came through, for redistribution. */
  shareKey: string | undefined;
  /**
   * The message's encodings, shared with the other deliveries of the same publish, so a
   * copy sent later from the queue is patched, not encoded again. Dropped once sent.
   */
  cache?: EncodeCache | undefined;
}

export interface ActiveSubscription extends SubscriptionRecord {
  /** Filter without the $share prefix. */
  plainFilter: string;
  group: string | undefined;
}

/**
 * The state MQTT calls a Session (spec 4.1): subscriptions, messages owed and QoS 2
 * receive state. It outlives connections when its expiry interval is above zero.
 */
export class Session {
  subscriptions = new Map<string, ActiveSubscription>();
  /** Messages waiting for room in the in-flight window, oldest first. */
  queue: Outbound[] = [];
  #queueHead = 0;
  /** Payload bytes of the queued messages, for `maxQueuedBytes`. */
  #queuedBytes = 0;
  /** Sent and not yet acknowledged, by packet id (not a Map: see InflightTable). */
  inflight = new InflightTable<Outbound>();
  /** QoS 2 packet ids received and not yet released (spec 4.3.3, method A); made on first use. */
  get qos2Incoming(): Set<number> {
    return this.#qos2Incoming ??= new Set<number>();
  }
  #qos2Incoming: Set<number> | undefined;
  /** The connection attached to it, if any. */
  client: Peer | undefined;
  /**
   * The username that opened the session (null: an anonymous client); undefined for a
   * session recovered from a record written before owners were kept. `AuthPort.claim`
   * decides whether another username may take the session over.
   */
  owner: string | null | undefined = undefined;
  disconnectedAt: number | undefined;
  expiryTimer: unknown;
  willTimer: unknown;
  /** Set when the session is gone for good, so late callbacks leave it alone. */
  ended = false;
  /**
   * Routing scratch (Router.route): the routing pass that last matched this session, and
   * the index of its delivery in that pass. Replaces a Map of session to delivery per message.
   */
  routeMark = 0;
  routeIndex = 0;
  #nextPacketId = 1;

  constructor(
    readonly clientId: string,
    public protocolVersion: 3 | 4 | 5,
    /** Session Expiry Interval in seconds. */
    public expiryInterval: number,
  ) {}

  /** Whether its state must survive a broker restart. */
  get persistent(): boolean {
    return this.expiryInterval > 0;
  }

  get queuedCount(): number {
    return this.queue.length - this.#queueHead;
  }

  get queuedBytes(): number {
    return this.#queuedBytes;
  }

  enqueue(o: Outbound): void {
    this.queue.push(o);
    this.#queuedBytes += o.message.payload.byteLength;
  }

  peek(): Outbound | undefined {
    return this.queue[this.#queueHead];
  }

  dequeue(): Outbound | undefined {
    const o = this.queue[this.#queueHead];
    if (o === undefined) return undefined;
    this.queue[this.#queueHead++] = undefined as unknown as Outbound; // free the reference
    this.#queuedBytes -= o.message.payload.byteLength;
    // Compact now and then so the array does not grow without bound.
    if (this.#queueHead > 1024 && this.#queueHead * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.#queueHead);
      this.#queueHead = 0;
    }
    return o;
  }

  /** Remove and return everything queued (for redistribution or discard). */
  drainQueue(): Outbound[] {
    const rest = this.queue.slice(this.#queueHead);
    this.queue = [];
    this.#queueHead = 0;
    this.#queuedBytes = 0;
    return rest;
  }

  /** A packet id not in use by any in-flight message [MQTT-2.2.1-3]. */
  allocatePacketId(): number {
    for (let tries = 0; tries < 65535; tries++) {
      const id = this.#nextPacketId;
      this.#nextPacketId = id === 65535 ? 1 : id + 1;
      if (!this.inflight.has(id)) return id;
    }
    throw new Error("no free packet identifier");
  }

  /** Continue numbering after recovered in-flight ids. */
  notePacketId(id: number): void {
    if (id >= this.#nextPacketId) this.#nextPacketId = id === 65535 ? 1 : id + 1;
  }

  toRecord(): SessionRecord {
    const rec: SessionRecord = {
      clientId: this.clientId,
      expiryInterval: this.expiryInterval,
      protocolVersion: this.protocolVersion,
      subscriptions: [...this.subscriptions.values()].map((s) => {
        const r: SubscriptionRecord = {
          filter: s.filter,
          qos: s.qos,
          noLocal: s.noLocal,
          retainAsPublished: s.retainAsPublished,
          retainHandling: s.retainHandling,
        };
        if (s.subscriptionId !== undefined) r.subscriptionId = s.subscriptionId;
        return r;
      }),
    };
    if (this.disconnectedAt !== undefined) rec.disconnectedAt = this.disconnectedAt;
    if (this.owner !== undefined) rec.owner = this.owner;
    return rec;
  }
}
