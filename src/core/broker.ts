import { Acl } from "../auth/acl.ts";
import { Security } from "../auth/security.ts";
import { RC } from "../mqtt/reason-codes.ts";
import { type Message, type Mutation, type QoS, RETAINED_COPY_ORIGIN, type Store } from "../store/store.ts";
import type { BrokerOptions } from "./broker-options.ts";
import { ClientConnection, type Will } from "./client-connection.ts";
import type { Clock } from "./clock.ts";
import type { Connection, ConnectionHandler } from "./connection.ts";
import type { Logger } from "./logger.ts";
import { BrokerMetrics } from "./metrics.ts";
import { MessageEncodings } from "./outbound-encoder.ts";
import { RetainedIndex } from "./retained-index.ts";
import { type ActiveSubscription, type Outbound, Session } from "./session.ts";
import { parseSubscriptionFilter } from "./topic.ts";
import { TopicTree } from "./topic-tree.ts";
import { publishSysTopics } from "./sys-topics.ts";
import { connectedLine, disconnectedLine, logField } from "./client-log.ts";

interface SubEntry {
  session: Session;
  sub: ActiveSubscription;
}

/**
 * The outcome of routing one publish: what must be committed, and whom to hand the
 * message to afterwards (`Broker.deliver`). Plain data, so that routing a message
 * allocates no closures.
 */
export interface Routed {
  /** Resolves when the message and its deliveries are durable; undefined when nothing was written. */
  commit: Promise<void> | undefined;
  /** Whether any subscription matched. */
  matched: boolean;
  message: Message;
  /** Whether the message went into the log (log readers see it after the commit). */
  logged: boolean;
  /** The accepted deliveries: `sessions[i]` gets `outbounds[i]`. */
  sessions: Session[];
  outbounds: Outbound[];
  /** Set once the subscribers have it (`deliverLive`), possibly before the commit. */
  live: boolean;
}

/**
 * A reader of the durable log other than sessions (the cloud uplink). Messages on
 * topics it `wants` are logged whatever their QoS, and `onLogged` sees each one after
 * its commit, in offset order.
 */
export interface LogReader {
  wants(topic: string): boolean;
  onLogged(message: Message): void;
}

export interface BrokerDeps {
  options: BrokerOptions;
  store: Store;
  clock: Clock;
  logger: Logger;
}

const NEVER_EXPIRES = 0xffffffff;

/**
 * The kernel: owns sessions, subscriptions, retained messages and routing. It never
 * opens sockets; adapters call `accept(connection)` for each client.
 */
export class Broker {
  readonly options: BrokerOptions;
  readonly store: Store;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: BrokerMetrics;
  readonly acl: Acl;
  /** Authentication, bans and abuse limits (src/auth/security.ts). */
  readonly security: Security;
  readonly sessions = new Map<string, Session>();
  readonly retained = new RetainedIndex();
  readonly clients = new Set<ClientConnection>();

  #subs = new TopicTree<SubEntry>();
  /** Numbers routing passes, for the per-session scratch fields (Session.routeMark). */
  #routePass = 0;
  #shareCursor = new Map<string, number>();
  #shareGroups = new Map<string, Map<string, SubEntry>>();
  #nextOffset = 1;
  /** Sessions whose record is in the store, so ending them must delete it. */
  #stored = new Set<Session>();
  #pendingWills = new Map<Session, Will>();
  /**
   * Messages in flight when a connection resumed its session and not yet re-sent on it,
   * because the new connection's Receive Maximum is smaller than what was in flight.
   */
  #resendBacklog = new WeakMap<ClientConnection, Outbound[]>();
  #timers: unknown[] = [];
  #idCounter = 0;
  #closing = false;
  #connected = 0;
  #logReaders: LogReader[] = [];
  #recoveredCursors: Record<string, number> = {};
  /** Extra $SYS values (topic below $SYS/broker/, value) from components such as the uplink. */
  readonly sysSources: Array<() => Array<[string, string | number]>> = [];
  /** Observers of every message `publish` routes (the admin API's top-topics counter); keep them cheap. */
  readonly publishHooks: Array<(message: Message) => void> = [];

  constructor(deps: BrokerDeps) {
    this.options = deps.options;
    this.store = deps.store;
    this.clock = deps.clock;
    this.logger = deps.logger;
    this.metrics = new BrokerMetrics(deps.clock.now());
    this.acl = new Acl(deps.options.aclRules, deps.options.aclDefault);
    this.security = new Security(
      { allowAnonymous: deps.options.allowAnonymous, useIdentityAsUsername: deps.options.useIdentityAsUsername },
      deps.options.limits,
      deps.clock,
      deps.logger,
      this.metrics,
    );
  }

