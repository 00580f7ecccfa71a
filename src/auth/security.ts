import { RC } from "../mqtt/reason-codes.ts";
import { Authenticator, type AuthenticatorOptions, type AuthResult, type Credentials } from "./authenticator.ts";
import { BanList, ipOf, isLoopback, type SecurityLimits, TokenBucket } from "./limits.ts";

/** How long a refused connection may take to send its CONNECT (to read a CONNACK reason) before it is closed. */
const REFUSAL_GRACE_MS = 500;
/** Refused connections per address waiting for their CONNECT; beyond this they are closed at once. */
const MAX_REFUSING_PER_IP = 8;
/** Addresses tracked for rates and counts; beyond it idle ones are forgotten first. */
const MAX_TRACKED_IPS = 100_000;

/** The client a decision is about; the kernel's connection is one (src/core/auth-ports.ts). */
export interface SecuritySubject {
  readonly clientId: string;
  readonly username: string | undefined;
  readonly remoteAddress: string;
  readonly remoteIp: string | undefined;
}

/** The counters `Security` keeps up to date (the broker's metrics are one). */
export interface SecurityCounters {
  connectionsRefused: number;
  authBadCredentials: number;
  authNotAuthorized: number;
  authBusy: number;
  aclDeniedPublish: number;
  aclDeniedSubscribe: number;
  aclDeniedDelivery: number;
  refusedConnectionRate: number;
  refusedConnectionsPerIp: number;
  refusedBanned: number;
  bansFlapping: number;
  bansAuthFailures: number;
  disconnectedMessageRate: number;
}

interface PerIp {
  open: number;
  refusing: number;
  bucket: TokenBucket | undefined;
}

/**
 * Everything the kernel asks before letting a client in or letting it go on: per-address
 * connection limits (at accept), bans and authentication (at CONNECT), the publish rate.
 * The ACL lives in `Acl`; this is the rest of issue 8's "abuse resistance". Every refusal
 * is counted. It implements the kernel's auth port: each method answers with a verdict
 * and the kernel acts on it; nothing here holds or drives a connection.
 */
export class Security {
  readonly authenticator: Authenticator;
  #limits: SecurityLimits;
  #perIp = new Map<string, PerIp>();
  #ipOf = new WeakMap<SecuritySubject, string>();
  #exempt = new WeakSet<SecuritySubject>();
  /** Connections refused at accept and waiting for their CONNECT (counted in `PerIp.refusing`). */
  #refusing = new WeakSet<SecuritySubject>();
  #publishBuckets = new WeakMap<SecuritySubject, TokenBucket>();
  #flapping: BanList;
  #authFailures: BanList;
  #admitted = 0;

  constructor(
    auth: AuthenticatorOptions,
    limits: SecurityLimits,
    private readonly clock: { now(): number },
    private readonly logger: { warn(msg: string): void },
    private readonly metrics: SecurityCounters,
  ) {
    this.authenticator = new Authenticator(auth);
    this.#limits = limits;
    this.#flapping = new BanList(limits.flapping);
    this.#authFailures = new BanList(limits.authFailures);
  }

  get limits(): SecurityLimits {
    return this.#limits;
  }

  // ---- accept -------------------------------------------------------------------

