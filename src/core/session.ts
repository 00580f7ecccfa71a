import type { Message, SessionRecord, SessionState, SubscriptionRecord } from "../store/store.ts";
import { DeliveryQueue, type Outbound, PAGE, Pending, type Queued } from "./delivery-queue.ts";
import { InflightTable } from "./inflight-table.ts";
import { type MemoryAccount, UNCOUNTED } from "./memory-budget.ts";
import type { Peer } from "./peer.ts";
import type { RoomHold } from "./publisher-flow.ts";
import { type ActiveSubscription, SessionSubscriptions } from "./subscription.ts";

export { type Outbound, Pending, type Queued } from "./delivery-queue.ts";
export { ActiveSubscription } from "./subscription.ts";

/** Reads the bodies of a session's pending entries, then pumps the session (core/queue-loader.ts). */
export interface QueueLoader {
  load(s: Session): void;
  /**
   * Entries per read. Dequeuing within this many entries of an unread one starts the next
   * read, so a page is read while the one before it drains.
   */
  readonly pageSize: number;
}

/**
 * What an offline session keeps of its queue in memory when the store holds bodies outside
 * the heap (entries, and payload bytes); the rest wait there, their delivery records
 * durable, until it drains.
 */
export const RESIDENT_WHEN_OFFLINE = { entries: 1024, bytes: 1024 * 1024 };

/**
 * The state MQTT calls a Session (spec 4.1): subscriptions, messages owed and QoS 2
 * receive state. It outlives connections when its expiry interval is above zero.
 */
export class Session {
  /** Its subscriptions; the router adds and removes them (Router.subscribe). */
  readonly subscriptions = new SessionSubscriptions();
  /**
   * Messages waiting for room in the in-flight window, oldest first; made on first use.
   * Most connected sessions never queue (deliveries go straight out while the window has
   * room), and an idle one then holds neither the queue nor its two arrays (112 bytes).
   */
  get queue(): DeliveryQueue {
    // Counted where the in-flight table counts (the memory budget; nothing once released).
    return this.#queue ??= new DeliveryQueue(this.inflight.account);
  }
  #queue: DeliveryQueue | undefined;
  /** Sent and not yet acknowledged, by packet id (not a Map: see InflightTable). */
  readonly inflight: InflightDeliveries;
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
  /** Reads pending entries' bodies; set by the registry. */
  loader: QueueLoader | undefined;
  /** A read for this session's pending entries is under way (see QueueLoader). */
  loading = false;
  /**
   * The store keeps bodies outside the heap (Store.offloadsBodies), so an offline
   * persistent session may leave its queue's bodies there.
   */
  offload = false;
  /** See RESIDENT_WHEN_OFFLINE (tests lower it). */
  residentWhenOffline = RESIDENT_WHEN_OFFLINE;
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
    /** Where what its queue and in-flight table hold in memory is counted (the memory budget). */
    account: MemoryAccount = UNCOUNTED,
  ) {
    this.inflight = new InflightDeliveries(account);
  }

  /** The session ended: what its queue and in-flight table held no longer counts. */
  releaseMemory(): void {
    this.#queue?.release();
    this.inflight.release();
  }

  /** Whether its state must survive a broker restart. */
  get persistent(): boolean {
    return this.expiryInterval > 0;
  }

  get queuedCount(): number {
    return this.#queue?.length ?? 0;
  }

  get queuedBytes(): number {
    return this.#queue?.bytes ?? 0;
  }

  /**
   * Queue `e`. An offline persistent session whose queue already holds
   * RESIDENT_WHEN_OFFLINE entries keeps only a Pending: the message and its delivery
   * record are in the store's commit already, and a read comes after it.
   */
  enqueue(e: Queued): void {
    if (!(e instanceof Pending) && this.client === undefined && this.offload && this.#storedDelivery(e)) {
      const limit = this.residentWhenOffline;
      if (this.queuedCount >= limit.entries || this.queuedBytes >= limit.bytes) e = pendingOf(e);
    }
    this.queue.push(e);
  }

  /**
   * Whether `o`'s message and delivery record are in the store: a QoS>0 delivery to a
   * persistent session always is (Broker.publish writes both). Shared-subscription
   * deliveries stay in memory: they move between members (OutboundFlow.redistributeShared).
   */
  #storedDelivery(o: Outbound): boolean {
    return this.persistent && o.qos > 0 && o.message.offset > 0 && o.shareKey === undefined && o.phase === "queued";
  }

  /**
   * The next delivery whose message is in memory, or undefined: when the head of the queue
   * is a pending entry, the loader is asked for its page and pumps the session once it
   * has it. Entries whose message the loader did not find are skipped.
   */
  dequeue(): Outbound | undefined {
    const o = this.peek();
    if (o === undefined) return undefined;
    const queue = this.#queue!; // peek found o there
    queue.shift();
    if (queue.unreadAt(this.loader?.pageSize ?? PAGE)) this.loader?.load(this);
    return o;
  }

  /**
   * The delivery `dequeue` would return, without taking it (the outbound flow checks its
   * packet id first). Entries whose message the loader did not find are dropped here.
   */
  peek(): Outbound | undefined {
    const queue = this.#queue;
    if (queue === undefined) return undefined;
    for (;;) {
      const e = queue.peek();
      if (e === undefined) return undefined;
      if (!(e instanceof Pending)) return e;
      if (e.unread) {
        this.loader?.load(this);
        return undefined;
      }
      if (e.loaded !== undefined) return e.loaded;
      queue.shift(); // gone
    }
  }

  /**
   * The session went offline: beyond its first RESIDENT_WHEN_OFFLINE entries, queued
   * messages whose delivery records are stored stay in the store only.
   */
  setAsideQueue(): void {
    if (!this.offload || !this.persistent || this.#queue === undefined) return;
    const limit = this.residentWhenOffline;
    this.#queue.setAside(limit.entries, limit.bytes, (e) => {
      // Only log entries: a retained message read by topic has no delivery record of its own.
      if (e instanceof Pending) {
        return e.loaded !== undefined && e.topic === undefined ? pendingOf(e.loaded) : undefined;
      }
      return this.#storedDelivery(e) ? pendingOf(e) : undefined;
    });
  }

  /**
   * Remove and return the queued deliveries of shared subscriptions (they move to other
   * members when this one leaves, spec 4.8.2); the rest keep their order.
   */
  takeShared(): Outbound[] {
    return this.#queue?.take((e): e is Outbound => !(e instanceof Pending) && e.shareKey !== undefined) ?? [];
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

  /** The session's own fields, without subscriptions (stored one by one, see subscriptionRecord). */
  toState(): SessionState {
    const state: SessionState = {
      clientId: this.clientId,
      expiryInterval: this.expiryInterval,
      protocolVersion: this.protocolVersion,
    };
    if (this.disconnectedAt !== undefined) state.disconnectedAt = this.disconnectedAt;
    if (this.owner !== undefined) state.owner = this.owner;
    return state;
  }

  /** The whole record, every subscription included. */
  toRecord(): SessionRecord {
    return { ...this.toState(), subscriptions: [...this.subscriptions.values()].map(subscriptionRecord) };
  }
}