  /** Open the store and restore retained messages and sessions exactly as they were. */
  async start(): Promise<void> {
    const rec = await this.store.open();
    this.#nextOffset = rec.nextOffset;
    this.#recoveredCursors = rec.cursors;
    const now = this.clock.now();
    for (const m of rec.retained) this.retained.set(m.topic, m);
    for (const rs of rec.sessions) {
      const r = rs.session;
      const s = new Session(r.clientId, r.protocolVersion, r.expiryInterval);
      this.sessions.set(s.clientId, s);
      this.#stored.add(s);
      for (const sub of r.subscriptions) {
        const parsed = parseSubscriptionFilter(sub.filter);
        if (typeof parsed === "string") continue;
        this.subscribe(s, { ...sub, plainFilter: parsed.filter, group: parsed.group });
      }
      for (const { delivery: d, message } of rs.deliveries) {
        const o: Outbound = {
          message,
          qos: d.qos,
          retain: d.retain,
          subscriptionIds: d.subscriptionIds,
          packetId: d.packetId ?? 0,
          phase: d.phase,
          shareKey: undefined,
          cache: undefined,
        };
        if (d.phase === "queued" || d.packetId === undefined) {
          o.phase = "queued";
          s.enqueue(o);
        } else {
          s.inflight.set(d.packetId, o);
          s.notePacketId(d.packetId);
        }
      }
      for (const id of rs.qos2Incoming) s.qos2Incoming.add(id);
      // A session that was connected when Ferry stopped counts as disconnected now.
      s.disconnectedAt = r.disconnectedAt ?? now;
      this.#scheduleExpiry(s);
    }
    this.logger.info(
      `store ${this.store.kind}: ${rec.sessions.length} sessions, ${this.retained.size} retained, next offset ${this.#nextOffset}`,
    );
    this.#timers.push(this.clock.setInterval(() => this.#sweep(), 1000));
    if (this.options.sysInterval > 0) {
      publishSysTopics(this);
      this.#timers.push(this.clock.setInterval(() => publishSysTopics(this), this.options.sysInterval * 1000));
    }
  }

