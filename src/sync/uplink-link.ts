/**
 * One cloud uplink: a reader of the durable log with its own cursor. It forwards
 * matching messages to the cloud broker in log order, advances its cursor only past
 * messages the cloud acknowledged, and re-sends from the cursor after any cut, so
 * nothing acknowledged locally is lost and per-topic order holds across outages and
 * restarts of either side. Cloud commands (downlink rules) are published locally.
 *
 * This file is the connection side: connect and fail over across endpoints, back off,
 * the acknowledgement watchdog, pacing by the cloud (Receive Maximum, quota replies)
 * and the rate limit. The window and cursor rules are in send-window.ts, reads of the
 * log in log-intake.ts, the forward rules in forward-rules.ts, what a message carries
 * in cloud-properties.ts, the connect options in cloud-connect-options.ts, which
 * endpoint next in endpoints.ts, cloud commands in downlink.ts and the status fields in
 * link-status.ts. The log is reached only through a LogPort (log-port.ts).
 */
import type { ForwardRule, UplinkConfig } from "../config/schema.ts";
import type { Message } from "../store/store.ts";
import { Backoff } from "./backoff.ts";
import type { CloseDetail, CloudClient, CloudConnectOptions, CloudHandlers, CloudPublish } from "./cloud-client.ts";
import { cloudConnectOptions } from "./cloud-connect-options.ts";
import { type ClockState, envelope, type FerryStamp, PropertyStamper } from "./cloud-properties.ts";
import { handleDownlink } from "./downlink.ts";
import { Endpoints, referenceUrl, uplinkUrls } from "./endpoints.ts";
import { ForwardRules } from "./forward-rules.ts";
import type { LocalPublishPort, LogPort } from "./log-port.ts";
import { RateLimiter } from "./rate-limiter.ts";
import type { LinkState, LinkStatus } from "./link-status.ts";
import { LogIntake, READ_MIN } from "./log-intake.ts";
import { INFLIGHT, type Pending, SendWindow, type SkippedRange } from "./send-window.ts";
import { StampedPublishEncoder } from "./stamped-publish.ts";
import { renderFilter } from "./topic-template.ts";

export type { LinkState, LinkStatus } from "./link-status.ts";

export interface LinkDeps {
  log: LogPort;
  local: LocalPublishPort;
  edgeId: string;
  /** Identifies this log's offsets in the dedup key (cloud-properties.ts). */
  logId?: () => string;
  /** Whether the clock was synchronised when the message at `offset` arrived. */
  clockAt?: (offset: number) => ClockState;
  connect(o: CloudConnectOptions, h: CloudHandlers): Promise<CloudClient>;
  readFile(path: string): Promise<Uint8Array>;
  /** The largest packet taken from the cloud (CloudConnectOptions.maxPacketSize). */
  maxPacketSize?: number;
}

/**
 * Reason codes with which a cloud refuses a message for good; anything else is retried.
 * 0x95 Packet too large comes from the client itself: the message is over the cloud's
 * Maximum Packet Size (CONNACK), so sending it again could never succeed.
 */
const PERMANENT_REFUSALS = new Set([0x83, 0x87, 0x90, 0x95, 0x99]);
/** The cloud asks Ferry to slow down: 0x97 Quota exceeded, 0x96 Message rate too high. */
const SLOW_DOWN = new Set([0x96, 0x97]);
/** DISCONNECT reasons that send the client to another server. */
const MOVE_ON = new Set([0x9c, 0x9d]);
/** A connection that lasted this long resets the backoff. */
const STABLE_MS = 30_000;
/** Cursor writes are coalesced over this window; a crash re-sends at most what it covers. */
const PERSIST_MS = 100;
/** First hold after a quota reply; doubles up to backoff.max_ms. */
const QUOTA_HOLD_MS = 1000;
/** After a quota reply the window opens again by one per this many acknowledgements. */
const REOPEN_EVERY = 10;
/**
 * A new connection starts with this many in flight and opens by one per acknowledgement
 * (doubling per round trip) up to the full window: a cloud that is just coming back sees
 * the backlog ramp up, not the whole window at once.
 */
