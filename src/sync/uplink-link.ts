/**
 * One cloud uplink: a reader of the durable log with its own cursor. It forwards
 * matching messages to the cloud broker in log order, advances its cursor only past
 * messages the cloud acknowledged, and re-sends from the cursor after any cut, so
 * nothing acknowledged locally is lost and per-topic order holds across outages and
 * restarts of either side. Cloud commands (downlink rules) are published locally.
 *
 * Between the cursor and the read position sits the send window: the matching
 * messages read from the log, in offset order, each queued, in flight or done. The
 * cursor is the offset before the first entry not done. After a cut, entries in
 * flight go back to queued and are sent again (with DUP) from there, without reading
 * the log again; after a restart of Ferry, reading resumes after the saved cursor.
 */
import type { ForwardRule, UplinkConfig } from "../config/schema.ts";
import type { Broker } from "../core/broker.ts";
import { topicNameProblem } from "../mqtt/topic.ts";
import { TopicTree } from "../core/topic-tree.ts";
import { type Message, RETAINED_COPY_ORIGIN, StoreFullError } from "../store/store.ts";
import { Backoff } from "./backoff.ts";
import type { CloudClient, CloudConnectOptions, CloudHandlers, CloudIncoming, CloudPublish } from "./cloud-client.ts";
import { downlinkMessage, downlinkRuleFor, downlinkTopic } from "./downlink.ts";
import { RateLimiter } from "./rate-limiter.ts";
import { renderFilter, renderTopic } from "./topic-template.ts";

export type LinkState = "stopped" | "connecting" | "connected" | "backoff" | "paused";

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
/** Log entries read at once at most, and the bytes a read aims at (the batch shrinks for large messages). */
const READ_MAX = 1024;
const READ_MIN = 16;
const READ_BYTES = 4 * 1024 * 1024;
/** A connection that lasted this long resets the backoff. */
const STABLE_MS = 30_000;
/** Entries of the window to drop at once from its front (amortises the copy). */
const COMPACT_AT = 1024;
/** Topic → rule and topic → remote topic caches are cleared beyond this many entries. */
const CACHE_MAX = 10_000;
/** Cursor writes are coalesced over this window; a crash re-sends at most what it covers. */
const PERSIST_MS = 100;

const QUEUED = 0;
const INFLIGHT = 1;
const DONE = 2;

/** A matching message between the cursor and the read position. */
interface Pending {
  readonly m: Message;
  readonly rule: ForwardRule;
  state: typeof QUEUED | typeof INFLIGHT | typeof DONE;
  sentAt: number;
  /** Times it was handed to the cloud connection (more than once: a re-send, with DUP). */
  sends: number;
  /** Taken ahead of the reader (live-first) and not yet reached by it. */
  live: boolean;
}

export class UplinkLink {
  readonly name: string;
  state: LinkState = "stopped";

