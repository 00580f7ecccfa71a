/**
 * One cloud uplink: a reader of the durable log with its own cursor. It forwards
 * matching messages to the cloud broker in log order, advances its cursor only past
 * messages the cloud acknowledged, and re-sends from the cursor after any cut, so
 * nothing acknowledged locally is lost and per-topic order holds across outages and
 * restarts of either side. Cloud commands (downlink rules) are published locally.
 */
import type { DownlinkRule, ForwardRule, UplinkConfig } from "../config/schema.ts";
import type { Broker } from "../core/broker.ts";
import { topicMatches, topicNameProblem } from "../core/topic.ts";
import { TopicTree } from "../core/topic-tree.ts";
import type { Message } from "../store/store.ts";
import { StoreFullError } from "../store/store.ts";
import { Backoff } from "./backoff.ts";
import type { CloudClient, CloudConnectOptions, CloudHandlers, CloudIncoming, CloudPublish } from "./cloud-client.ts";
import { RateLimiter } from "./rate-limiter.ts";
import { renderFilter, renderTopic } from "./topic-template.ts";

export type LinkState = "stopped" | "connecting" | "connected" | "backoff";

export interface LinkDeps {
  broker: Broker;
  edgeId: string;
  connect(o: CloudConnectOptions, h: CloudHandlers): Promise<CloudClient>;
  readFile(path: string): Promise<Uint8Array>;
}

export interface LinkStatus {
  name: string;
  url: string;
  state: LinkState;
  /** Every log offset up to here is forwarded (or skipped as not matching). */
  cursor: number;
  /** Log entries behind the cursor: an upper bound on the messages still to forward. */
  backlogEntries: number;
  /** Age of the oldest message read but not yet acknowledged, in ms (0 if none). */
  oldestPendingMs: number;
  inflight: number;
  sent: number;
  acknowledged: number;
  /** Messages acknowledged per second, averaged over the last status interval. */
  drainRate: number;
  droppedTtl: number;
  droppedRefused: number;
  droppedBuffer: number;
  downlinkReceived: number;
  reconnects: number;
  lastError: string | undefined;
  connectedSince: number | undefined;
}

/** Reason codes with which a cloud refuses a message for good; anything else is retried. */
const PERMANENT_REFUSALS = new Set([0x83, 0x87, 0x90, 0x99]);
const READ_BATCH = 512;
/** A connection that lasted this long resets the backoff. */
const STABLE_MS = 30_000;

interface Inflight {
  sentAt: number;
  receivedAt: number;
}

export class UplinkLink {
  readonly name: string;
  state: LinkState = "stopped";

