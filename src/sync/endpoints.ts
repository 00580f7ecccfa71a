/**
 * The endpoints of one uplink (the nodes of a cloud cluster) and which one the next
 * connection attempt goes to. Pure bookkeeping: the link reports what happened and
 * asks where to go next.
 *
 * - primary-first: every new connection starts at the first URL; a failed attempt
 *   moves to the next; the link stays where it connected until that connection ends.
 * - round-robin: every new connection goes to the URL after the last one used, so a
 *   fleet of gateways spreads over the cluster.
 * Either way, a stalled connection (the ack watchdog) or a DISCONNECT 0x9C/0x9D moves
 * on to the next endpoint, and a Server Reference sent with 0x9C/0x9D is tried first.
 */
import type { UplinkConfig } from "../config/schema.ts";

/** Server References remembered in status beyond the configured endpoints. */
const MAX_REFERENCES = 4;

/** The uplink's endpoints: `urls`, or the single `url`. */
export function uplinkUrls(c: UplinkConfig): string[] {
  const urls = c.urls ?? [];
  if (c.url !== undefined && !urls.includes(c.url)) return [c.url, ...urls];
  return urls;
}

export type EndpointPolicy = "primary-first" | "round-robin";

export interface EndpointStatus {
  url: string;
  /** The last reason a connection to it failed or ended; undefined if none yet. */
  lastError: string | undefined;
  lastErrorAt: number | undefined;
  /** When a connection to it last came up. */
  lastConnectedAt: number | undefined;
  /** Connection attempts made to it. */
  attempts: number;
}

export class Endpoints {
  readonly list: EndpointStatus[];
  #index = 0;
  /** A Server Reference to try once before the list. */
  #redirect: string | undefined;
  #current: EndpointStatus;
  /** Attempts since the last connection came up, for telling when a whole round failed. */
  #failedInRow = 0;
  /** The configured endpoints are list[0..#n); Server References tried are appended after them. */
  readonly #n: number;

  constructor(urls: readonly string[], private readonly policy: EndpointPolicy) {
    if (urls.length === 0) throw new Error("an uplink needs at least one url");
    this.list = urls.map((url) => ({
      url,
      lastError: undefined,
      lastErrorAt: undefined,
      lastConnectedAt: undefined,
      attempts: 0,
    }));
    this.#current = this.list[0]!;
    this.#n = this.list.length;
  }

  /** The endpoint the link is connected to, or last tried. */
  get current(): EndpointStatus {
    return this.#current;
  }

  /** Where the next attempt goes (and count the attempt). */
  next(): EndpointStatus {
    let e: EndpointStatus;
    if (this.#redirect !== undefined) {
      const url = this.#redirect;
      this.#redirect = undefined;
      e = this.list.find((x) => x.url === url) ?? this.#adopt(url);
    } else e = this.list[this.#index]!;
    e.attempts++;
    this.#current = e;
    return e;
  }

  /** A Server Reference is not in the configured list: it is tried, and shown in status, but never persisted. */
  #adopt(url: string): EndpointStatus {
    const e: EndpointStatus = {
      url,
      lastError: undefined,
      lastErrorAt: undefined,
      lastConnectedAt: undefined,
      attempts: 0,
    };
    // A cloud naming a new server at each redirect must not grow this without bound.
    if (this.list.length - this.#n >= MAX_REFERENCES) this.list.splice(this.#n, 1);
    this.list.push(e);
    return e;
  }

  /** Whether the attempts since the last success went through every endpoint once (then back off longer). */
  get roundFailed(): boolean {
    return this.#failedInRow > 0 && this.#failedInRow % this.#n === 0;
  }

  connected(now: number): void {
    this.#current.lastConnectedAt = now;
    this.#failedInRow = 0;
  }

  /** A connection attempt failed: the next goes to the next endpoint (or to `reference`, if the cloud named one). */
  attemptFailed(reason: string, now: number, reference?: string): void {
    this.#note(reason, now);
    if (reference !== undefined) this.#redirect = reference;
    this.#failedInRow++;
    this.#advance();
  }

  /**
   * An established connection ended. `moveOn`: the endpoint is not to be used now
   * (stalled, or the cloud sent it elsewhere); `reference` is where the cloud said to go.
   */
  connectionLost(reason: string, now: number, moveOn: boolean, reference?: string): void {
    this.#note(reason, now);
    if (reference !== undefined) this.#redirect = reference;
    if (moveOn || this.policy === "round-robin") this.#advance();
    else if (this.list.indexOf(this.#current) < this.#n) this.#index = 0;
  }

  #note(reason: string, now: number): void {
    this.#current.lastError = reason;
    this.#current.lastErrorAt = now;
  }

  #advance(): void {
    const at = this.list.indexOf(this.#current);
    // A Server Reference (not configured): the list resumes where it was.
    if (at < this.#n) this.#index = (at + 1) % this.#n;
  }
}

/**
 * A Server Reference as a URL: MQTT 5 leaves its form to the server [MQTT-4.11]; a full
 * URL is taken as it is, a bare `host[:port]` keeps the scheme (and port) of `current`.
 * Several references separated by spaces: the first is used.
 */
export function referenceUrl(reference: string, current: string): string | undefined {
  const first = reference.trim().split(/\s+/)[0];
  if (!first) return undefined;
  if (/^(mqtt|mqtts|ws|wss):\/\/[^\s@]+$/.test(first)) return first;
  if (/:\/\//.test(first) || first.includes("@")) return undefined;
  const m = /^([a-z]+):\/\/([^/]+)(.*)$/.exec(current);
  if (!m) return undefined;
  const [, scheme, hostPort, rest] = m;
  const port = /:(\d+)$/.exec(hostPort!)?.[1];
  const withPort = /:\d+$/.test(first) || port === undefined ? first : `${first}:${port}`;
  return `${scheme}://${withPort}${rest}`;
}