  /** Stop: tell clients the server is shutting down, then flush and close the store. */
  async close(): Promise<void> {
    this.#closing = true;
    for (const t of this.#timers) this.clock.clearInterval(t);
    this.#timers = [];
    for (const c of [...this.clients]) {
      c.will = undefined; // a shutdown is not the client's failure; keep its Will for a real one
      c.disconnect(RC.SERVER_SHUTTING_DOWN, "server shutting down");
    }
    for (const s of this.sessions.values()) {
      this.clock.clearTimeout(s.expiryTimer);
      this.clock.clearTimeout(s.willTimer);
    }
    await this.store.close();
  }

  /** Take a new network connection. */
  accept(conn: Connection): ConnectionHandler {
    const client = new ClientConnection(conn, this);
    this.clients.add(client);
    this.metrics.connectionsTotal++;
    if (this.#closing) client.disconnect(RC.SERVER_SHUTTING_DOWN);
    else this.security.admit(client); // per-address limits; may mark the client refused
    return client;
  }

  /** Clients past CONNACK; kept as a counter because every CONNECT checks it. */
  get connectedCount(): number {
    return this.#connected;
  }

  /** A client got its CONNACK. */
  noteConnected(client: ClientConnection): void {
    if (client.counted) return;
    client.counted = true;
    this.#connected++;
    this.logger.info(connectedLine(client));
  }

  assignClientId(): string {
    return `ferry-${this.clock.now().toString(36)}-${(++this.#idCounter).toString(36)}-${
      Math.random().toString(36).slice(2, 8)
    }`;
  }

  // ---- sessions -------------------------------------------------------------------

  /**
   * Attach `client` to its session: take over a live connection with the same id
   * [MQTT-3.1.4-3], discard it on Clean Start [MQTT-3.1.2-4], or resume it.
   */
  async openSession(
    client: ClientConnection,
    clean: boolean,
    expiry: number,
  ): Promise<{ session: Session; present: boolean }> {
    const id = client.clientId;
    const existing = this.sessions.get(id);
    if (existing?.client && existing.client !== client) existing.client.takeover();

    let s = this.sessions.get(id);
    const mutations: Mutation[] = [];
    if (s && clean) {
      this.#endSession(s, mutations);
      s = undefined;
    }
    let present = false;
    if (s) {
      present = true;
      // A new connection before the Will Delay passed: the Will is not sent [MQTT-3.1.3-9].
      this.clock.clearTimeout(s.willTimer);
      this.#pendingWills.delete(s);
      this.clock.clearTimeout(s.expiryTimer);
      s.protocolVersion = client.version;
      s.expiryInterval = expiry;
      s.disconnectedAt = undefined;
    } else {
      s = new Session(id, client.version, expiry);
      this.sessions.set(id, s);
    }
    s.client = client;
    if (s.persistent) {
      mutations.push({ op: "session-put", session: s.toRecord() });
      this.#stored.add(s);
    }
    if (mutations.length > 0) await this.store.commit(mutations);
    return { session: s, present };
  }

  /** CONNACK was sent: resend what was in flight, then drain the queue [MQTT-4.4.0-1]. */
  sessionOnline(client: ClientConnection, s: Session): void {
    if (s.client !== client) return;
    const inflight = [...s.inflight.values()].sort((a, b) => a.message.offset - b.message.offset);
    // A PUBREL is not a PUBLISH and goes at once [MQTT-3.3.4-10]; re-sent PUBLISHes wait for
    // room in this connection's window, which may be smaller than the last one's [MQTT-3.3.4-9].
    for (const o of inflight) if (o.phase === "pubrel") client.sendPubrel(o.packetId);
    const resend = inflight.filter((o) => o.phase !== "pubrel");
    if (resend.length > 0) this.#resendBacklog.set(client, resend);
    this.#pump(s);
  }

  /** A connection ended. `abnormal` means without a DISCONNECT that discards the Will. */
  clientClosed(client: ClientConnection, abnormal: boolean): void {
    this.clients.delete(client);
    this.security.release(client);
    if (client.counted) {
      client.counted = false;
      this.#connected--;
      this.logger.info(disconnectedLine(client));
    }
    const s = this.sessions.get(client.clientId);
    // Refused before a session existed, or already replaced by a newer connection.
    if (!s || s.client !== client) return;
    s.client = undefined;
    s.disconnectedAt = this.clock.now();
    if (abnormal && client.will && !this.#closing) {
      const will = client.will;
      // The Will waits for its delay, or until the session ends, whichever is first [MQTT-3.1.3-9].
      const delay = Math.min(will.delay, s.expiryInterval);
      if (delay <= 0) this.#publishWill(will);
      else {
        this.#pendingWills.set(s, will);
        s.willTimer = this.clock.setTimeout(() => {
          if (this.#pendingWills.get(s) === will) {
            this.#pendingWills.delete(s);
            this.#publishWill(will);
          }
        }, delay * 1000);
      }
    }
    this.#redistributeShared(s);
    if (this.#closing) return;
    if (s.expiryInterval === 0) {
      const mutations: Mutation[] = [];
      this.#endSession(s, mutations);
      if (mutations.length > 0) this.persist(mutations);
      return;
    }
    this.persist([{ op: "session-put", session: s.toRecord() }]);
    this.#stored.add(s);
    this.#scheduleExpiry(s);
  }

  #scheduleExpiry(s: Session): void {
    if (s.expiryInterval >= NEVER_EXPIRES) return;
    const left = (s.disconnectedAt ?? this.clock.now()) + s.expiryInterval * 1000 - this.clock.now();
    const end = () => {
      if (s.client || s.ended) return;
      const mutations: Mutation[] = [];
      this.#endSession(s, mutations);
      if (mutations.length > 0) this.persist(mutations);
    };
    if (left <= 0) end();
    else s.expiryTimer = this.clock.setTimeout(end, left);
  }

  /** The session ends: subscriptions go, and a pending Will is published now. */
  #endSession(s: Session, mutations: Mutation[]): void {
    s.ended = true;
    this.sessions.delete(s.clientId);
    this.clock.clearTimeout(s.expiryTimer);
    this.clock.clearTimeout(s.willTimer);
    for (const sub of [...s.subscriptions.values()]) this.#removeSub(s, sub);
    s.subscriptions.clear();
    const will = this.#pendingWills.get(s);
    if (will) {
      this.#pendingWills.delete(s);
      this.#publishWill(will);
    }
    if (this.#stored.delete(s)) mutations.push({ op: "session-delete", clientId: s.clientId });
  }

  #publishWill(will: Will): void {
    const now = this.clock.now();
    const m: Message = { ...will.message, receivedAt: now };
    // The Will's Message Expiry Interval is its lifetime from publication, not from CONNECT
    // (spec 3.1.3.2.4), so the expiry moves with the publication time.
    if (will.message.expiresAt !== undefined) m.expiresAt = now + (will.message.expiresAt - will.message.receivedAt);
    const routed = this.publish(m);
    if (routed.commit) {
      routed.commit.then(() => this.deliver(routed), (err: unknown) => {
        this.logger.error(`storing the Will of ${logField(m.origin)} failed: ${String(err)}`);
      });
    } else this.deliver(routed);
  }

  /** Persist a session's record if it must survive restarts; resolves when durable. */
  persistSession(s: Session): Promise<void> | undefined {
    if (!s.persistent) return undefined;
    this.#stored.add(s);
    return this.store.commit([{ op: "session-put", session: s.toRecord() }]);
  }

  /**
   * Write mutations. With `wait`, the caller awaits durability; otherwise failures are
   * logged (they concern bookkeeping such as acknowledgements already given).
   */
  persist(mutations: Mutation[], wait = false): Promise<void> | undefined {
    const p = this.store.commit(mutations);
    if (wait) return p;
    p.catch((err: unknown) => this.logger.error(`store commit failed: ${String(err)}`));
    return undefined;
  }

  // ---- subscriptions --------------------------------------------------------------------

  /** Add or replace a subscription [MQTT-3.8.4-3]; returns whether it is new. */
  subscribe(s: Session, sub: ActiveSubscription): boolean {
    const old = s.subscriptions.get(sub.filter);
    if (old) this.#removeSub(s, old);
    s.subscriptions.set(sub.filter, sub);
    const entry: SubEntry = { session: s, sub };
    this.#subs.add(sub.plainFilter, subKey(s, sub), entry);
    if (sub.group !== undefined) {
      const key = shareKey(sub);
      let members = this.#shareGroups.get(key);
      if (!members) this.#shareGroups.set(key, members = new Map());
      members.set(s.clientId, entry);
    }
    return old === undefined;
  }

  unsubscribe(s: Session, filter: string): boolean {
    const sub = s.subscriptions.get(filter);
    if (!sub) return false;
    this.#removeSub(s, sub);
    s.subscriptions.delete(filter);
    return true;
  }

  #removeSub(s: Session, sub: ActiveSubscription): void {
    this.#subs.remove(sub.plainFilter, subKey(s, sub));
    if (sub.group !== undefined) {
      const key = shareKey(sub);
      const members = this.#shareGroups.get(key);
      members?.delete(s.clientId);
      if (members?.size === 0) this.#shareGroups.delete(key);
    }
  }