  #c: UplinkConfig;
  #d: LinkDeps;
  #rules = new TopicTree<ForwardRule>();
  #origin: string;
  #cursor = 0;
  #nextRead = 1;
  #logEnd = 0;
  #highestSent = 0;
  #queue: Message[] = [];
  #inflight = new Map<number, Inflight>();
  /** Offsets above the cursor already acknowledged (out-of-order acks, live-first). */
  #acked = new Set<number>();
  #reading = false;
  #client: CloudClient | undefined;
  #epoch = 0;
  #running = false;
  #backoff: Backoff;
  #rate: RateLimiter;
  #timers = new Set<unknown>();
  #persistTimer: unknown;
  #persisted = 0;
  #connectedAt = 0;
  #lastRateAt = 0;
  #lastRateAcked = 0;
  #stats = {
    sent: 0,
    acknowledged: 0,
    drainRate: 0,
    droppedTtl: 0,
    droppedRefused: 0,
    droppedBuffer: 0,
    downlinkReceived: 0,
    reconnects: 0,
    lastError: undefined as string | undefined,
  };

  constructor(config: UplinkConfig, deps: LinkDeps) {
    this.name = config.name;
    this.#c = config;
    this.#d = deps;
    this.#origin = `$uplink:${config.name}`;
    config.forward.forEach((r, i) => this.#rules.add(r.filter, String(i), r));
    const clock = deps.broker.clock;
    this.#backoff = new Backoff(config.backoff.min_ms, config.backoff.max_ms, config.backoff.jitter);
    this.#rate = new RateLimiter(config.rate.messages_per_second, config.rate.bytes_per_second, () => clock.now());
  }

  get #clock() {
    return this.#d.broker.clock;
  }

  /** The first forward rule whose filter matches, if any. Messages from this link's own downlink never match. */
  ruleFor(m: Message): ForwardRule | undefined {
    if (m.origin === this.#origin) return undefined; // loop prevention
    let best: ForwardRule | undefined;
    let bestIndex = Number.POSITIVE_INFINITY;
    this.#rules.match(m.topic, (r) => {
      const i = this.#c.forward.indexOf(r);
      if (i < bestIndex) {
        bestIndex = i;
        best = r;
      }
    });
    return best;
  }

  /** Whether this link wants messages on `topic` logged. */
  wants(topic: string): boolean {
    let hit = false;
    this.#rules.match(topic, () => (hit = true));
    return hit;
  }

  /** Start from a recovered cursor (or, for a new link, from the end of the log). */
  start(cursor: number): void {
    this.#cursor = cursor;
    this.#persisted = cursor;
    this.#nextRead = cursor + 1;
    this.#logEnd = Math.max(this.#logEnd, this.#d.broker.nextOffset - 1);
    this.#running = true;
    this.#lastRateAt = this.#clock.now();
    this.#every(1000, () => this.#watchdog());
    void this.#connect();
  }

  async stop(): Promise<void> {
    this.#running = false;
    for (const t of this.#timers) this.#clock.clearTimeout(t);
    this.#timers.clear();
    this.#clock.clearTimeout(this.#persistTimer);
    this.#client?.close();
    this.#client = undefined;
    this.state = "stopped";
    await this.#persistCursor();
  }

  // ---- the log side ---------------------------------------------------------------------

  /** Called by the broker after each logged message is durable, in offset order. */
  onLogged(m: Message): void {
    if (m.offset > this.#logEnd) this.#logEnd = m.offset;
    this.#enforceBufferBound();
    if (this.state !== "connected") return;
    // Caught up: take it straight from memory instead of reading it back from the store.
    if (!this.#reading && this.#queue.length === 0 && m.offset === this.#nextRead) {
      this.#nextRead = m.offset + 1;
      if (this.ruleFor(m)) this.#queue.push(m);
      else this.#advanceCursor();
      this.#pump();
      return;
    }
    // live-first: new messages go out at once while the backlog drains behind them.
    if (this.#c.ordering === "live-first" && m.offset >= this.#nextRead && this.#inflight.size < this.#c.max_inflight) {
      const rule = this.ruleFor(m);
      if (rule && this.#rate.take(m.payload.byteLength) === 0) this.#send(m, rule);
      return;
    }
    this.#pump();
  }

  #enforceBufferBound(): void {
    const max = this.#c.buffer.max_messages;
    if (max <= 0 || this.#logEnd - this.#cursor <= max) return;
    const floor = this.#logEnd - max + 1;
    if (this.#nextRead < floor) {
      this.#stats.droppedBuffer += floor - this.#nextRead;
      this.#nextRead = floor;
    }
    const before = this.#queue.length;
    this.#queue = this.#queue.filter((q) => q.offset >= floor);
    this.#stats.droppedBuffer += before - this.#queue.length;
    this.#advanceCursor();
  }

  #fill(): void {
    if (this.#reading || this.#nextRead > this.#logEnd) return;
    this.#reading = true;
    const epoch = this.#epoch;
    const from = this.#nextRead;
    this.#d.broker.store.readLog(from, READ_BATCH).then(
      (batch) => {
        this.#reading = false;
        if (epoch !== this.#epoch || this.state !== "connected") return;
        const now = this.#clock.now();
        const ttl = this.#c.buffer.ttl_seconds * 1000;
        for (const m of batch) {
          if (m.offset < this.#nextRead) continue;
          this.#nextRead = m.offset + 1;
          if (m.offset > this.#logEnd) this.#logEnd = m.offset;
          if (this.#acked.has(m.offset) || this.#inflight.has(m.offset)) continue;
          if (!this.ruleFor(m)) continue;
          if (ttl > 0 && now - m.receivedAt > ttl) {
            this.#stats.droppedTtl++;
            continue;
          }
          this.#queue.push(m);
        }
        // Fewer than asked: everything committed so far has been read (the store
        // returns committed messages, and the broker reports them after the commit).
        if (batch.length < READ_BATCH) this.#nextRead = Math.max(this.#nextRead, this.#logEnd + 1);
        this.#advanceCursor();
        this.#pump();
      },
      (err: unknown) => {
        this.#reading = false;
        this.#stats.lastError = `reading the log: ${String(err)}`;
        this.#later(1000, () => this.#pump());
      },
    );
  }

  // ---- sending --------------------------------------------------------------------------

  #pump(): void {
    if (this.state !== "connected") return;
    while (this.#inflight.size < this.#c.max_inflight) {
      const m = this.#queue[0];
      if (!m) {
        this.#fill();
        return;
      }
      const rule = this.ruleFor(m);
      if (!rule) {
        this.#queue.shift();
        continue;
      }
      const wait = this.#rate.take(m.payload.byteLength);
      if (wait > 0) {
        this.#later(wait, () => this.#pump());
        return;
      }
      this.#queue.shift();
      this.#send(m, rule);
    }
  }

  #send(m: Message, rule: ForwardRule): void {
    const client = this.#client;
    if (!client) return;
    const now = this.#clock.now();
    if (m.expiresAt !== undefined && m.expiresAt <= now) {
      this.#stats.droppedTtl++;
      this.#acked.add(m.offset);
      this.#advanceCursor();
      return;
    }
    const p: CloudPublish = {
      topic: renderTopic(rule.topic, rule.strip, { topic: m.topic, edgeId: this.#d.edgeId, clientId: m.origin }),
      payload: m.payload,
      qos: Math.min(rule.qos, 2) as 0 | 1 | 2,
      retain: rule.retain && m.retain,
      // Anything at or below the highest offset already sent may have reached the cloud.
      dup: m.offset <= this.#highestSent,
    };
    if (this.#c.protocol_version === 5) p.properties = this.#properties(m, now);
    const epoch = this.#epoch;
    this.#inflight.set(m.offset, { sentAt: now, receivedAt: m.receivedAt });
    if (m.offset > this.#highestSent) this.#highestSent = m.offset;
    this.#stats.sent++;
    client.publish(p, (err) => this.#onAck(epoch, m.offset, err));
  }

  /** The original receive time and the edge id travel along, so the cloud sees skew and replays. */
  #properties(m: Message, now: number): CloudPublish["properties"] {
    const mp = m.properties ?? {};
    const user: Record<string, string | string[]> = { ...(mp.userProperties ?? {}) };
    user["ferry-received-at"] = new Date(m.receivedAt).toISOString();
    user["ferry-edge-id"] = this.#d.edgeId;
    const out: NonNullable<CloudPublish["properties"]> = { userProperties: user };
    if (mp.payloadFormatIndicator !== undefined) out.payloadFormatIndicator = mp.payloadFormatIndicator;
    if (mp.contentType !== undefined) out.contentType = mp.contentType;
    if (mp.responseTopic !== undefined) out.responseTopic = mp.responseTopic;
    if (mp.correlationData !== undefined) out.correlationData = Buffer.from(mp.correlationData);
    if (m.expiresAt !== undefined) out.messageExpiryInterval = Math.max(1, Math.ceil((m.expiresAt - now) / 1000));
    return out;
  }

  #onAck(epoch: number, offset: number, err: Error | undefined): void {
    if (epoch !== this.#epoch) return; // a reply from a connection we already gave up on
    if (!this.#inflight.delete(offset)) return;
    if (err) {
      const code = (err as Error & { code?: number }).code;
      if (typeof code === "number" && PERMANENT_REFUSALS.has(code)) {
        // Retrying a message the cloud refuses for good would block the link forever.
        this.#stats.droppedRefused++;
        this.#stats.lastError = `cloud refused offset ${offset}: ${err.message}`;
      } else {
        this.#stats.lastError = `publish failed: ${err.message}`;
        this.#reconnect(`publish failed: ${err.message}`);
        return;
      }
    } else {
      this.#stats.acknowledged++;
    }
    this.#acked.add(offset);
    this.#advanceCursor();
    this.#pump();
  }

  /** Everything below the lowest outstanding offset is done. */
  #advanceCursor(): void {
    let low = this.#nextRead;
    const head = this.#queue[0];
    if (head && head.offset < low) low = head.offset;
    for (const o of this.#inflight.keys()) if (o < low) low = o;
    const cursor = low - 1;
    if (cursor <= this.#cursor) return;
    this.#cursor = cursor;
    if (this.#acked.size > 0) for (const o of this.#acked) if (o <= cursor) this.#acked.delete(o);
    if (this.#persistTimer === undefined) {
      // Coalesce cursor writes; a crash re-sends at most this window's messages (as DUP).
      this.#persistTimer = this.#clock.setTimeout(() => {
        this.#persistTimer = undefined;
        void this.#persistCursor();
      }, 100);
    }
  }

  async #persistCursor(): Promise<void> {
    const c = this.#cursor;
    if (c === this.#persisted) return;
    this.#persisted = c;
    try {
      await this.#d.broker.store.commit([{ op: "cursor-put", name: this.name, offset: c }]);
    } catch (err) {
      this.#d.broker.logger.warn(`uplink ${this.name}: saving cursor failed: ${String(err)}`);
      this.#persisted = 0;
    }
  }

  // ---- connection -----------------------------------------------------------------------

  async #connect(): Promise<void> {
    if (!this.#running) return;
    this.state = "connecting";
    const epoch = ++this.#epoch;
    let client: CloudClient;
    try {
      const options = await this.#connectOptions();
      client = await this.#d.connect(options, {
        onMessage: (m) => this.#onDownlink(epoch, m),
        onClose: (reason) => {
          if (epoch === this.#epoch) this.#reconnect(reason);
        },
      });
    } catch (err) {
      if (epoch !== this.#epoch) return;
      this.#stats.lastError = `connect: ${err instanceof Error ? err.message : String(err)}`;
      this.#d.broker.logger.warn(`uplink ${this.name}: ${this.#stats.lastError}`);
      this.#retryLater();
      return;
    }
    if (!this.#running || epoch !== this.#epoch) {
      client.close();
      return;
    }
    this.#client = client;
    this.#connectedAt = this.#clock.now();
    if (this.#c.downlink.length > 0) {
      try {
        const granted = await client.subscribe(this.#c.downlink.map((r) => ({ filter: renderFilter(r.filter, this.#d.edgeId), qos: r.qos })));
        const refused = granted.filter((g) => g >= 0x80).length;
        if (refused > 0) this.#stats.lastError = `cloud refused ${refused} downlink subscription(s)`;
      } catch (err) {
        if (epoch === this.#epoch) this.#reconnect(`subscribe failed: ${String(err)}`);
        return;
      }
    }
    if (epoch !== this.#epoch) return;
    this.state = "connected";
    this.#d.broker.logger.info(`uplink ${this.name}: connected to ${this.#c.url}, resuming after offset ${this.#cursor}`);
    // Resume from the cursor: whatever was unacknowledged is sent again, in order.
    this.#queue = [];
    this.#inflight.clear();
    this.#nextRead = this.#cursor + 1;
    this.#pump();
  }

  async #connectOptions(): Promise<CloudConnectOptions> {
    const c = this.#c;
    const read = (p: string | undefined) => (p === undefined ? Promise.resolve(undefined) : this.#d.readFile(p));
    // Files are read at every attempt, so renewed certificates and passwords need no restart.
    const [ca, cert, key, pw] = await Promise.all([read(c.tls.ca), read(c.tls.cert), read(c.tls.key), read(c.password_file)]);
    const password = pw !== undefined ? trimNewline(pw) : c.password !== undefined ? new TextEncoder().encode(c.password) : undefined;
    return {
      url: c.url,
      clientId: c.client_id ?? `ferry-${this.#d.edgeId}-${c.name}`,
      username: c.username,
      password,
      protocolVersion: c.protocol_version,
      keepalive: c.keepalive,
      cleanStart: c.clean_start,
      sessionExpiry: c.session_expiry,
      ca,
      cert,
      key,
      rejectUnauthorized: c.tls.reject_unauthorized,
      connectTimeoutMs: 10_000,
    };
  }

  #reconnect(reason: string): void {
    if (!this.#running) return;
    this.#stats.lastError = reason;
    this.#stats.reconnects++;
    this.#d.broker.logger.warn(`uplink ${this.name}: ${reason}; reconnecting`);
    this.#epoch++; // late acks and messages of the old connection are ignored
    this.#client?.close();
    this.#client = undefined;
    this.#inflight.clear();
    this.#queue = [];
    this.#reading = false;
    if (this.#clock.now() - this.#connectedAt > STABLE_MS) this.#backoff.reset();
    this.#retryLater();
  }

  /** Drop the connection and reconnect now (certificate or credential change). */
  reload(): void {
    if (!this.#running) return;
    this.#backoff.reset();
    this.#reconnect("reload requested");
  }

  #retryLater(): void {
    this.state = "backoff";
    this.#later(this.#backoff.next(), () => void this.#connect());
  }

  #watchdog(): void {
    const now = this.#clock.now();
    if (now - this.#lastRateAt >= 5000) {
      this.#stats.drainRate = ((this.#stats.acknowledged - this.#lastRateAcked) * 1000) / (now - this.#lastRateAt);
      this.#lastRateAt = now;
      this.#lastRateAcked = this.#stats.acknowledged;
    }
    if (this.state !== "connected" || this.#inflight.size === 0) return;
    let oldest = Number.POSITIVE_INFINITY;
    for (const f of this.#inflight.values()) if (f.sentAt < oldest) oldest = f.sentAt;
    // "Connected" but nothing acknowledged for too long: the link is dead in all but name.
    if (now - oldest > this.#c.ack_timeout_seconds * 1000) {
      this.#reconnect(`no acknowledgement for ${this.#c.ack_timeout_seconds}s`);
    }
  }

  // ---- downlink -------------------------------------------------------------------------

  #onDownlink(epoch: number, m: CloudIncoming): void {
    if (epoch !== this.#epoch) return;
    const rule = this.#downlinkRule(m.topic);
    const broker = this.#d.broker;
    if (!rule) {
      m.ack(0);
      return;
    }
    const topic = renderTopic(rule.topic, rule.strip, { topic: m.topic, edgeId: this.#d.edgeId });
    if (topicNameProblem(topic, broker.options)) {
      this.#stats.lastError = `downlink: cannot map ${m.topic} to a valid local topic (${topic})`;
      m.ack(0x90);
      return;
    }
    this.#stats.downlinkReceived++;
    const now = broker.clock.now();
    const message: Message = {
      offset: 0,
      topic,
      payload: new Uint8Array(m.payload),
      qos: Math.min(m.qos, rule.qos) as 0 | 1 | 2,
      retain: m.retain,
      receivedAt: now,
      origin: this.#origin,
    };
    const p = m.properties ?? {};
    const props: NonNullable<Message["properties"]> = {};
    if (typeof p.contentType === "string") props.contentType = p.contentType;
    if (typeof p.responseTopic === "string") props.responseTopic = p.responseTopic;
    if (p.correlationData instanceof Uint8Array) props.correlationData = new Uint8Array(p.correlationData);
    if (typeof p.payloadFormatIndicator === "boolean") props.payloadFormatIndicator = p.payloadFormatIndicator;
    if (p.userProperties && typeof p.userProperties === "object") {
      props.userProperties = p.userProperties as Record<string, string | string[]>;
    }
    if (Object.keys(props).length > 0) message.properties = props;
    if (typeof p.messageExpiryInterval === "number") message.expiresAt = now + p.messageExpiryInterval * 1000;
    // Acknowledge the cloud only once the command is durable here.
    broker.injectMessage(message).then(
      () => m.ack(0),
      (err: unknown) => m.ack(err instanceof StoreFullError ? 0x97 : 0x80),
    );
  }

  #downlinkRule(topic: string): DownlinkRule | undefined {
    return this.#c.downlink.find((r) => topicMatches(renderFilter(r.filter, this.#d.edgeId), topic));
  }

  // ---- status ---------------------------------------------------------------------------

  status(): LinkStatus {
    const now = this.#clock.now();
    let oldest = Number.POSITIVE_INFINITY;
    for (const f of this.#inflight.values()) if (f.receivedAt < oldest) oldest = f.receivedAt;
    const head = this.#queue[0];
    if (head && head.receivedAt < oldest) oldest = head.receivedAt;
    return {
      name: this.name,
      url: this.#c.url,
      state: this.state,
      cursor: this.#cursor,
      backlogEntries: Math.max(0, this.#logEnd - this.#cursor),
      oldestPendingMs: Number.isFinite(oldest) ? now - oldest : 0,
      inflight: this.#inflight.size,
      ...this.#stats,
      connectedSince: this.state === "connected" ? this.#connectedAt : undefined,
    };
  }

  #later(ms: number, fn: () => void): void {
    const t = this.#clock.setTimeout(() => {
      this.#timers.delete(t);
      if (this.#running) fn();
    }, ms);
    this.#timers.add(t);
  }

  #every(ms: number, fn: () => void): void {
    const tick = () => {
      fn();
      this.#later(ms, tick);
    };
    this.#later(ms, tick);
  }
}

function trimNewline(b: Uint8Array): Uint8Array {
  let end = b.byteLength;
  while (end > 0 && (b[end - 1] === 10 || b[end - 1] === 13)) end--;
  return b.subarray(0, end);
}
