import { connectedLine, disconnectedLine } from "./client-log.ts";
import { RC } from "../mqtt/reason-codes.ts";
import { type Message, type Mutation, type Store } from "../store/store.ts";
import { type AclPort, type AuthPort, openAccess } from "./auth-ports.ts";
import type { BrokerOptions } from "./broker-options.ts";
import { ClientConnection } from "./client-connection.ts";
import type { Clock } from "./clock.ts";
import type { Connection, ConnectionHandler } from "./connection.ts";
import { ConnectionBytes } from "./connection-bytes.ts";
import { sweepConnections } from "./housekeeping.ts";
import type { Logger } from "./logger.ts";
import { COSTS, MemoryBudget } from "./memory-budget.ts";
import { ResidentWatch } from "./resident-watch.ts";
import { sendRetained } from "./retained-on-subscribe.ts";
import { BrokerMetrics } from "./metrics.ts";
import { MessageEncodings } from "./outbound-encoder.ts";
import { deliveryRecord, OutboundFlow } from "./outbound-flow.ts";
import { PublisherFlow } from "./publisher-flow.ts";
import { RetainedIndex } from "./retained-index.ts";
import { Router } from "./router.ts";
import { type ActiveSubscription, type Outbound, type Session } from "./session.ts";
import { SessionRegistry } from "./session-registry.ts";
import { publishSysTopics } from "./sys-topics.ts";
import { WillHandler } from "./will.ts";
import { WriteBehind } from "./write-behind.ts";

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
  /**
   * Online sessions whose queue was full: the message goes to them over the bound, and
   * the publisher's acknowledgement waits for room (PublisherFlow.hold). Usually undefined.
   */
  waitFor: Session[] | undefined;
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
  /** Authentication, bans and connection limits (src/auth/security.ts); default: everyone in. */
  auth?: AuthPort;
  /** Who may publish, subscribe and receive what (src/auth/acl.ts); default: everything allowed. */
  acl?: AclPort;
  /** Counters, when the wiring shares them with the auth ports; default: new ones. */
  metrics?: BrokerMetrics;
  /**
   * The process's resident memory in bytes, from the runtime (undefined where it cannot
   * tell): a sanity check of the memory budget against what the OS sees, for metrics and a
   * warning (see #checkResident).
   */
  residentBytes?: () => number | undefined;
  /**
   * A full, synchronous collection of the runtime's heap (from the runtime adapter), for the resident watch's
   * garbage bound (resident-watch.ts); undefined where the runtime offers none.
   */
  collectGarbage?: () => void;
}

/**
 * The kernel's facade: lifecycle and recovery, publish → route → commit → deliver, and
 * the state the admin API reads. It never opens sockets; adapters call
 * `accept(connection)` for each client. The parts live in their own files: `router.ts`
 * (subscriptions, shared groups), `outbound-flow.ts` (QoS to subscribers),
 * `session-registry.ts` (sessions, expiry, takeover), `will.ts`, and per connection
 * `client-connection.ts` with `connect-pipeline.ts` and `inbound-flow.ts`.
 */
export class Broker {
  readonly options: BrokerOptions;
  readonly store: Store;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: BrokerMetrics;
  readonly auth: AuthPort;
  readonly acl: AclPort;
  readonly retained: RetainedIndex;
  readonly clients = new Set<ClientConnection>();
  /** What Ferry holds for clients, against `limits.max_memory` (memory-budget.ts). */
  readonly budget: MemoryBudget;
  /** Bytes held for connections: output, partial packets, the pre-auth budget (connection-bytes.ts). */
  readonly connectionBytes: ConnectionBytes;
  readonly router: Router;
  readonly outbound: OutboundFlow;
  /** Holds publishers' acks while online subscribers' queues are full (publisher-flow.ts). */
  readonly publisherFlow: PublisherFlow;
  readonly registry: SessionRegistry;
  /** Sessions by client id (the registry's). */
  readonly sessions: Map<string, Session>;

  #wills: WillHandler;
  /** `store`, through which every kernel write goes, so those written `later` keep their order. */
  #writes: WriteBehind;
  #nextOffset = 1;
  #timers: unknown[] = [];
  #idCounter = 0;
  #closing = false;
  #connected = 0;
  #logReaders: LogReader[] = [];
  #recoveredCursors: Record<string, number> = {};
  #recoveredCounters: Record<string, number> = {};
  /** Extra $SYS values (topic below $SYS/broker/, value) from components such as the uplink. */
  readonly sysSources: Array<() => Array<[string, string | number]>> = [];
  /**
   * Observers of every message routed (the admin API's top-topics counter); keep them cheap,
   * and keep nothing of `message.payload`: a live QoS 0 message's payload is a view of the
   * socket read it came in, reused after the call (inbound-flow.ts, deliverNow).
   */
  readonly publishHooks: Array<(message: Message) => void> = [];
  /** The process's resident memory, when the runtime can tell (BrokerDeps.residentBytes). */
  readonly residentBytes: () => number | undefined;
  /** RSS against the memory budget: garbage collected before it piles up, and the warning when something outside it grows (resident-watch.ts). */
  readonly residentWatch: ResidentWatch;

