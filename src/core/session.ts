import type { Message, QoS, SessionRecord, SubscriptionRecord } from "../store/store.ts";
import type { EncodeCache } from "./outbound-encoder.ts";
import { InflightTable } from "./inflight-table.ts";
import type { Peer } from "./peer.ts";
import type { RoomHold } from "./publisher-flow.ts";

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
  /**
   * The commit that writes this delivery's record, when it was made outside a publish's
   * commit (a retained message on SUBSCRIBE, a shared message handed over) and may not be
   * durable yet. A QoS 2 PUBLISH to a persistent session waits for it (OutboundFlow#transmit).
   */
  recordCommit?: Promise<void> | undefined;
  /** Phase "pubrel" and its PUBREL still waiting for the commit that makes the phase durable. */
  releasePending?: boolean;
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
  /**
   * Persistent sessions: packet ids whose last message completed but whose completion is
   * not durable yet; see takePacketId. Not a Set, for the reason InflightTable gives.
   */
  #settlingIds: InflightTable<true> | undefined;
  /** QoS 2 deliveries past PUBREC whose PUBREL waits for its commit, in PUBREC order [MQTT-4.6.0-4]. */
  #pendingReleases: Outbound[] | undefined;
  /** Publishers waiting for room in this session's queue (PublisherFlow). */
  roomWaiters: RoomHold[] | undefined;
  /** Counts messages acknowledged or taken from the queue, so a stall can be told from slowness. */
  progress = 0;
  /** Made no progress while publishers waited: nobody waits for it until its queue is empty. */
  stalled = false;
  stallTimer: unknown;
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

  /**
   * The packet id to send `o` under now, or 0 when it must wait for the id to be free.
   *
   * A persistent session names a delivery by its log offset: the id is a function of the
   * offset alone (`packetIdFor`), so it is known from durable state and the PUBLISH need not
   * wait for a commit recording it. After a crash the delivery is re-sent under the same id
   * [MQTT-4.4.0-1] whether or not its "sent" mark reached the disk; a receiver that already
   * answered it with PUBREC still holds that id and takes the re-send for the duplicate it is
   * [MQTT-4.3.3-9] (without the mark the re-send lacks DUP, which the receiver may not rely
   * on anyway). Two rules keep one id from naming two messages:
   * - ids are unique among the messages in flight [MQTT-2.2.1-3]: a delivery whose id is in
   *   use (its offset is a multiple of 65,535 away from one in flight) waits its turn;
   * - an id whose last message completed is reused only once that completion is durable
   *   (`idSettling`). Otherwise a crash could bring back the old message in flight under
   *   the id the new one was sent with: its re-sent PUBREL (or PUBLISH) would then release
   *   (or be swallowed as) the new message at the receiver, which would take the new one's
   *   own re-send for a new message and deliver it twice.
   * Sessions that end with their connection keep nothing across a restart and number
   * sequentially.
   */
  takePacketId(o: Outbound): number {
    // Every QoS>0 message is logged, so its offset is at least 1; anything else numbers sequentially.
    if (!this.persistent || o.message.offset < 1) return this.allocatePacketId();
    const id = packetIdFor(o.message.offset);
    return this.inflight.has(id) || this.#settlingIds?.has(id) === true ? 0 : id;
  }

  /** `id`'s last message completed; its completion is not durable yet (see takePacketId). */
  idSettling(id: number): void {
    (this.#settlingIds ??= new InflightTable<true>()).set(id, true);
  }

  /** `id`'s last completion is durable: the id may name another message. */
  idSettled(id: number): void {
    this.#settlingIds?.delete(id);
  }

  /** QoS 2 deliveries past PUBREC whose PUBREL waits for its commit, oldest PUBREC first [MQTT-4.6.0-4]. */
  get pendingReleases(): Outbound[] {
    return this.#pendingReleases ??= [];
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

/** The packet id of the delivery of the message at log `offset` to a persistent session (1..65535). */
export function packetIdFor(offset: number): number {
  return ((offset - 1) % 65535) + 1;
}
