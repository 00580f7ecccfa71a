import type { ProtocolVersion } from "../mqtt/packets.ts";
import { parseSubscriptionFilter } from "../mqtt/topic.ts";
import type { Mutation, RecoveredSession, Store } from "../store/store.ts";
import type { Clock } from "./clock.ts";
import type { Logger } from "./logger.ts";
import { COSTS, type MemoryAccount, UNCOUNTED } from "./memory-budget.ts";
import type { OutboundFlow } from "./outbound-flow.ts";
import type { Peer } from "./peer.ts";
import type { Router } from "./router.ts";
import { StoreQueueLoader } from "./queue-loader.ts";
import { ActiveSubscription, type Outbound, Session, subscriptionRecord } from "./session.ts";
import { subscriptionOptions } from "./subscription.ts";
import type { Will, WillHandler } from "./will.ts";

const NEVER_EXPIRES = 0xffffffff;

/**
 * Every session by client id: recovery from the store, open (take over, discard on Clean
 * Start, resume), the end of a connection, expiry, and the session's durable record.
 */
export class SessionRegistry {
  readonly sessions = new Map<string, Session>();
  /** Reads the bodies of queued messages that wait in the store (see Session.dequeue). */
  readonly loader: StoreQueueLoader;
  /** Sessions whose record is in the store, so ending them must delete it. */
  #stored = new Set<Session>();

  constructor(
    private readonly clock: Clock,
    private readonly store: Store,
    private readonly logger: Logger,
    private readonly router: Router,
    private readonly flow: OutboundFlow,
    private readonly wills: WillHandler,
    /** Where sessions and what they hold are counted (the memory budget). */
    private readonly account: MemoryAccount = UNCOUNTED,
  ) {
    this.loader = new StoreQueueLoader(store, logger, (s) => flow.pump(s));
  }

  /**
   * Restore the sessions a store recovered, exactly as they were. Queued messages come
   * back as the store's columns of offsets and sizes: their bodies are read a page at a
   * time when the session drains. In-flight ones, bounded by the window, come with their
   * message.
   */
  recover(recovered: RecoveredSession[]): void {
    const now = this.clock.now();
    for (const rs of recovered) {
      const r = rs.session;
      const s = this.#newSession(r.clientId, r.protocolVersion, r.expiryInterval);
      s.owner = r.owner;
      this.sessions.set(s.clientId, s);
      this.#stored.add(s);
      for (const sub of r.subscriptions) {
        const parsed = parseSubscriptionFilter(sub.filter);
        if (typeof parsed === "string") continue;
        const options = subscriptionOptions(sub.qos, sub.noLocal, sub.retainAsPublished, sub.retainHandling);
        this.router.subscribe(
          new ActiveSubscription(s, sub.filter, parsed.filter, parsed.group, options, sub.subscriptionId),
        );
      }
      s.queue.adopt(rs.queued);
      for (const { delivery: d, message } of rs.inflight) {
        const o: Outbound = {
          message,
          qos: d.qos,
          retain: d.retain,
          subscriptionIds: d.subscriptionIds,
          packetId: d.packetId!,
          phase: d.phase,
          shareKey: undefined,
          cache: undefined,
        };
        s.inflight.set(o.packetId, o);
        s.notePacketId(o.packetId);
      }
      for (const id of rs.qos2Incoming) s.qos2Incoming.add(id);
      // A session that was connected when Ferry stopped counts as disconnected now.
      s.disconnectedAt = r.disconnectedAt ?? now;
      this.#scheduleExpiry(s);
    }
  }