/**
 * A session's in-flight deliveries, each counted in the memory budget (an entry and its
 * message's body) while it is in the table.
 */
export class InflightDeliveries extends InflightTable<Outbound> {
  /**
   * How many entries are QoS 2 deliveries past PUBREC ("pubrel" phase): the client has the
   * message, Ferry holds only its packet id and waits for PUBCOMP. They count against the
   * client's Receive Maximum but not against the window of PUBLISHes (OutboundFlow#hasRoom).
   */
  releasing = 0;

  /** Where the table's entries are counted (the session's queue counts there too). */
  constructor(public account: MemoryAccount) {
    super();
  }

  override set(id: number, o: Outbound): this {
    const old = this.get(id);
    if (old !== o) {
      this.account.holdEntry(o.message);
      if (o.phase === "pubrel") this.releasing++;
      if (old !== undefined) {
        this.account.releaseEntry(old.message);
        if (old.phase === "pubrel") this.releasing--;
      }
    }
    return super.set(id, o);
  }

  override delete(id: number): boolean {
    const old = this.get(id);
    if (old === undefined) return false;
    this.account.releaseEntry(old.message);
    if (old.phase === "pubrel") this.releasing--;
    return super.delete(id);
  }

  /**
   * `o`, an entry of this table, got its PUBREC: it moves to the "pubrel" phase and lets go
   * of the message's body, which will never be sent again (a PUBREL carries only the id), so
   * a client that withholds PUBCOMP holds ids, not payloads.
   */
  released(o: Outbound): void {
    this.account.releaseEntry(o.message);
    o.message = bodiless(o.message);
    o.cache = undefined;
    this.account.holdEntry(o.message);
    o.phase = "pubrel";
    this.releasing++;
  }

  /** Gives back what the table holds to its account, which it then stops reporting to (the session ended). */
  release(): void {
    const account = this.account;
    this.account = UNCOUNTED;
    for (const o of this.values()) account.releaseEntry(o.message);
  }
}

/** The stored form of a subscription. */
export function subscriptionRecord(s: ActiveSubscription): SubscriptionRecord {
  const r: SubscriptionRecord = {
    filter: s.filter,
    qos: s.qos,
    noLocal: s.noLocal,
    retainAsPublished: s.retainAsPublished,
    retainHandling: s.retainHandling,
  };
  if (s.subscriptionId !== undefined) r.subscriptionId = s.subscriptionId;
  return r;
}

const NO_BODY = new Uint8Array(0);

/** What a delivery past PUBREC still needs of its message: offset, topic and flags, no payload or properties. */
function bodiless(m: Message): Message {
  return {
    offset: m.offset,
    topic: m.topic,
    payload: NO_BODY,
    qos: m.qos,
    retain: m.retain,
    receivedAt: m.receivedAt,
    origin: m.origin,
  };
}

function pendingOf(o: Outbound): Pending {
  return new Pending(o.message.offset, undefined, o.message.payload.byteLength, o.qos, o.retain, o.subscriptionIds);
}

/** The packet id of the delivery of the message at log `offset` to a persistent session (1..65535). */
export function packetIdFor(offset: number): number {
  return ((offset - 1) % 65535) + 1;
}