  /** Retained messages for a new subscription, per its Retain Handling [MQTT-3.3.1-9..11]. */
  sendRetained(s: Session, filter: string, isNew: boolean): void {
    const sub = s.subscriptions.get(filter);
    if (!sub || sub.group !== undefined) return; // shared subscriptions get no retained messages
    if (sub.retainHandling === 2 || (sub.retainHandling === 1 && !isNew)) return;
    const now = this.clock.now();
    const mutations: Mutation[] = [];
    for (const m of this.retained.match(sub.plainFilter)) {
      if (m.expiresAt !== undefined && m.expiresAt <= now) {
        this.retained.set(m.topic, undefined);
        mutations.push({ op: "retain", topic: m.topic, message: null });
        continue;
      }
      const qos = Math.min(m.qos, sub.qos) as QoS;
      let message = m;
      if (qos > 0 && s.persistent) {
        // The log may have trimmed the original; log a copy so the delivery has a body to
        // point to. Marked as a copy, so the uplink does not forward it a second time.
        message = { ...m, offset: this.#nextOffset++, origin: RETAINED_COPY_ORIGIN };
        mutations.push({ op: "append", message });
        mutations.push({ op: "delivery-put", delivery: deliveryRecord(s, message, qos, true, sub.subscriptionId) });
      }
      this.#deliver(s, {
        message,
        qos,
        retain: true, // [MQTT-3.3.1-9] retained messages sent on subscribe keep RETAIN=1
        subscriptionIds: sub.subscriptionId !== undefined ? [sub.subscriptionId] : undefined,
        packetId: 0,
        phase: "queued",
        shareKey: undefined,
        cache: undefined,
      });
    }
    if (mutations.length > 0) this.persist(mutations);
  }

  // ---- publishing -----------------------------------------------------------------------

  /**
   * Route a message: assign its log offset, work out every delivery, and describe the
   * durable writes. `deliver` runs once the commit resolved, so that nothing is acknowledged
   * (and nothing reaches log readers) that a crash could take back; subscribers may get the
   * message earlier through `deliverLive`. `extra` is committed with the message.
   */
  publish(message: Message, extra?: Mutation): Routed {
    for (const hook of this.publishHooks) hook(message);
    const mutations: Mutation[] = extra ? [extra] : [];
    // QoS>0 messages are always logged; others when a log reader (uplink) wants them.
    const logged = message.qos > 0 || (this.#logReaders.length > 0 && this.#wantedByReader(message.topic));
    if (logged) {
      message.offset = this.#nextOffset++;
      mutations.push({ op: "append", message });
    }
    if (message.retain) {
      // [MQTT-3.3.1-6] an empty retained payload clears the topic's retained message.
      mutations.push({ op: "retain", topic: message.topic, message: message.payload.byteLength > 0 ? message : null });
    }
    const sessions: Session[] = [];
    const outbounds: Outbound[] = [];
    this.#route(message, sessions, outbounds);
    const matched = sessions.length > 0;
    // Keep the accepted deliveries, compacting both arrays in place.
    let kept = 0;
    for (let i = 0; i < sessions.length; i++) {
      const s = sessions[i]!;
      const o = outbounds[i]!;
      const online = s.client !== undefined;
      if (o.qos === 0 && !online && !(this.options.queueQos0 && s.persistent)) continue;
      // Whatever will wait in the queue counts against its bounds, QoS 0 behind a backlog too.
      if (!online || o.qos > 0 || s.queuedCount > 0) {
        if (s.queuedCount >= this.options.maxQueuedMessages) {
          this.metrics.droppedQueueFull++;
          continue;
        }
        // A memory bound per slow or offline subscriber; one message always fits an empty queue.
        if (s.queuedCount > 0 && s.queuedBytes + message.payload.byteLength > this.options.maxQueuedBytes) {
          this.metrics.droppedQueueBytes++;
          continue;
        }
      }
      if (o.qos > 0 && s.persistent) {
        mutations.push({
          op: "delivery-put",
          delivery: deliveryRecord(s, message, o.qos, o.retain, o.subscriptionIds),
        });
      }
      sessions[kept] = s;
      outbounds[kept] = o;
      kept++;
    }
    sessions.length = kept;
    outbounds.length = kept;
    const commit = mutations.length > 0 ? this.store.commit(mutations) : undefined;
    return { commit, matched, message, logged, sessions, outbounds, live: false };
  }

  /**
   * Hand a routed message to its subscribers (unless `deliverLive` already did) and to the
   * log readers; call once its `commit` has resolved. Log readers (the uplink) only ever
   * see durable messages: they read the log by offset.
   */
  deliver(routed: Routed): void {
    if (!routed.live) this.deliverLive(routed);
    if (routed.logged) { for (const r of this.#logReaders) r.onLogged(routed.message); }
  }

  /**
   * Whether a QoS 0/1 message may reach subscribers before its commit (`liveDelivery`).
   * Not while the store refuses appends: a message that will be refused must not be seen.
   */
  get liveBeforeCommit(): boolean {
    return this.options.liveDelivery === "immediate" && this.store.stats().full !== true;
  }

  /**
   * The subscribers' part of `deliver`, with the retained index (a subscriber arriving now
   * gets what the live ones got). Runs before the commit under `liveDelivery: immediate`:
   * the publisher's PUBACK still waits for durability, so a crash before the commit can
   * only cause a re-send (QoS 1 allows duplicates), never a loss of something acknowledged.
   */
  deliverLive(routed: Routed): void {
    routed.live = true;
    const message = routed.message;
    if (message.retain) this.retained.set(message.topic, message.payload.byteLength > 0 ? message : undefined);
    const { sessions, outbounds } = routed;
    if (sessions.length === 0) return;
    if (sessions.length === 1) {
      // Nothing to share the encoding with: without a cache it is encoded once, when sent,
      // to the same bytes (two objects less per message on the common 1→1 path).
      this.#deliver(sessions[0]!, outbounds[0]!);
      return;
    }
    // One set of encodings for every delivery of this message, those queued for later too.
    const cache = new MessageEncodings();
    for (let i = 0; i < sessions.length; i++) {
      const o = outbounds[i]!;
      o.cache = cache;
      this.#deliver(sessions[i]!, o);
    }
  }

  /** Publish a message that originates in the broker ($SYS); kept in memory only. */
  publishInternal(topic: string, payload: Uint8Array, retain: boolean): void {
    const m: Message = { offset: 0, topic, payload, qos: 0, retain, receivedAt: this.clock.now(), origin: "" };
    if (retain) this.retained.set(topic, m);
    const sessions: Session[] = [];
    const outbounds: Outbound[] = [];
    this.#route(m, sessions, outbounds);
    const cache = new MessageEncodings();
    for (let i = 0; i < sessions.length; i++) {
      const s = sessions[i]!;
      const o = outbounds[i]!;
      if (!s.client) continue;
      o.qos = 0;
      o.shareKey = undefined;
      o.cache = cache;
      this.#deliver(s, o);
    }
  }

  /**
   * Work out who gets `message`: one delivery per session (overlapping subscriptions merge),
   * one member per shared-subscription group. Appends to `sessions` and `outbounds` in step.
   */
  #route(message: Message, sessions: Session[], outbounds: Outbound[]): void {
    const matches = this.#subs.matchAll(message.topic);
    const n = matches.length;
    if (n === 0) return;
    const pass = ++this.#routePass;
    let groups: Map<string, SubEntry[]> | undefined;
    for (let i = 0; i < n; i++) {
      const e = matches[i]!;
      const sub = e.sub;
      if (sub.group !== undefined) {
        groups ??= new Map();
        const key = shareKey(sub);
        const list = groups.get(key);
        if (list) list.push(e);
        else groups.set(key, [e]);
        continue;
      }
      // [MQTT-3.8.3-3] No Local: not back to the connection that published it.
      if (sub.noLocal && e.session.clientId === message.origin) continue;
      this.#addTarget(pass, sessions, outbounds, e, message, undefined);
    }
    if (groups) {
      for (const [key, members] of groups) {
        const chosen = this.#pickMember(key, members);
        if (chosen) this.#addTarget(pass, sessions, outbounds, chosen, message, key);
      }
    }
  }

  #addTarget(
    pass: number,
    sessions: Session[],
    outbounds: Outbound[],
    e: SubEntry,
    m: Message,
    share: string | undefined,
  ): void {
    const sub = e.sub;
    const s = e.session;
    const qos = Math.min(m.qos, sub.qos) as QoS;
    // [MQTT-3.3.1-12/13] Retain As Published keeps the publisher's RETAIN flag; otherwise 0.
    const retain = sub.retainAsPublished ? m.retain : false;
    if (s.routeMark !== pass) {
      s.routeMark = pass;
      s.routeIndex = outbounds.length;
      sessions.push(s);
      outbounds.push({
        message: m,
        qos,
        retain,
        subscriptionIds: sub.subscriptionId !== undefined ? [sub.subscriptionId] : undefined,
        packetId: 0,
        phase: "queued",
        shareKey: share,
        cache: undefined,
      });
      return;
    }
    const t = outbounds[s.routeIndex]!;
    // Overlapping subscriptions: one delivery, highest QoS, every identifier [MQTT-3.3.4-2] [MQTT-3.3.4-4].
    if (qos > t.qos) t.qos = qos;
    t.retain ||= retain;
    if (sub.subscriptionId !== undefined) (t.subscriptionIds ??= []).push(sub.subscriptionId);
    if (share === undefined) t.shareKey = undefined;
  }

  /**
   * Round-robin over the group's connected members with queue room; then any member with
   * room; a message is dropped (and counted) only when every member's queue is full.
   */
  #pickMember(key: string, members: SubEntry[]): SubEntry | undefined {
    const max = this.options.maxQueuedMessages;
    const roomy = members.filter((m) => m.session.queuedCount < max);
    const online = roomy.filter((m) => m.session.client?.state === "connected");
    const pool = online.length > 0 ? online : roomy.length > 0 ? roomy : members;
    if (pool.length === 0) return undefined;
    const n = (this.#shareCursor.get(key) ?? 0) + 1;
    this.#shareCursor.set(key, n);
    return pool[n % pool.length];
  }

  /** A member leaves: its not-yet-acknowledged shared messages go to the others (spec 4.8.2). */
  #redistributeShared(s: Session): void {
    const moved: Outbound[] = [];
    const kept: Outbound[] = [];
    for (const o of s.drainQueue()) (o.shareKey !== undefined ? moved : kept).push(o);
    for (const o of kept) s.enqueue(o);
    for (const [id, o] of s.inflight) {
      // QoS 2 in flight must complete with the same client [MQTT-4.8.2-4]; QoS 1 may move.
      if (o.shareKey !== undefined && o.qos === 1) {
        s.inflight.delete(id);
        moved.push(o);
      }
    }
    if (moved.length === 0) return;
    const mutations: Mutation[] = [];
    for (const o of moved) {
      const members = [...(this.#shareGroups.get(o.shareKey!)?.values() ?? [])]
        .filter((e) => e.session !== s && e.session.client?.state === "connected");
      const to = members.length > 0 ? this.#pickMember(o.shareKey!, members) : undefined;
      if (!to) {
        // Nobody else can take it: it stays with this session.
        if (o.phase === "queued") s.enqueue(o);
        else s.inflight.set(o.packetId, o);
        continue;
      }
      if (s.persistent) {
        mutations.push({ op: "delivery-delete-offset", clientId: s.clientId, offset: o.message.offset });
      }
      if (to.session.persistent) {
        mutations.push({
          op: "delivery-put",
          delivery: deliveryRecord(to.session, o.message, o.qos, o.retain, o.subscriptionIds),
        });
      }
      this.#deliver(to.session, { ...o, packetId: 0, phase: "queued" });
    }
    if (mutations.length > 0) this.persist(mutations);
  }

  #deliver(s: Session, o: Outbound): void {
    if (s.ended) return;
    const c = s.client;
    const live = c !== undefined && c.state === "connected";
    if (o.qos === 0) {
      // Behind queued QoS>0 messages it waits its turn, so a topic's order holds [MQTT-4.6.0-6].
      if (live && s.queuedCount === 0) {
        if (c.conn.bufferedBytes() > this.options.maxBufferedBytes) {
          this.metrics.droppedSlowConsumer++;
          return;
        }
        c.sendPublish(o, false);
      } else s.enqueue(o);
      return;
    }
    if (live && s.queuedCount === 0 && s.inflight.size < c.inflightWindow) this.#transmit(s, c, o);
    else s.enqueue(o);
  }

  #transmit(s: Session, c: ClientConnection, o: Outbound): void {
    o.packetId = s.allocatePacketId();
    o.phase = "sent";
    s.inflight.set(o.packetId, o);
    const sent: Mutation | undefined = s.persistent
      ? { op: "delivery-sent", clientId: s.clientId, offset: o.message.offset, packetId: o.packetId }
      : undefined;
    // QoS 2: after a crash the message must be re-sent under this packet id [MQTT-4.4.0-1], or a
    // client that already has it (method B) takes the re-send for a new message; so the id is
    // durable before the client can see it.
    if (sent && o.qos === 2) this.#persistBeforeOutput(c, [sent]);
    if (!c.sendPublish(o, false)) {
      this.#completeOutbound(s, o);
      return;
    }
    if (sent && o.qos !== 2) this.persist([sent]);
  }

  /** Commit `mutations` and hold `c`'s output until they are durable (see holdOutputUntil). */
  #persistBeforeOutput(c: ClientConnection, mutations: Mutation[]): void {
    const commit = this.store.commit(mutations);
    commit.catch((err: unknown) => this.logger.error(`store commit failed: ${String(err)}`));
    c.holdOutputUntil(commit);
  }

  /** Send queued messages while the client's window has room. */
  #pump(s: Session): void {
    const c = s.client;
    if (!c || c.state !== "connected") return;
    const backlog = this.#resendBacklog.get(c);
    if (backlog) {
      // Still in flight but not yet re-sent on this connection, so not counted against its window.
      const held = backlog.filter((o) => s.inflight.get(o.packetId) === o); // acked or moved meanwhile
      while (held.length > 0 && s.inflight.size - held.length < c.inflightWindow) {
        const o = held.shift()!;
        if (!c.sendPublish(o, true)) this.#completeOutbound(s, o);
      }
      if (held.length > 0) {
        this.#resendBacklog.set(c, held);
        return;
      }
      this.#resendBacklog.delete(c);
    }
    while (s.inflight.size < c.inflightWindow) {
      const o = s.dequeue();
      if (!o) return;
      if (o.qos === 0) {
        c.sendPublish(o, false);
        continue;
      }
      this.#transmit(s, c, o);
    }
  }

  /** An outbound message is done with (acknowledged, expired or undeliverable). */
  #completeOutbound(s: Session, o: Outbound): void {
    s.inflight.delete(o.packetId);
    if (s.persistent) this.persist([{ op: "delivery-delete-offset", clientId: s.clientId, offset: o.message.offset }]);
  }

  onPuback(c: ClientConnection, id: number): void {
    const s = c.session!;
    const o = s.inflight.get(id);
    if (!o || o.qos !== 1) return; // unknown ids are ignored (spec 4.3.2)
    this.#completeOutbound(s, o);
    this.#pump(s);
  }

  onPubrec(c: ClientConnection, id: number, code: number): void {
    const s = c.session!;
    const o = s.inflight.get(id);
    if (!o || o.qos !== 2) {
      // Answer with PUBREL 0x92 so the client can finish its flow (spec 3.6.2.1).
      if (c.isV5) c.sendPubrelNotFound(id);
      return;
    }
    if (code >= 0x80) {
      // The subscriber refused it: the flow ends here (spec 4.3.3).
      this.#completeOutbound(s, o);
      this.#pump(s);
      return;
    }
    o.phase = "pubrel";
    // A crash after PUBREL left but before "pubrel" was stored would re-send the PUBLISH to a
    // client that already released its id, which then delivers it twice [MQTT-4.3.3-6].
    if (s.persistent) this.#persistBeforeOutput(c, [{ op: "delivery-pubrel", clientId: s.clientId, packetId: id }]);
    c.sendPubrel(id);
  }

  onPubcomp(c: ClientConnection, id: number): void {
    const s = c.session!;
    const o = s.inflight.get(id);
    if (!o || o.phase !== "pubrel") return;
    this.#completeOutbound(s, o);
    this.#pump(s);
  }

  // ---- housekeeping ---------------------------------------------------------------------

  /** Once a second: keep alive [MQTT-3.1.2-22] and CONNECT timeouts. */
  #sweep(): void {
    const now = this.clock.now();
    for (const c of this.clients) {
      if (c.state === "awaiting-connect") {
        // Half-open or idle sockets that never send CONNECT must not hold a slot forever.
        if (now - c.connectedAt > this.options.connectTimeoutMs) c.disconnect(RC.MAXIMUM_CONNECT_TIME);
        continue;
      }
      if (c.state === "connected" && c.keepAlive > 0 && now - c.lastActivity > c.keepAlive * 1500) {
        this.metrics.keepaliveTimeouts++;
        c.disconnect(RC.KEEP_ALIVE_TIMEOUT, "keep alive timeout");
      }
    }
  }

  get nextOffset(): number {
    return this.#nextOffset;
  }

  /** Log reader positions found in the store at start. */
  get recoveredCursors(): Record<string, number> {
    return this.#recoveredCursors;
  }

  addLogReader(reader: LogReader): void {
    this.#logReaders.push(reader);
  }

  /**
   * Publish a message that comes from inside Ferry (the uplink's cloud commands):
   * routed like any publish; resolves once it is durable and handed to subscribers.
   */
  injectMessage(message: Message): Promise<void> {
    this.metrics.messagesReceived[message.qos]++;
    const routed = this.publish(message);
    if (!routed.commit) {
      this.deliver(routed);
      return Promise.resolve();
    }
    return routed.commit.then(() => this.deliver(routed));
  }

  #wantedByReader(topic: string): boolean {
    for (const r of this.#logReaders) if (r.wants(topic)) return true;
    return false;
  }
}

function subKey(s: Session, sub: ActiveSubscription): string {
  return sub.group === undefined ? s.clientId : `${sub.group}\u0000${s.clientId}`;
}

function shareKey(sub: ActiveSubscription): string {
  return `${sub.group}\u0000${sub.plainFilter}`;
}

function deliveryRecord(s: Session, m: Message, qos: QoS, retain: boolean, subIds: number[] | number | undefined) {
  const ids = typeof subIds === "number" ? [subIds] : subIds;
  return {
    clientId: s.clientId,
    offset: m.offset,
    qos,
    retain,
    ...(ids && ids.length > 0 ? { subscriptionIds: ids } : {}),
    phase: "queued" as const,
  };
}
