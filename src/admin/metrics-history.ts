/**
 * The dashboard's last hour, kept by the server so a tab opened now shows history: every
 * `intervalMs` a point with the message rates, connections, the uplinks' backlog and the
 * age of their oldest unacknowledged message, taken from the metrics snapshot. A ring of
 * one hour of points (360 at the default 10 s), so memory stays fixed.
 */
import { sum3 } from "../core/metrics-snapshot.ts";
import type { MetricsSnapshot } from "./metrics-snapshot.ts";

export interface HistoryPoint {
  /** Unix time in milliseconds. */
  t: number;
  /** Messages received and sent per second over the interval before `t`. */
  in: number;
  out: number;
  connections: number;
  /** Log entries behind the uplinks' cursors, summed over uplinks. */
  backlog: number;
  /** Age of the oldest message not yet acknowledged by a cloud, in seconds (the worst uplink). */
  oldest_pending_seconds: number;
  /** Messages the clouds acknowledged per second, and messages the uplinks took on per second. */
  drain: number;
  incoming: number;
}

export interface DrainEstimate {
  backlog: number;
  /** Acknowledged by the clouds per second, over the window. */
  drain_per_second: number;
  /** New messages for the uplinks per second, over the window. */
  incoming_per_second: number;
  /** Seconds until the backlog is empty at these rates; null when it is not shrinking. */
  seconds_to_empty: number | null;
  window_seconds: number;
}

const HOUR_MS = 3_600_000;
/** Rates for the drain estimate are averaged over this much history. */
const DRAIN_WINDOW_MS = 60_000;

interface Totals {
  at: number;
  received: number;
  sent: number;
  acknowledged: number;
  backlog: number;
}

export class MetricsHistory {
  readonly #capacity: number;
  #points: HistoryPoint[] = [];
  #last: Totals | undefined;
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(private readonly take: () => MetricsSnapshot, readonly intervalMs = 10_000) {
    this.#capacity = Math.ceil(HOUR_MS / intervalMs);
  }

  start(): void {
    this.sample();
    this.#timer = setInterval(() => this.sample(), this.intervalMs);
    (this.#timer as { unref?: () => void }).unref?.();
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  /** Take a point now (the timer calls this; tests may too). */
  sample(now = Date.now()): void {
    const snap = this.take();
    const links = snap.uplinks;
    const totals: Totals = {
      at: now,
      received: sum3(snap.broker.messagesReceived),
      sent: sum3(snap.broker.messagesSent),
      acknowledged: links.reduce((n, l) => n + l.acknowledged, 0),
      backlog: links.reduce((n, l) => n + l.backlogEntries, 0),
    };
    const last = this.#last;
    this.#last = totals;
    if (!last) return; // rates need two samples
    const dt = Math.max(0.001, (now - last.at) / 1000);
    const drain = Math.max(0, (totals.acknowledged - last.acknowledged) / dt);
    // What the backlog grew by, plus what left it: what came in.
    const incoming = Math.max(0, (totals.backlog - last.backlog) / dt + drain);
    this.#points.push({
      t: now,
      in: round(Math.max(0, (totals.received - last.received) / dt)),
      out: round(Math.max(0, (totals.sent - last.sent) / dt)),
      connections: snap.broker.gauges.connected,
      backlog: totals.backlog,
      oldest_pending_seconds: round(links.reduce((m, l) => Math.max(m, l.oldestPendingMs), 0) / 1000),
      drain: round(drain),
      incoming: round(incoming),
    });
    if (this.#points.length > this.#capacity) this.#points.splice(0, this.#points.length - this.#capacity);
  }

  series(): { interval_seconds: number; points: HistoryPoint[]; drain: DrainEstimate } {
    return { interval_seconds: this.intervalMs / 1000, points: [...this.#points], drain: this.drainEstimate() };
  }

  /**
   * When the backlog will be gone: backlog / (drain − incoming), the rates averaged over the
   * last minute, so a link that drains 500/s while 450/s come in says ten times longer
   * than the drain rate alone would.
   */
  drainEstimate(): DrainEstimate {
    const pts = this.#points;
    const backlog = this.#last?.backlog ?? 0;
    const newest = pts.at(-1);
    if (!newest) {
      return {
        backlog,
        drain_per_second: 0,
        incoming_per_second: 0,
        seconds_to_empty: backlog === 0 ? 0 : null,
        window_seconds: 0,
      };
    }
    const recent = pts.filter((p) => p.t > newest.t - DRAIN_WINDOW_MS);
    const avg = (f: (p: HistoryPoint) => number) => recent.reduce((n, p) => n + f(p), 0) / recent.length;
    const drain = avg((p) => p.drain);
    const incoming = avg((p) => p.incoming);
    const net = drain - incoming;
    return {
      backlog,
      drain_per_second: round(drain),
      incoming_per_second: round(incoming),
      seconds_to_empty: backlog === 0 ? 0 : net > 0 ? Math.ceil(backlog / net) : null,
      window_seconds: Math.round((recent.length * this.intervalMs) / 1000),
    };
  }
}

const round = (n: number) => Math.round(n * 100) / 100;