  #c: UplinkConfig;
  #d: LinkDeps;
  #rules = new TopicTree<ForwardRule>();
  #ruleCache = new Map<string, ForwardRule | null>();
  #topicCache = new Map<ForwardRule, Map<string, string>>();
  #origin: string;
  #cursor = 0;
  /** The next log offset to read; everything below it is in the window or done with. */
  #nextRead = 1;
  /** The highest offset known to be in the log (committed). */
  #logEnd = 0;
  #window: Pending[] = [];
  /** Index of the first entry not done. */
  #head = 0;
  /** No entry before this index is queued. */
  #next = 0;
  #queued = 0;
  #inflight = 0;
  /**
   * live-first: new messages taken ahead of the reader, queued before the window's
   * entries; by offset until the reader reaches them (queued or in flight), then done.
   */
  #liveQueue: Pending[] = [];
  #liveHead = 0;
  #live = new Map<number, Pending>();
  #liveDone = new Set<number>();
  #reading = false;
  /** Average size (payload and topic) of recent messages, for the read batch size. */
  #avgBytes = 256;
  #client: CloudClient | undefined;
  #epoch = 0;
  #running = false;
  #paused = false;
  #backoff: Backoff;
  #rate: RateLimiter;
  #limited: boolean;
  #pumpTimer: unknown;
  #timers = new Set<unknown>();
  #persistTimer: unknown;
  #persisted = 0;
  #connectedAt = 0;
  /** When the cloud last acknowledged (or refused) anything. */
  #lastAckAt = 0;
  #lastRateAt = 0;
  #lastRateAcked = 0;
  #isoAt = -1;
  #iso = "";
  #lastLogged: string | undefined;
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
    this.#limited = config.rate.messages_per_second > 0 || config.rate.bytes_per_second > 0;
  }

  get #clock() {
    return this.#d.broker.clock;
  }

  /**
   * The first forward rule whose filter matches, if any. Messages from this link's own
   * downlink never match (loop prevention), nor copies of retained messages the broker
   * logged for a session (they were forwarded when they were published).
   */
  ruleFor(m: Message): ForwardRule | undefined {
    if (m.origin === this.#origin || m.origin === RETAINED_COPY_ORIGIN) return undefined;
    return this.#ruleForTopic(m.topic);
  }

  /** Whether this link wants messages on `topic` logged. */
  wants(topic: string): boolean {
    return this.#ruleForTopic(topic) !== undefined;
  }

  #ruleForTopic(topic: string): ForwardRule | undefined {
    const cached = this.#ruleCache.get(topic);
    if (cached !== undefined) return cached ?? undefined;
    let best: ForwardRule | undefined;
    let bestIndex = Number.POSITIVE_INFINITY;
    this.#rules.match(topic, (r) => {
      const i = this.#c.forward.indexOf(r);
      if (i < bestIndex) {
        bestIndex = i;
        best = r;
      }
    });
    if (this.#ruleCache.size >= CACHE_MAX) this.#ruleCache.clear();
    this.#ruleCache.set(topic, best ?? null);
    return best;
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
    this.#persistTimer = undefined;
    this.#clock.clearTimeout(this.#pumpTimer);
    this.#pumpTimer = undefined;
    this.#epoch++;
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
    if (this.state !== "connected") return; // it is in the log; read when the link is up
    const liveFirst = this.#c.ordering === "live-first";
    // Caught up: take it straight from memory instead of reading it back from the store
    // (live-first: only with no backlog waiting, which it would otherwise queue behind).
    if (!this.#reading && m.offset === this.#nextRead && this.#queued < (liveFirst ? 1 : this.#readLimit())) {
      this.#nextRead = m.offset + 1;
      this.#avgBytes += (m.payload.byteLength + m.topic.length - this.#avgBytes) / 64;
      const rule = this.ruleFor(m);
      if (rule) this.#push(m, rule);
      else this.#advanceCursor();
      this.#pump();
      return;
    }
    // live-first: new messages go out first while the backlog drains behind them.
    // Beyond a read batch waiting, they wait in the log like the backlog.
    if (liveFirst && m.offset >= this.#nextRead && this.#live.size < this.#readLimit() && !this.#live.has(m.offset)) {
      const rule = this.ruleFor(m);
      if (rule) {
        const p: Pending = { m, rule, state: QUEUED, sentAt: 0, sends: 0, live: true };
        this.#live.set(m.offset, p);
        this.#liveQueue.push(p);
      }
    }
    this.#pump();
  }

  #push(m: Message, rule: ForwardRule): void {
    this.#window.push({ m, rule, state: QUEUED, sentAt: 0, sends: 0, live: false });
    this.#queued++;
  }

  /** buffer.max_messages: when the link falls further behind, the oldest queued entries are skipped. */
  #enforceBufferBound(): void {
    const max = this.#c.buffer.max_messages;
    if (max <= 0 || this.#logEnd - this.#cursor <= max) return;
    const floor = this.#logEnd - max + 1;
    if (this.#nextRead < floor) {
      this.#stats.droppedBuffer += floor - this.#nextRead;
      this.#nextRead = floor;
      this.#forgetLiveBelow(floor);
    }
    const w = this.#window;
    for (let i = this.#head; i < w.length && w[i]!.m.offset < floor; i++) {
      const p = w[i]!;
      if (p.state !== QUEUED) continue; // in flight: its acknowledgement settles it
      p.state = DONE;
      this.#queued--;
      this.#stats.droppedBuffer++;
    }
    this.#advanceCursor();
  }

  /** The reader jumped past these offsets: live-first bookkeeping for them is no longer needed. */
  #forgetLiveBelow(offset: number): void {
    for (const o of this.#liveDone) if (o < offset) this.#liveDone.delete(o);
    for (const [o, p] of this.#live) {
      if (o >= offset) continue;
      this.#live.delete(o);
      p.live = false; // skipped in the live queue from now on
    }
  }

  #fill(): void {
    if (this.#reading || this.#nextRead > this.#logEnd) return;
    this.#reading = true;
    const from = this.#nextRead;
    // Everything up to here was committed before the read starts, so the read sees it.
    const endAtCall = this.#logEnd;
    const limit = this.#readLimit();
    this.#d.broker.store.readLog(from, limit).then(
      (batch) => {
        this.#reading = false;
        if (!this.#running) return;
        this.#take(batch);
        // Fewer than asked: everything committed before the read has been read (gaps
        // are offsets whose commit failed, or copies logged for sessions only).
        if (batch.length < limit && this.#nextRead <= endAtCall) {
          this.#nextRead = endAtCall + 1;
          this.#forgetLiveBelow(this.#nextRead);
        }
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

  /** Messages per read (and queued at most): about READ_BYTES, between READ_MIN and READ_MAX. */
  #readLimit(): number {
    return Math.max(READ_MIN, Math.min(READ_MAX, Math.floor(READ_BYTES / this.#avgBytes)));
  }

  #take(batch: readonly Message[]): void {
    const now = this.#clock.now();
    const ttl = this.#c.buffer.ttl_seconds * 1000;
    let bytes = 0;
    for (const m of batch) {
      bytes += m.payload.byteLength + m.topic.length;
      if (m.offset < this.#nextRead) continue;
      this.#nextRead = m.offset + 1;
      if (m.offset > this.#logEnd) this.#logEnd = m.offset;
      if (this.#liveDone.delete(m.offset)) continue; // already acknowledged (live-first)
      const live = this.#live.get(m.offset);
      if (live) {
        // Taken ahead of the reader: from now on it is a window entry like any other
        // (holding the cursor while in flight; skipped in the live queue if still queued).
        this.#live.delete(m.offset);
        live.live = false;
        this.#window.push(live);
        if (live.state === QUEUED) this.#queued++;
        continue;
      }
      const rule = this.ruleFor(m);
      if (!rule) continue;
      if (ttl > 0 && now - m.receivedAt > ttl) {
        this.#stats.droppedTtl++;
        continue;
      }
      this.#push(m, rule);
    }
    if (batch.length > 0) this.#avgBytes = (this.#avgBytes + bytes / batch.length) / 2;
  }

  // ---- sending --------------------------------------------------------------------------

  #pump(): void {
    if (this.state !== "connected" || this.#pumpTimer !== undefined) return;
    const w = this.#window;
    const max = this.#c.max_inflight;
    while (this.#inflight < max) {
      const live = this.#nextLive();
      while (!live && this.#next < w.length && w[this.#next]!.state !== QUEUED) this.#next++;
      const p = live ?? w[this.#next];
      if (!p) break;
      if (this.#limited) {
        const wait = this.#rate.take(p.m.payload.byteLength);
        if (wait > 0) {
          this.#pumpTimer = this.#clock.setTimeout(() => {
            this.#pumpTimer = undefined;
            if (this.#running) this.#pump();
          }, wait);
          break;
        }
      }
      if (live) this.#liveHead++;
      else {
        this.#next++;
        this.#queued--;
      }
      this.#send(p);
      if (this.state !== "connected") return; // the send failed and cut the connection
    }
    // Read ahead while there is room, so the window never runs dry during a drain.
    if (this.#queued < this.#c.max_inflight + READ_MIN) this.#fill();
  }

  /** The first live-first entry still waiting to be sent, if any. */
  #nextLive(): Pending | undefined {
    const q = this.#liveQueue;
    while (this.#liveHead < q.length) {
      const p = q[this.#liveHead]!;
      if (p.live && p.state === QUEUED) return p;
      this.#liveHead++;
    }
    if (q.length > 0) {
      this.#liveQueue = [];
      this.#liveHead = 0;
    }
    return undefined;
  }

  #send(p: Pending): void {
    const client = this.#client;
    if (!client) return;
    const m = p.m;
    const now = this.#clock.now();
    const ttl = this.#c.buffer.ttl_seconds * 1000;
    if ((m.expiresAt !== undefined && m.expiresAt <= now) || (ttl > 0 && now - m.receivedAt > ttl)) {
      this.#stats.droppedTtl++;
      this.#settle(p);
      return;
    }
    const rule = p.rule;
    const pub: CloudPublish = {
      topic: this.#remoteTopic(rule, m),
      payload: m.payload,
      qos: rule.qos,
      retain: rule.retain && m.retain,
      // Sent before on a connection that was cut: the cloud may already have it.
      dup: p.sends > 0,
    };
    if (this.#c.protocol_version === 5) pub.properties = this.#properties(m, now);
    const epoch = this.#epoch;
    p.state = INFLIGHT;
    p.sentAt = now;
    p.sends++;
    this.#inflight++;
    this.#stats.sent++;
    client.publish(pub, (err) => this.#onAck(epoch, p, err));
  }

  #remoteTopic(rule: ForwardRule, m: Message): string {
    const values = { topic: m.topic, edgeId: this.#d.edgeId, clientId: m.origin };
    if (rule.topic.includes("${clientid}")) return renderTopic(rule.topic, rule.strip, values);
    let cache = this.#topicCache.get(rule);
    if (!cache) this.#topicCache.set(rule, cache = new Map());
    let topic = cache.get(m.topic);
    if (topic === undefined) {
      if (cache.size >= CACHE_MAX) cache.clear();
      topic = renderTopic(rule.topic, rule.strip, values);
      cache.set(m.topic, topic);
    }
    return topic;
  }

  /** The original receive time and the edge id travel along, so the cloud sees skew and replays. */
  #properties(m: Message, now: number): CloudPublish["properties"] {
    const mp = m.properties;
    const user: Record<string, string | string[]> = mp?.userProperties ? { ...mp.userProperties } : {};
    if (m.receivedAt !== this.#isoAt) {
      this.#isoAt = m.receivedAt;
      this.#iso = new Date(m.receivedAt).toISOString();
    }
    user["ferry-received-at"] = this.#iso;
    user["ferry-edge-id"] = this.#d.edgeId;
    const out: NonNullable<CloudPublish["properties"]> = { userProperties: user };
    if (mp) {
      if (mp.payloadFormatIndicator !== undefined) out.payloadFormatIndicator = mp.payloadFormatIndicator;
      if (mp.contentType !== undefined) out.contentType = mp.contentType;
      if (mp.responseTopic !== undefined) out.responseTopic = mp.responseTopic;
      if (mp.correlationData !== undefined) out.correlationData = Buffer.from(mp.correlationData);
    }
    if (m.expiresAt !== undefined) out.messageExpiryInterval = Math.max(1, Math.ceil((m.expiresAt - now) / 1000));
    return out;
  }

  #onAck(epoch: number, p: Pending, err: Error | undefined): void {
    if (epoch !== this.#epoch || p.state !== INFLIGHT) return; // a reply on a connection already given up
    this.#lastAckAt = this.#clock.now();
    if (err) {
      const code = (err as Error & { code?: number }).code;
      if (typeof code !== "number" || !PERMANENT_REFUSALS.has(code)) {
        // Cut, and re-send from the first entry not acknowledged (this one included).
        this.#reconnect(`publish failed: ${err.message}`);
        return;
      }
      // Retrying a message the cloud refuses for good would block the link forever.
      this.#stats.droppedRefused++;
      this.#stats.lastError = `cloud refused offset ${p.m.offset} (${p.m.topic}): ${err.message}`;
    } else {
      this.#stats.acknowledged++;
    }
    this.#settle(p);
    this.#pump();
  }

  /** The entry is done with (acknowledged, refused for good, or expired). */
  #settle(p: Pending): void {
    if (p.state === INFLIGHT) this.#inflight--;
    p.state = DONE;
    if (p.live) {
      p.live = false;
      this.#live.delete(p.m.offset);
      this.#liveDone.add(p.m.offset);
      return; // the reader has not reached it: the cursor cannot move for it yet
    }
    this.#advanceCursor();
  }

  /** Everything below the first entry not done (or below the read position) is done. */
  #advanceCursor(): void {
    const w = this.#window;
    let head = this.#head;
    while (head < w.length && w[head]!.state === DONE) head++;
    if (head >= COMPACT_AT && head * 2 >= w.length) {
      this.#window = w.slice(head);
      this.#next = Math.max(0, this.#next - head);
      head = 0;
    } else if (head === w.length && head > 0) {
      this.#window = [];
      this.#next = 0;
      head = 0;
    }
    this.#head = head;
    const first = this.#window[head];
    const cursor = (first ? first.m.offset : this.#nextRead) - 1;
    if (cursor <= this.#cursor) return;
    this.#cursor = cursor;
    if (this.#persistTimer === undefined && this.#running) {
      // Coalesce cursor writes; a crash re-sends at most this window's messages (as DUP).
      this.#persistTimer = this.#clock.setTimeout(() => {
        this.#persistTimer = undefined;
        void this.#persistCursor();
      }, PERSIST_MS);
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
    if (!this.#running || this.#paused) return;
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
      this.#warnOnce(this.#stats.lastError);
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
        const granted = await client.subscribe(
          this.#c.downlink.map((r) => ({ filter: renderFilter(r.filter, this.#d.edgeId), qos: r.qos })),
        );
        const refused = granted.filter((g) => g >= 0x80).length;
        if (refused > 0) this.#stats.lastError = `cloud refused ${refused} downlink subscription(s)`;
      } catch (err) {
        if (epoch === this.#epoch) this.#reconnect(`subscribe failed: ${String(err)}`);
        return;
      }
    }
    if (epoch !== this.#epoch) return;
    this.state = "connected";
    this.#lastLogged = undefined;
    this.#d.broker.logger.info(
      `uplink ${this.name}: connected to ${this.#c.url}, resuming after offset ${this.#cursor}`,
    );
    this.#pump();
  }

  async #connectOptions(): Promise<CloudConnectOptions> {
    const c = this.#c;
    const read = (p: string | undefined) => (p === undefined ? Promise.resolve(undefined) : this.#d.readFile(p));
    // Files are read at every attempt, so renewed certificates and passwords need no restart.
    const [ca, cert, key, pw] = await Promise.all([
      read(c.tls.ca),
      read(c.tls.cert),
      read(c.tls.key),
      read(c.password_file),
    ]);
    const password = pw !== undefined
      ? trimNewline(pw)
      : c.password !== undefined
      ? new TextEncoder().encode(c.password)
      : undefined;
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
    if (!this.#running || this.#paused) return;
    this.#stats.lastError = reason;
    this.#stats.reconnects++;
    this.#warnOnce(`${reason}; reconnecting`);
    this.#epoch++; // late acks and messages of the old connection are ignored
    this.#client?.close();
    this.#client = undefined;
    this.#requeue();
    if (this.#clock.now() - this.#connectedAt > STABLE_MS) this.#backoff.reset();
    this.#retryLater();
  }

  /** The connection is gone: whatever was in flight is sent again, in order, on the next. */
  #requeue(): void {
    const w = this.#window;
    for (let i = this.#head; i < w.length; i++) {
      const p = w[i]!;
      if (p.state !== INFLIGHT) continue;
      p.state = QUEUED;
      this.#queued++;
    }
    this.#next = this.#head;
    // Taken ahead of the reader: forgotten here, the reader finds them in the log.
    this.#live.clear();
    this.#liveQueue = [];
    this.#liveHead = 0;
    this.#inflight = 0;
    this.#clock.clearTimeout(this.#pumpTimer);
    this.#pumpTimer = undefined;
  }

  /**
   * Close the connection and stay away from the cloud until `resume()`. The cursor is
   * kept (and saved): messages keep being logged and are forwarded after the resume.
   */
  async pause(): Promise<void> {
    if (!this.#running || this.#paused) return;
    this.#paused = true;
    this.#epoch++;
    this.#client?.close();
    this.#client = undefined;
    this.#requeue();
    this.state = "paused";
    await this.#persistCursor();
  }

  resume(): void {
    if (!this.#running || !this.#paused) return;
    this.#paused = false;
    this.#backoff.reset();
    void this.#connect();
  }

  /** Drop the connection and reconnect now (certificate or credential change). */
  reload(): void {
    if (!this.#running || this.#paused) return;
    this.#backoff.reset();
    this.#reconnect("reload requested");
  }

  #retryLater(): void {
    this.state = "backoff";
    this.#later(this.#backoff.next(), () => void this.#connect());
  }

  /** A failing cloud is retried often: the same reason is logged once, not at every attempt. */
  #warnOnce(msg: string): void {
    if (msg === this.#lastLogged) return;
    this.#lastLogged = msg;
    this.#d.broker.logger.warn(`uplink ${this.name}: ${msg}`);
  }

  #watchdog(): void {
    const now = this.#clock.now();
    if (now - this.#lastRateAt >= 5000) {
      this.#stats.drainRate = ((this.#stats.acknowledged - this.#lastRateAcked) * 1000) / (now - this.#lastRateAt);
      this.#lastRateAt = now;
      this.#lastRateAcked = this.#stats.acknowledged;
    }
    if (this.state !== "connected" || this.#inflight === 0) return;
    const oldestSent = this.#oldest((p) => (p.state === INFLIGHT ? p.sentAt : Number.POSITIVE_INFINITY));
    // "Connected", something in flight, and no acknowledgement of anything for too long:
    // the link is dead in all but name. (A slow cloud that keeps acknowledging is not.)
    if (now - Math.max(oldestSent, this.#lastAckAt) > this.#c.ack_timeout_seconds * 1000) {
      this.#reconnect(`no acknowledgement from the cloud for ${this.#c.ack_timeout_seconds}s`);
    }
  }

  /** The smallest `key` over the entries not done (window and live-first). */
  #oldest(key: (p: Pending) => number): number {
    let oldest = Number.POSITIVE_INFINITY;
    const w = this.#window;
    for (let i = this.#head; i < w.length; i++) {
      const p = w[i]!;
      if (p.state === DONE) continue;
      const k = key(p);
      if (k < oldest) oldest = k;
    }
    for (const p of this.#live.values()) {
      const k = key(p);
      if (k < oldest) oldest = k;
    }
    return oldest;
  }

  // ---- downlink -------------------------------------------------------------------------

  #onDownlink(epoch: number, m: CloudIncoming): void {
    if (epoch !== this.#epoch) return;
    const broker = this.#d.broker;
    const rule = downlinkRuleFor(this.#c.downlink, m.topic, this.#d.edgeId);
    if (!rule) {
      m.ack(0);
      return;
    }
    const topic = downlinkTopic(rule, m.topic, this.#d.edgeId);
    if (topicNameProblem(topic, broker.options)) {
      this.#stats.lastError = `downlink: cannot map ${m.topic} to a valid local topic (${topic})`;
      m.ack(0x90);
      return;
    }
    this.#stats.downlinkReceived++;
    const message = downlinkMessage(rule, m, topic, this.#origin, broker.clock.now());
    // Acknowledge the cloud only once the command is durable here.
    broker.injectMessage(message).then(
      () => m.ack(0),
      (err: unknown) => m.ack(err instanceof StoreFullError ? 0x97 : 0x80),
    );
  }

  // ---- status ---------------------------------------------------------------------------

  status(): LinkStatus {
    const now = this.#clock.now();
    const oldest = this.#oldest((p) => p.m.receivedAt);
    return {
      name: this.name,
      url: this.#c.url,
      state: this.state,
      cursor: this.#cursor,
      backlogEntries: Math.max(0, this.#logEnd - this.#cursor),
      oldestPendingMs: Number.isFinite(oldest) ? now - oldest : 0,
      inflight: this.#inflight,
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
