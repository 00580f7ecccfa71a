/**
 * Abuse limits as the kernel sees them (config: `limits.*`); 0 turns a limit off.
 * Enforced by `Security` (./security.ts).
 */
export interface SecurityLimits {
  /** Loopback clients (127.0.0.0/8, ::1) skip the per-address limits, bans and rates. */
  exemptLoopback: boolean;
  /** New connections per second from one IP address; the excess is refused (0x9F). */
  connectionRatePerIp: number;
  /** Open connections from one IP address; more are refused (0x97). */
  maxConnectionsPerIp: number;
  /** PUBLISH packets per second from one client; more → DISCONNECT 0x96 (v5) or a close. */
  maxPublishRate: number;
  /** A client id that connects more than `maxConnects` times in `windowSeconds` is banned. */
  flapping: BanPolicy;
  /** An address with more than `max` failed logins in `windowSeconds` is banned. */
  authFailures: BanPolicy;
}

export interface BanPolicy {
  /** Events allowed in the window; one more bans. 0 disables. */
  max: number;
  windowSeconds: number;
  banSeconds: number;
}

/**
 * A token bucket holding one second of allowance: short bursts up to `perSecond` pass,
 * and the average holds. Time is passed in, so tests need no sleeping.
 */
export class TokenBucket {
  #tokens: number;
  #last: number;

  constructor(private readonly perSecond: number, now: number) {
    this.#tokens = perSecond;
    this.#last = now;
  }

  /** Take one token; false when the bucket is empty. */
  take(now: number): boolean {
    this.#tokens = Math.min(this.perSecond, this.#tokens + ((now - this.#last) / 1000) * this.perSecond);
    this.#last = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  /** Whether the bucket is full again at `now`, so its entry can be forgotten. */
  isFull(now: number): boolean {
    return this.#tokens + ((now - this.#last) / 1000) * this.perSecond >= this.perSecond;
  }
}

/**
 * Counts events per key in a sliding window and bans a key that exceeds the policy:
 * flapping client ids, addresses guessing passwords. Memory is bounded: keys with
 * nothing recent are swept, and beyond `maxKeys` the oldest are forgotten.
 */
export class BanList {
  #events = new Map<string, number[]>();
  #bans = new Map<string, number>();
  #lastSweep = 0;

  constructor(private readonly policy: BanPolicy, private readonly maxKeys = 100_000) {}

  get enabled(): boolean {
    return this.policy.max > 0;
  }

  /** When `key`'s ban ends, or undefined if it is not banned at `now`. */
  bannedUntil(key: string, now: number): number | undefined {
    const until = this.#bans.get(key);
    if (until === undefined) return undefined;
    if (until > now) return until;
    this.#bans.delete(key);
    return undefined;
  }

  /** Record one event for `key`; returns true when this event starts a ban. */
  record(key: string, now: number): boolean {
    if (!this.enabled) return false;
    this.#sweep(now);
    const since = now - this.policy.windowSeconds * 1000;
    let times = this.#events.get(key);
    if (times) {
      // Kept in time order: drop what left the window.
      let drop = 0;
      while (drop < times.length && times[drop]! <= since) drop++;
      if (drop > 0) times.splice(0, drop);
      // Refreshed in Map order so that overflow forgets the least recently seen key.
      this.#events.delete(key);
    } else times = [];
    times.push(now);
    if (times.length > this.policy.max) {
      this.#bans.delete(key);
      this.#bans.set(key, now + this.policy.banSeconds * 1000);
      this.#events.delete(key);
      this.#trim(this.#bans);
      return true;
    }
    this.#events.set(key, times);
    this.#trim(this.#events);
    return false;
  }

  /** Forget `key`'s events (a successful login clears its failures). */
  clear(key: string): void {
    this.#events.delete(key);
  }

  get size(): { keys: number; bans: number } {
    return { keys: this.#events.size, bans: this.#bans.size };
  }

  #trim(map: Map<string, unknown>): void {
    while (map.size > this.maxKeys) map.delete(map.keys().next().value!);
  }

  #sweep(now: number): void {
    if (now - this.#lastSweep < this.policy.windowSeconds * 1000) return;
    this.#lastSweep = now;
    const since = now - this.policy.windowSeconds * 1000;
    for (const [k, times] of this.#events) if (times.at(-1)! <= since) this.#events.delete(k);
    for (const [k, until] of this.#bans) if (until <= now) this.#bans.delete(k);
  }
}

/** The address part of "1.2.3.4:5678", "[::1]:5678" or "::1:5678" (no port → as is). */
export function ipOf(remoteIp: string | undefined, remoteAddress: string): string {
  if (remoteIp) return remoteIp;
  const bracket = /^\[([^\]]+)\](?::\d+)?$/.exec(remoteAddress);
  if (bracket) return bracket[1]!;
  const colon = remoteAddress.lastIndexOf(":");
  // An IPv4 address with a port has one colon; a bare IPv6 address cannot be told from
  // one with a port, so adapters set `remoteIp` (Deno's "host:port" always has a port).
  return colon > 0 ? remoteAddress.slice(0, colon) : remoteAddress;
}

/** 127.0.0.0/8, ::1, and IPv4-mapped loopback. */
export function isLoopback(ip: string): boolean {
  const v4 = ip.startsWith("::ffff:") ? ip.slice(7) : ip;
  return v4.startsWith("127.") || ip === "::1" || ip === "0:0:0:0:0:0:0:1" || ip === "localhost";
}