const SLOW_START = 8;
/** Buffer skips are logged at most this often (each line names the whole range since the last). */
const SKIP_LOG_MS = 10_000;

/** An acknowledgement refills the window once this many slots are free (an eighth of it, at least one). */
function refillBatch(window: number): number {
  return Math.max(1, window >> 3);
}
/**
 * While draining with a full window, the link has the client read nothing for this long
 * after an acknowledgement that does not refill it: the cloud's PUBACKs come a few per TCP
 * segment, and reading each as it arrives put Ferry to sleep and woke it again about every
 * second message (553 context switches per 1,000 messages in the 200,000-message drain of
 * scripts/bench-uplink.ts, most of Ferry's CPU in the kernel); held, one read takes what
 * came in the meantime (33-43 per 1,000). It delays the acknowledgements the link sees by
 * at most this, with the window full anyway; live traffic (no full window) is read at once.
 */
export const ACK_HOLD_MS = 1;

export class UplinkLink {
  readonly name: string;
  state: LinkState = "stopped";

  #c: UplinkConfig;
  #d: LinkDeps;
  #log: LogPort;
  #rules: ForwardRules;
  #origin: string;
  #w: SendWindow<ForwardRule>;
  #stamper: PropertyStamper;
  #encoder: StampedPublishEncoder;
  #endpoints: Endpoints;
  #intake: LogIntake;
  /** Buffer skips not logged yet, and when the last line was written. */
  #pendingSkip: SkippedRange | undefined;
  #lastSkipLogAt = Number.NEGATIVE_INFINITY;
  #lastInvalidLogAt = Number.NEGATIVE_INFINITY;
  #invalidUnlogged = 0;
  #downlinkIdentity: { username: string | undefined; clientId: string } | undefined;
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
  #persistedDrops = 0;
  #connectedAt = 0;
  /** The first offset logged after the current connection came up: below it is replay. */
  #liveFrom = Number.POSITIVE_INFINITY;
  /** When the cloud last acknowledged (or refused) anything. */
  #lastAckAt = 0;
  #lastRateAt = 0;
  #lastRateAcked = 0;
  #lastLogged: string | undefined;
  /** In flight at most: max_inflight, capped by the cloud's Receive Maximum, narrowed after quota replies. */
  #window: number;
  #quotaHold = 0;
  #sinceQuota = 0;
  #stats = {
    sent: 0,
    acknowledged: 0,
    drainRate: 0,
    droppedTtl: 0,
    droppedRefused: 0,
    droppedBuffer: 0,
    droppedInvalid: 0,
    quotaBackoffs: 0,
    downlinkReceived: 0,
    downlinkRefused: 0,
    reconnects: 0,
    connectAttempts: 0,
    lastError: undefined as string | undefined,
  };

  constructor(config: UplinkConfig, deps: LinkDeps) {
    this.name = config.name;
    this.#c = config;
    this.#d = deps;
    this.#log = deps.log;
    this.#origin = `$uplink:${config.name}`;
    this.#rules = new ForwardRules(config.forward, this.#origin, deps.edgeId);
    this.#w = new SendWindow(0);
    this.#intake = new LogIntake(deps.log, (m) => this.ruleFor(m), config.buffer.ttl_seconds * 1000, () => {
      this.#stats.droppedTtl++;
    });
    this.#window = config.max_inflight;
    this.#encoder = new StampedPublishEncoder(config.protocol_version, config.stamp);
    this.#stamper = new PropertyStamper(config.stamp);
    const clock = deps.log.clock;
    this.#backoff = new Backoff(config.backoff.min_ms, config.backoff.max_ms, config.backoff.jitter);
    this.#rate = new RateLimiter(config.rate.messages_per_second, config.rate.bytes_per_second, () => clock.now());
    this.#limited = config.rate.messages_per_second > 0 || config.rate.bytes_per_second > 0;
    this.#endpoints = new Endpoints(uplinkUrls(config), config.endpoint_policy);
    const acl = config.downlink_acl;
    if (acl) {
      this.#downlinkIdentity = { username: acl.username, clientId: acl.client_id ?? `ferry-uplink-${config.name}` };
    }
  }

  get #clock() {
    return this.#log.clock;
  }

  /** The counter under which buffer drops are persisted. */
  get #dropsKey(): string {
    return `uplink/${this.name}/dropped-buffer`;
  }

  ruleFor(m: Message): ForwardRule | undefined {
    return this.#rules.ruleFor(m);
  }

  /** Whether this link wants messages on `topic` logged. */
  wants(topic: string): boolean {
    return this.#rules.wants(topic);
  }

  /** Start from a recovered cursor (or, for a new link, from the end of the log). */
  start(cursor: number): void {
    this.#w = new SendWindow(cursor, this.#log.nextOffset() - 1);
    this.#persisted = cursor;
    this.#stats.droppedBuffer = this.#persistedDrops = this.#log.savedCounters()[this.#dropsKey] ?? 0;
    this.#running = true;
    this.#lastRateAt = this.#clock.now();
    this.#every(1000, () => this.#watchdog());
    this.#enforceBufferBound();
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
    this.#logSkipped();
    await this.#persistCursor();
  }

  // ---- the log side ---------------------------------------------------------------------

  /** Called by the broker after each logged message is durable, in offset order. */
  onLogged(m: Message): void {
    const w = this.#w;
    w.noteLogged(m.offset);
    this.#enforceBufferBound();
    if (this.state !== "connected") return; // it is in the log; read when the link is up
    const liveFirst = this.#c.ordering === "live-first";
    // Caught up: take it straight from memory instead of reading it back from the store
    // (live-first: only with no backlog waiting, which it would otherwise queue behind).
    const readLimit = this.#intake.readLimit();
    if (!this.#intake.reading && m.offset === w.nextRead && w.queued < (liveFirst ? 1 : readLimit)) {
      this.#intake.noteTaken(m);
      w.takeNext(m, this.ruleFor(m));
      this.#cursorMoved();
      this.#pump();
      return;
    }
    // live-first: new messages go out first while the backlog drains behind them.
    // Beyond a read batch waiting, they wait in the log like the backlog.
    if (liveFirst && w.liveAhead < readLimit) {
      const rule = this.ruleFor(m);
      if (rule) w.takeLive(m, rule);
    }
    this.#pump();
  }

  /**
   * buffer.max_messages: when the link falls further behind, the oldest entries are
   * skipped, counted and logged. During an outage every new message skips one, so the
   * log line covers the range skipped since the last one, at most every SKIP_LOG_MS.
   */
  #enforceBufferBound(): void {
    const skipped = this.#w.enforceBound(this.#c.buffer.max_messages);
    if (!skipped) return;
    this.#stats.droppedBuffer += skipped.count;
    const p = this.#pendingSkip;
    if (p) {
      p.from = Math.min(p.from, skipped.from);
      p.to = Math.max(p.to, skipped.to);
      p.count += skipped.count;
    } else this.#pendingSkip = { ...skipped };
    if (this.#clock.now() - this.#lastSkipLogAt >= SKIP_LOG_MS) this.#logSkipped();
    this.#cursorMoved();
  }

  #logSkipped(): void {
    const p = this.#pendingSkip;
    if (!p) return;
    this.#pendingSkip = undefined;
    this.#lastSkipLogAt = this.#clock.now();
    this.#log.logger.warn(
      `uplink ${this.name}: buffer.max_messages ${this.#c.buffer.max_messages} reached; skipped ${p.count} message(s) at offsets ${p.from}-${p.to} (dropped.buffer now ${this.#stats.droppedBuffer})`,
    );
  }

  #fill(): void {
    this.#intake.fill(this.#w, () => {
      if (!this.#running) return;
      this.#cursorMoved();
      this.#pump();
    }, (err) => {
      this.#stats.lastError = `reading the log: ${String(err)}`;
      this.#later(1000, () => this.#pump());
    });
  }

  // ---- sending --------------------------------------------------------------------------

  #pump(): void {
    if (this.state !== "connected" || this.#pumpTimer !== undefined) return;
    const w = this.#w;
    while (w.inflight < this.#window) {
      const p = w.peek();
      if (!p) break;
      if (this.#limited) {
        const wait = this.#rate.take(p.m.payload.byteLength);
        if (wait > 0) {
          this.#holdPump(wait);
          break;
        }
      }
      this.#send(p);
      if (this.state !== "connected") return; // the send failed and cut the connection
    }
    // Read ahead while there is room, so the window never runs dry during a drain.
    if (w.queued < this.#c.max_inflight + READ_MIN) this.#fill();
  }

  #holdPump(ms: number): void {
    this.#pumpTimer = this.#clock.setTimeout(() => {
      this.#pumpTimer = undefined;
      if (this.#running) this.#pump();
    }, ms);
  }

  #send(p: Pending<ForwardRule>): void {
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
    const remote = this.#rules.remoteTopic(rule, m);
    if (remote.problem !== undefined) {
      // Sending it would make the cloud drop the connection at every re-send, and
      // strict ordering would block everything behind it: skip it, count it, say so.
      this.#stats.droppedInvalid++;
      this.#stats.lastError = `offset ${m.offset} (${JSON.stringify(m.topic)}): remote topic ${
        JSON.stringify(remote.topic)
      } is invalid (${remote.problem}); skipped`;
      // One client can produce these at any rate: a line per SKIP_LOG_MS at most, with the count.
      if (now - this.#lastInvalidLogAt >= SKIP_LOG_MS) {
        const more = this.#invalidUnlogged > 0 ? ` (and ${this.#invalidUnlogged} more since the last line)` : "";
        this.#log.logger.warn(`uplink ${this.name}: ${this.#stats.lastError}${more}`);
        this.#lastInvalidLogAt = now;
        this.#invalidUnlogged = 0;
      } else this.#invalidUnlogged++;
      this.#settle(p);
      return;
    }
    const stamp: FerryStamp = {
      edgeId: this.#d.edgeId,
      logId: this.#d.logId?.() ?? "0",
      replay: m.offset < this.#liveFrom || p.sends > 0,
      clock: this.#d.clockAt?.(m.offset) ?? "unknown",
    };
    const payload = this.#c.envelope === "json" ? envelope(m, stamp) : m.payload;
    const retain = rule.retain && m.retain;
    // Sent before on a connection that was cut: the cloud may already have it.
    const dup = p.sends > 0;
    const epoch = this.#epoch;
    this.#w.markSent(p, now);
    this.#stats.sent++;
    const done = (err?: Error) => this.#onAck(epoch, p, err);
    if (client.publishEncoded !== undefined) {
      // Ferry's own client: the bytes straight from the message (stamped-publish.ts).
      const bytes = this.#encoder.encode(remote, payload, rule.qos, retain, dup, m, now, stamp);
      client.publishEncoded(bytes, rule.qos, done);
      return;
    }
    const pub: CloudPublish = { topic: remote.topic, payload, qos: rule.qos, retain, dup };
    if (this.#c.protocol_version === 5) {
      pub.properties = this.#stamper.properties(m, now, stamp);
    }
    client.publish(pub, done);
  }

  #onAck(epoch: number, p: Pending<ForwardRule>, err: Error | undefined): void {
    if (epoch !== this.#epoch || p.state !== INFLIGHT) return; // a reply on a connection already given up
    this.#lastAckAt = this.#clock.now();
    if (err) {
      const code = (err as Error & { code?: number }).code;
      if (typeof code === "number" && SLOW_DOWN.has(code)) {
        this.#slowDown(p, code, err.message);
        return;
      }
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
      if (this.#window < this.#maxWindow()) {
        if (this.#quotaHold === 0) this.#window++; // slow start
        else if (++this.#sinceQuota >= REOPEN_EVERY) {
          this.#sinceQuota = 0;
          if (++this.#window >= this.#maxWindow()) this.#quotaHold = 0; // recovered: the next hold starts short
        }
      }
    }
    this.#settle(p);
    // Refill in batches: each refill is a socket write (and a read and a write at the cloud),
    // whose cost on a small gateway is like the per-message work; topping up the window one
    // message per acknowledgement made a send per message during a drain. Live traffic
    // keeps the window far from full, so it still goes at once.
    const w = this.#w;
    const batch = refillBatch(this.#window);
    if (w.inflight <= this.#window - batch) this.#pump();
    else if (batch > 1 && (w.queued > 0 || w.nextRead <= w.logEnd)) {
      // Draining, and this acknowledgement freed too little to send: take the next ones
      // together (ACK_HOLD_MS). Not for small windows (an eighth of them is one message),
      // where the hold would be a large part of each round trip.
      this.#client?.holdReads?.(ACK_HOLD_MS);
    }
  }

  /**
   * 0x97 Quota exceeded / 0x96 Message rate too high: the cloud is alive and asks for
   * less. Disconnecting would re-send the whole window into the same overload; instead
   * the message is queued again, the window shrinks to one message and the pump holds,
   * longer at each repeated reply, then opens the window again as acknowledgements come.
   */
  #slowDown(p: Pending<ForwardRule>, code: number, message: string): void {
    this.#stats.quotaBackoffs++;
    this.#stats.lastError = `cloud asked to slow down (0x${code.toString(16)} ${message}); holding back`;
    this.#warnOnce(this.#stats.lastError);
    this.#w.retry(p);
    this.#window = 1;
    this.#sinceQuota = 0;
    this.#quotaHold = Math.min(this.#c.backoff.max_ms, this.#quotaHold === 0 ? QUOTA_HOLD_MS : this.#quotaHold * 2);
    this.#clock.clearTimeout(this.#pumpTimer);
    this.#holdPump(this.#quotaHold);
  }

  #maxWindow(): number {
    return Math.max(1, Math.min(this.#c.max_inflight, this.#client?.receiveMaximum ?? this.#c.max_inflight));
  }

  /** The entry is done with (acknowledged, refused for good, expired or skipped). */
  #settle(p: Pending<ForwardRule>): void {
    if (this.#w.settle(p)) this.#cursorMoved();
  }

  #cursorMoved(): void {
    if (this.#w.cursor === this.#persisted && this.#stats.droppedBuffer === this.#persistedDrops) return;
    if (this.#persistTimer === undefined && this.#running) {
      // Coalesce cursor writes; a crash re-sends at most this window's messages (as DUP).
      this.#persistTimer = this.#clock.setTimeout(() => {
        this.#persistTimer = undefined;
        void this.#persistCursor();
      }, PERSIST_MS);
    }
  }

  async #persistCursor(): Promise<void> {
    const c = this.#w.cursor;
    const drops = this.#stats.droppedBuffer;
    if (drops !== this.#persistedDrops) {
      this.#persistedDrops = drops;
      try {
        await this.#log.saveCounters({ [this.#dropsKey]: drops });
      } catch (err) {
        this.#log.logger.warn(`uplink ${this.name}: saving counters failed: ${String(err)}`);
        this.#persistedDrops = -1;
      }
    }
    if (c === this.#persisted) return;
    this.#persisted = c;
    try {
      await this.#log.saveCursor(this.name, c);
    } catch (err) {
      this.#log.logger.warn(`uplink ${this.name}: saving cursor failed: ${String(err)}`);
      this.#persisted = 0;
    }
  }

  // ---- connection -----------------------------------------------------------------------

  async #connect(): Promise<void> {
    if (!this.#running || this.#paused) return;
    this.state = "connecting";
    const epoch = ++this.#epoch;
    const endpoint = this.#endpoints.next();
    this.#stats.connectAttempts++;
    let client: CloudClient;
    try {
      const options = await cloudConnectOptions(this.#c, endpoint.url, this.#d.edgeId, this.#d.readFile);
      options.maxPacketSize = this.#d.maxPacketSize;
      client = await this.#d.connect(options, {
        onMessage: (m) => {
          if (epoch !== this.#epoch) return;
          handleDownlink({
            rules: this.#c.downlink,
            edgeId: this.#d.edgeId,
            origin: this.#origin,
            local: this.#d.local,
            identity: this.#downlinkIdentity,
            now: () => this.#clock.now(),
            received: () => this.#stats.downlinkReceived++,
            refused: (reason) => {
              this.#stats.downlinkRefused++;
              this.#stats.lastError = reason;
              this.#log.logger.warn(`uplink ${this.name}: ${reason}`);
            },
          }, m);
        },
        onClose: (reason, detail) => {
          if (epoch === this.#epoch) this.#lost(reason, detail);
        },
      });
    } catch (err) {
      if (epoch !== this.#epoch) return;
      let reason = `connect: ${err instanceof Error ? err.message : String(err)}`;
      // CONNACK 0x9C/0x9D with a Server Reference: go where the cloud says next.
      const { reasonCode, serverReference } = err as CloseDetail;
      let reference: string | undefined;
      if (reasonCode !== undefined && MOVE_ON.has(reasonCode) && serverReference !== undefined) {
        reference = referenceUrl(serverReference, endpoint.url);
        reason += ` (server reference ${serverReference})`;
      }
      this.#stats.lastError = reason;
      this.#endpoints.attemptFailed(reason, this.#clock.now(), reference);
      this.#warnOnce(`${reason} (${endpoint.url})`);
      this.#retryLater(!this.#endpoints.roundFailed);
      return;
    }
    if (!this.#running || epoch !== this.#epoch) {
      client.close();
      return;
    }
    this.#client = client;
    this.#connectedAt = this.#clock.now();
    this.#liveFrom = this.#log.nextOffset();
    this.#window = Math.min(SLOW_START, this.#maxWindow());
    this.#quotaHold = 0;
    if (this.#c.downlink.length > 0) {
      try {
        const granted = await client.subscribe(
          this.#c.downlink.map((r) => ({ filter: renderFilter(r.filter, this.#d.edgeId), qos: r.qos })),
        );
        const refused = granted.filter((g) => g >= 0x80).length;
        if (refused > 0) this.#stats.lastError = `cloud refused ${refused} downlink subscription(s)`;
      } catch (err) {
        if (epoch === this.#epoch) this.#lost(`subscribe failed: ${String(err)}`);
        return;
      }
    }
    if (epoch !== this.#epoch) return;
    this.state = "connected";
    this.#endpoints.connected(this.#connectedAt);
    this.#lastLogged = undefined;
    this.#log.logger.info(
      `uplink ${this.name}: connected to ${endpoint.url}, resuming after offset ${this.#w.cursor}` +
        (this.#maxWindow() < this.#c.max_inflight ? ` (cloud Receive Maximum ${this.#maxWindow()})` : ""),
    );
    this.#pump();
  }

  /** An established connection ended (or is given up on): fail over if the cloud said so. */
  #lost(reason: string, detail?: CloseDetail, moveOn = false): void {
    let reference: string | undefined;
    if (detail?.reasonCode !== undefined && MOVE_ON.has(detail.reasonCode)) {
      moveOn = true;
      if (detail.serverReference !== undefined) {
        reference = referenceUrl(detail.serverReference, this.#endpoints.current.url);
        reason += ` (server reference ${detail.serverReference})`;
      }
    }
    if (this.#running && !this.#paused) {
      this.#endpoints.connectionLost(reason, this.#clock.now(), moveOn, reference);
    }
    this.#reconnect(reason, moveOn);
  }

  #reconnect(reason: string, soon = false): void {
    if (!this.#running || this.#paused) return;
    this.#stats.lastError = reason;
    this.#stats.reconnects++;
    this.#warnOnce(`${reason}; reconnecting`);
    this.#drop();
    if (this.#clock.now() - this.#connectedAt > STABLE_MS) this.#backoff.reset();
    this.#retryLater(soon);
  }

  /** Close the connection; whatever was in flight is sent again, in order, on the next. */
  #drop(): void {
    this.#epoch++; // late acks and messages of the old connection are ignored
    this.#client?.close();
    this.#client = undefined;
    this.#liveFrom = Number.POSITIVE_INFINITY;
    this.#w.requeue();
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
    this.#drop();
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
    this.#lost("reload requested");
  }

  /** `soon`: the next endpoint is tried after the shortest delay (failover), not the growing backoff. */
  #retryLater(soon = false): void {
    this.state = "backoff";
    this.#later(soon ? this.#c.backoff.min_ms : this.#backoff.next(), () => void this.#connect());
  }

  /** A failing cloud is retried often: the same reason is logged once, not at every attempt. */
  #warnOnce(msg: string): void {
    if (msg === this.#lastLogged) return;
    this.#lastLogged = msg;
    this.#log.logger.warn(`uplink ${this.name}: ${msg}`);
  }

  #watchdog(): void {
    const now = this.#clock.now();
    if (now - this.#lastRateAt >= 5000) {
      this.#stats.drainRate = ((this.#stats.acknowledged - this.#lastRateAcked) * 1000) / (now - this.#lastRateAt);
      this.#lastRateAt = now;
      this.#lastRateAcked = this.#stats.acknowledged;
    }
    this.#intake.oldestAfter(this.#w.cursor, this.#w.logEnd);
    if (now - this.#lastSkipLogAt >= SKIP_LOG_MS) this.#logSkipped();
    if (this.state !== "connected" || this.#w.inflight === 0) return;
    const oldestSent = this.#w.oldest((p) => (p.state === INFLIGHT ? p.sentAt : Number.POSITIVE_INFINITY));
    // "Connected", something in flight, and no acknowledgement of anything for too long:
    // the link is dead in all but name (a slow cloud that keeps acknowledging is not).
    // Another endpoint is tried next: this one accepts connections but not messages.
    if (now - Math.max(oldestSent, this.#lastAckAt) > this.#c.ack_timeout_seconds * 1000) {
      this.#lost(`no acknowledgement from the cloud for ${this.#c.ack_timeout_seconds}s`, undefined, true);
    }
  }

  // ---- status ---------------------------------------------------------------------------

  status(): LinkStatus {
    const now = this.#clock.now();
    const w = this.#w;
    // The window knows what was read ahead; the log what was not (during an outage, all of it).
    const fromLog = this.#intake.oldestAfter(w.cursor, w.logEnd);
    const oldest = Math.min(w.oldest((p) => p.m.receivedAt), fromLog ?? Number.POSITIVE_INFINITY);
    return {
      name: this.name,
      url: this.#endpoints.current.url,
      endpoints: this.#endpoints.list.map((e) => ({ ...e })),
      state: this.state,
      cursor: w.cursor,
      backlogEntries: Math.max(0, w.logEnd - w.cursor),
      oldestPendingMs: Number.isFinite(oldest) && w.logEnd > w.cursor ? Math.max(0, now - oldest) : 0,
      inflight: w.inflight,
      window: this.#window,
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