  constructor(deps: BrokerDeps) {
    this.options = deps.options;
    this.#writes = new WriteBehind(deps.store, deps.clock, deps.options.writeBehindMs);
    this.store = this.#writes;
    this.clock = deps.clock;
    this.logger = deps.logger;
    this.metrics = deps.metrics ?? new BrokerMetrics(deps.clock.now());
    this.auth = deps.auth ?? openAccess;
    this.acl = deps.acl ?? openAccess;
    this.residentBytes = deps.residentBytes ?? (() => undefined);
    this.budget = new MemoryBudget(deps.options.maxMemory, deps.clock, {
      recountOutput: () => {
        for (const c of this.clients) c.countOutput();
      },
      maxWaitMs: deps.options.stalledSubscriberMs,
      logger: deps.logger,
    });
    this.residentWatch = new ResidentWatch(
      this.residentBytes,
      this.budget,
      deps.logger,
      deps.clock,
      deps.collectGarbage,
    );
    this.retained = new RetainedIndex(this.budget);
    this.connectionBytes = new ConnectionBytes(deps.options, this.clients);
    this.router = new Router(deps.options, this.budget);
    this.publisherFlow = new PublisherFlow(deps.options, deps.clock, this.metrics, deps.logger);
    this.outbound = new OutboundFlow(
      deps.options,
      this.metrics,
      this.#writes,
      deps.logger,
      this.router,
      this.publisherFlow,
    );
    this.#wills = new WillHandler(deps.clock, deps.logger, this, this.acl, () => this.metrics.aclDeniedPublish++);
    this.registry = new SessionRegistry(
      deps.clock,
      this.store,
      deps.logger,
      this.router,
      this.outbound,
      this.#wills,
      this.budget,
    );
    this.sessions = this.registry.sessions;
  }

  /** Open the store and restore retained messages and sessions exactly as they were. */
  async start(): Promise<void> {
    const rec = await this.store.open();
    this.#nextOffset = rec.nextOffset;
    this.#recoveredCursors = rec.cursors;
    this.#recoveredCounters = rec.counters ?? {};
    // Stubs: bodies are read from the store when a subscription matches them.
    this.retained.load(rec.retained);
    this.registry.recover(rec.sessions);
    this.logger.info(
      `store ${this.store.kind}: ${rec.sessions.length} sessions, ${this.retained.size} retained, next offset ${this.#nextOffset}`,
    );
    this.residentWatch.start();
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
    this.registry.stopTimers();
    this.budget.close();
    await this.store.close();
  }