  /**
   * Attach `peer` to session `clientId`: take over a live connection with the same id
   * [MQTT-3.1.4-3], discard it on Clean Start [MQTT-3.1.2-4], or resume it.
   */
  async open(
    peer: Peer,
    clientId: string,
    version: ProtocolVersion,
    clean: boolean,
    expiry: number,
    owner: string | null = null,
  ): Promise<{ session: Session; present: boolean }> {
    const existing = this.sessions.get(clientId);
    if (existing?.client && existing.client !== peer) existing.client.takeover();

    let s = this.sessions.get(clientId);
    const mutations: Mutation[] = [];
    if (s && clean) {
      this.#end(s, mutations);
      s = undefined;
    }
    let present = false;
    if (s) {
      present = true;
      this.wills.cancel(s);
      this.clock.clearTimeout(s.expiryTimer);
      s.protocolVersion = version;
      s.expiryInterval = expiry;
      s.disconnectedAt = undefined;
    } else {
      s = this.#newSession(clientId, version, expiry);
      this.sessions.set(clientId, s);
    }
    s.client = peer;
    // Whoever opens it owns it from now on; AuthPort.claim decided before that it may.
    s.owner = owner;
    if (s.persistent) mutations.push(this.#stateMutation(s));
    if (mutations.length > 0) await this.store.commit(mutations);
    return { session: s, present };
  }

  /**
   * `peer`, attached to session `clientId`, ended. `abnormal` means without a DISCONNECT
   * that discards the Will; `closing` that the broker is shutting down.
   */
  closed(peer: Peer, clientId: string, will: Will | undefined, abnormal: boolean, closing: boolean): void {
    const s = this.sessions.get(clientId);
    // Refused before a session existed, or already replaced by a newer connection.
    if (!s || s.client !== peer) return;
    s.client = undefined;
    s.disconnectedAt = this.clock.now();
    if (abnormal && will && !closing) this.wills.arm(s, will);
    this.flow.redistributeShared(s);
    if (closing) return;
    if (s.expiryInterval === 0) {
      const mutations: Mutation[] = [];
      this.#end(s, mutations);
      if (mutations.length > 0) this.#persist(mutations);
      return;
    }
    this.#persist([this.#stateMutation(s)]);
    s.setAsideQueue();
    this.#scheduleExpiry(s);
  }

  /** Persist a session's own fields if it must survive restarts; resolves when durable. */
  persistSession(s: Session): Promise<void> | undefined {
    if (!s.persistent) return undefined;
    return this.store.commit([this.#stateMutation(s)]);
  }

  /**
   * Persist what SUBSCRIBE or UNSUBSCRIBE changed: one write per change, a subscription
   * made (as `changes` holds it) or a filter removed, never the session's other
   * subscriptions. Resolves when durable; undefined when the session is not persistent.
   */
  persistSubscriptions(s: Session, changes: ReadonlyArray<ActiveSubscription | string>): Promise<void> | undefined {
    if (!s.persistent) return undefined;
    if (!this.#stored.has(s)) return this.store.commit([this.#stateMutation(s)]);
    const mutations: Mutation[] = [];
    for (const change of changes) {
      mutations.push(
        typeof change === "string"
          ? { op: "subscription-delete", clientId: s.clientId, filter: change }
          : { op: "subscription-put", clientId: s.clientId, subscription: subscriptionRecord(change) },
      );
    }
    return this.store.commit(mutations);
  }

  /**
   * The write that stores `s`'s own fields: the whole record with its subscriptions the
   * first time (a session that became persistent on a takeover already has some), its
   * fields only afterwards (connects and disconnects leave the subscriptions alone).
   */
  #stateMutation(s: Session): Mutation {
    if (this.#stored.has(s)) return { op: "session-update", session: s.toState() };
    this.#stored.add(s);
    return { op: "session-put", session: s.toRecord() };
  }

  #newSession(clientId: string, version: 3 | 4 | 5, expiry: number): Session {
    const s = new Session(clientId, version, expiry, this.account);
    this.account.addClients(COSTS.session + 2 * clientId.length);
    s.loader = this.loader;
    s.offload = this.store.offloadsBodies;
    return s;
  }

  /** The broker stops: no session timer may fire after it. */
  stopTimers(): void {
    for (const s of this.sessions.values()) {
      this.clock.clearTimeout(s.expiryTimer);
      this.clock.clearTimeout(s.willTimer);
    }
  }

  #scheduleExpiry(s: Session): void {
    if (s.expiryInterval >= NEVER_EXPIRES) return;
    const left = (s.disconnectedAt ?? this.clock.now()) + s.expiryInterval * 1000 - this.clock.now();
    const end = () => {
      if (s.client || s.ended) return;
      const mutations: Mutation[] = [];
      this.#end(s, mutations);
      if (mutations.length > 0) this.#persist(mutations);
    };
    if (left <= 0) end();
    else s.expiryTimer = this.clock.setTimeout(end, left);
  }

  /** The session ends: subscriptions go, and a pending Will is published now. */
  #end(s: Session, mutations: Mutation[]): void {
    s.ended = true;
    this.sessions.delete(s.clientId);
    this.clock.clearTimeout(s.expiryTimer);
    this.router.unsubscribeAll(s);
    s.releaseMemory();
    this.account.addClients(-(COSTS.session + 2 * s.clientId.length));
    this.wills.sessionEnded(s);
    if (this.#stored.delete(s)) mutations.push({ op: "session-delete", clientId: s.clientId });
  }

  #persist(mutations: Mutation[]): void {
    this.store.commit(mutations).catch((err: unknown) => this.logger.error(`store commit failed: ${String(err)}`));
  }
}