  /**
   * A new connection: count it against its address. Over a limit, the verdict is a refusal:
   * a CONNECT arriving within REFUSAL_GRACE_MS gets CONNACK with the reason (0x9F
   * connection rate, 0x97 too many connections), anything else just a close.
   */
  admit(client: SecuritySubject): { code: number; graceMs: number } | undefined {
    const ip = ipOf(client.remoteIp, client.remoteAddress);
    if (this.#limits.exemptLoopback && isLoopback(ip)) {
      this.#exempt.add(client);
      return undefined;
    }
    this.#ipOf.set(client, ip);
    if (++this.#admitted % 1024 === 0) this.#sweep();
    let entry = this.#perIp.get(ip);
    if (!entry) {
      entry = { open: 0, refusing: 0, bucket: undefined };
      this.#perIp.set(ip, entry);
      this.#trim();
    }
    entry.open++;
    const now = this.clock.now();
    const { connectionRatePerIp, maxConnectionsPerIp } = this.#limits;
    let refusal: number | undefined;
    if (connectionRatePerIp > 0) {
      entry.bucket ??= new TokenBucket(connectionRatePerIp, now);
      if (!entry.bucket.take(now)) {
        refusal = RC.CONNECTION_RATE_EXCEEDED;
        this.metrics.refusedConnectionRate++;
      }
    }
    if (refusal === undefined && maxConnectionsPerIp > 0 && entry.open > maxConnectionsPerIp) {
      refusal = RC.QUOTA_EXCEEDED;
      this.metrics.refusedConnectionsPerIp++;
    }
    if (refusal === undefined) return undefined;
    this.metrics.connectionsRefused++;
    // A flood: no CONNACK for this one.
    if (entry.refusing >= MAX_REFUSING_PER_IP) return { code: refusal, graceMs: 0 };
    entry.refusing++;
    this.#refusing.add(client);
    return { code: refusal, graceMs: REFUSAL_GRACE_MS };
  }

  /** The connection is gone (called once per admitted connection). */
  release(client: SecuritySubject): void {
    const ip = this.#ipOf.get(client);
    if (ip === undefined) return;
    this.#ipOf.delete(client);
    const entry = this.#perIp.get(ip);
    if (!entry) return;
    entry.open = Math.max(0, entry.open - 1);
    if (this.#refusing.delete(client)) entry.refusing = Math.max(0, entry.refusing - 1);
    if (entry.open === 0 && (!entry.bucket || entry.bucket.isFull(this.clock.now()))) this.#perIp.delete(ip);
  }

  // ---- CONNECT ------------------------------------------------------------------

  /**
   * The authentication step of the CONNECT pipeline: bans first (cheap), then the
   * credentials (slow, off the event loop), then flapping. Resolves to the username the
   * client acts as (a certificate's CN may replace the one it sent), or a refusal code.
   */
  async authenticate(client: SecuritySubject, credentials: Credentials): Promise<AuthResult> {
    const exempt = this.#exempt.has(client);
    const ip = this.#ipOf.get(client);
    const now = this.clock.now();
    if (!exempt) {
      if (
        this.#flapping.bannedUntil(client.clientId, now) !== undefined ||
        (ip !== undefined && this.#authFailures.bannedUntil(ip, now) !== undefined)
      ) {
        this.metrics.refusedBanned++;
        return { ok: false, code: RC.BANNED, reason: "banned" };
      }
    }
    const result = await this.authenticator.authenticate(credentials);
    if (!result.ok) {
      if (result.code === RC.BAD_USERNAME_OR_PASSWORD) this.metrics.authBadCredentials++;
      else if (result.code === RC.SERVER_BUSY) this.metrics.authBusy++;
      else this.metrics.authNotAuthorized++;
      if (
        !exempt && ip !== undefined && result.code !== RC.SERVER_BUSY && this.#authFailures.record(ip, this.clock.now())
      ) {
        this.metrics.bansAuthFailures++;
        this.logger.warn(
          `banning ${ip} for ${this.#limits.authFailures.banSeconds} s: more than ${this.#limits.authFailures.max} failed logins in ${this.#limits.authFailures.windowSeconds} s`,
        );
      }
      return result;
    }
    if (!exempt && this.#flapping.record(client.clientId, this.clock.now())) {
      this.metrics.bansFlapping++;
      this.metrics.refusedBanned++;
      this.logger.warn(
        `banning client id ${client.clientId} for ${this.#limits.flapping.banSeconds} s: more than ${this.#limits.flapping.max} connects in ${this.#limits.flapping.windowSeconds} s`,
      );
      return { ok: false, code: RC.BANNED, reason: "flapping" };
    }
    return result;
  }

  /** The session of `client`'s id belongs to `owner`: may `client` take it over? (auth.bind_client_ids) */
  claim(client: SecuritySubject, owner: string | null | undefined): { code: number; reason: string } | undefined {
    const refused = this.authenticator.claim(client.username, owner);
    if (!refused || refused.ok) return undefined;
    this.metrics.authNotAuthorized++;
    return { code: refused.code, reason: refused.reason };
  }

  // ---- while connected ------------------------------------------------------------

  /** Count one PUBLISH from `client`; false when it exceeds `limits.maxPublishRate`. */
  takePublish(client: SecuritySubject): boolean {
    const rate = this.#limits.maxPublishRate;
    if (rate <= 0 || this.#exempt.has(client)) return true;
    const now = this.clock.now();
    let bucket = this.#publishBuckets.get(client);
    if (!bucket) {
      bucket = new TokenBucket(rate, now);
      this.#publishBuckets.set(client, bucket);
    }
    if (bucket.take(now)) return true;
    this.metrics.disconnectedMessageRate++;
    return false;
  }

  /** Values for $SYS/broker/security/…, so refusals can be watched without the admin API. */

  #sweep(): void {
    const now = this.clock.now();
    for (const [ip, e] of this.#perIp) if (e.open === 0 && (!e.bucket || e.bucket.isFull(now))) this.#perIp.delete(ip);
  }

  #trim(): void {
    if (this.#perIp.size <= MAX_TRACKED_IPS) return;
    this.#sweep();
    // Still too many: forget the oldest idle addresses (their rate history is lost, nothing else).
    for (const [ip, e] of this.#perIp) {
      if (this.#perIp.size <= MAX_TRACKED_IPS) break;
      if (e.open === 0) this.#perIp.delete(ip);
    }
  }
}