  /** Take a new network connection. */
  accept(conn: Connection): ConnectionHandler {
    const client = new ClientConnection(conn, this);
    this.clients.add(client);
    this.budget.addClients(COSTS.connection);
    this.metrics.connectionsTotal++;
    if (this.#closing) client.disconnect(RC.SERVER_SHUTTING_DOWN);
    else {
      // Per-address limits: a refused client may still learn why in a CONNACK.
      const refusal = this.auth.admit(client);
      if (refusal) client.refuse(refusal);
      else if (!this.connectionBytes.hasPreAuthRoom(client.addressKey)) client.refusePreAuth();
    }
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

  /** A connection ended. `abnormal` means without a DISCONNECT that discards the Will. */
  clientClosed(client: ClientConnection, abnormal: boolean): void {
    this.clients.delete(client);
    client.releaseAccounts();
    this.budget.addClients(-COSTS.connection);
    this.auth.release(client);
    if (client.counted) {
      client.counted = false;
      this.#connected--;
      this.logger.info(disconnectedLine(client));
    }
    this.registry.closed(client, client.clientId, client.will, abnormal, this.#closing);
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

  /** Retained messages for a new subscription, per its Retain Handling (retained-on-subscribe.ts). */
  sendRetained(sub: ActiveSubscription, isNew: boolean): void {
    sendRetained(this, sub, isNew);
  }

  /** The next offset of the log, taken (a message or a retained copy appended outside `publish`). */
  takeOffset(): number {
    return this.#nextOffset++;
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
    this.router.route(message, sessions, outbounds);
    const matched = sessions.length > 0;
    let waitFor: Session[] | undefined;
    // Past the memory budget's high level nothing waits for a client that is not taking
    // messages (memory-budget.ts): read once per publish.
    const overHigh = matched && this.budget.overHigh;
    // Keep the accepted deliveries, compacting both arrays in place.
    let kept = 0;
    for (let i = 0; i < sessions.length; i++) {
      const s = sessions[i]!;
      const o = outbounds[i]!;
      const online = s.client !== undefined;
      if (o.qos === 0 && !online && !(this.options.queueQos0 && s.persistent)) continue;
      // Whatever will wait in the queue counts against its bounds, QoS 0 behind a backlog too.
      if (!online || o.qos > 0 || s.queuedCount > 0) {
        if (overHigh && (!online || s.stalled || o.qos === 0)) {
          // An offline or stalled session's queue, or a QoS 0 message queued (at most once):
          // dropped and counted, like a full queue. An online one's queue still takes QoS 1/2
          // messages; their publishers are slowed instead (ClientConnection.throttle).
          this.metrics.droppedMemory++;
          continue;
        }
        // A memory bound per slow or offline subscriber; one message always fits an empty queue.
        const full = s.queuedCount >= this.options.maxQueuedMessages ||
          (s.queuedCount > 0 && s.queuedBytes + message.payload.byteLength > this.options.maxQueuedBytes);
        if (full) {
          if (o.qos > 0 && this.publisherFlow.mayHold(s)) {
            // Online: queued over the bound, and the publisher's ack waits for room (PublisherFlow).
            (waitFor ??= []).push(s);
          } else {
            // Offline, stalled, or QoS 0 (at most once; it has no ack to hold): dropped and counted.
            if (s.queuedCount >= this.options.maxQueuedMessages) this.metrics.droppedQueueFull++;
            else this.metrics.droppedQueueBytes++;
            continue;
          }
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
    return { commit, matched, message, logged, sessions, outbounds, live: false, waitFor };
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
      this.outbound.deliver(sessions[0]!, outbounds[0]!);
      return;
    }
    // One set of encodings for every delivery of this message, those queued for later too.
    const cache = new MessageEncodings();
    for (let i = 0; i < sessions.length; i++) {
      const o = outbounds[i]!;
      o.cache = cache;
      this.outbound.deliver(sessions[i]!, o);
    }
  }

  /** Publish a message that originates in the broker ($SYS); kept in memory only. */
  publishInternal(topic: string, payload: Uint8Array, retain: boolean): void {
    const m: Message = { offset: 0, topic, payload, qos: 0, retain, receivedAt: this.clock.now(), origin: "" };
    if (retain) this.retained.set(topic, m);
    const sessions: Session[] = [];
    const outbounds: Outbound[] = [];
    this.router.route(m, sessions, outbounds);
    const cache = new MessageEncodings();
    for (let i = 0; i < sessions.length; i++) {
      const s = sessions[i]!;
      const o = outbounds[i]!;
      if (!s.client) continue;
      o.qos = 0;
      o.shareKey = undefined;
      o.cache = cache;
      this.outbound.deliver(s, o);
    }
  }

  /**
   * Route and commit `message`, then hand it to subscribers; resolves once they have it and,
   * like a client's acknowledgement, once full online queues it went to have room again.
   */
  publishDurably(message: Message): Promise<void> {
    const routed = this.publish(message);
    const waits: Array<Promise<void>> = [];
    if (routed.waitFor !== undefined) {
      waits.push(new Promise<void>((resolve) => this.publisherFlow.hold(routed.waitFor!, resolve)));
    }
    // Slowed like a client's publisher while the memory budget is past its full level.
    if (this.budget.overFull) waits.push(new Promise<void>((resolve) => this.budget.whenBelowHigh(resolve)));
    const room = waits.length === 0 ? undefined : Promise.all(waits);
    const delivered = routed.commit === undefined
      ? (this.deliver(routed), Promise.resolve())
      : routed.commit.then(() => this.deliver(routed));
    return room === undefined ? delivered : Promise.all([delivered, room]).then(() => {});
  }

  /**
   * Publish a message that comes from inside Ferry (the uplink's cloud commands, the admin
   * API): routed like any publish; resolves once it is durable and handed to subscribers.
   */
  injectMessage(message: Message): Promise<void> {
    this.metrics.messagesReceived[message.qos]++;
    return this.publishDurably(message);
  }

  // ---- log readers ----------------------------------------------------------------------

  get nextOffset(): number {
    return this.#nextOffset;
  }

  /** Log reader positions found in the store at start. */
  get recoveredCursors(): Record<string, number> {
    return this.#recoveredCursors;
  }

  /** Persisted counters found in the store at start (counter-put). */
  get recoveredCounters(): Record<string, number> {
    return this.#recoveredCounters;
  }

  addLogReader(reader: LogReader): void {
    this.#logReaders.push(reader);
  }

  /** Whether a log reader (the uplink) wants messages on `topic`, whatever their QoS. */
  logs(topic: string): boolean {
    return this.#logReaders.length > 0 && this.#wantedByReader(topic);
  }

  #wantedByReader(topic: string): boolean {
    for (const r of this.#logReaders) if (r.wants(topic)) return true;
    return false;
  }

  #sweep(): void {
    const now = this.clock.now();
    sweepConnections(this.clients, now, this.options, this.metrics);
    // Output that drained without the connection telling counts until looked at again.
    this.budget.recount(now);
    this.residentWatch.check();
  }
}
