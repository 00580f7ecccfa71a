/**
 * The last warnings and errors the broker logged, for the dashboard and
 * `/api/v1/logs`: a logger wrapper (installed by the server wiring) copies each warn
 * and error line into a bounded ring before passing it on.
 */
import type { Logger } from "../core/logger.ts";

export interface LogEntry {
  /** Increasing number, so a poller can tell new entries from seen ones. */
  seq: number;
  at: number;
  level: "warn" | "error";
  message: string;
}

export class RecentLog {
  #ring: LogEntry[] = [];
  #next = 0;
  #seq = 0;
  readonly counts = { warn: 0, error: 0 };

  constructor(readonly capacity = 200) {}

  record(level: "warn" | "error", message: string, at = Date.now()): void {
    this.counts[level]++;
    const entry = { seq: ++this.#seq, at, level, message };
    if (this.#ring.length < this.capacity) this.#ring.push(entry);
    else this.#ring[this.#next] = entry;
    this.#next = (this.#next + 1) % this.capacity;
  }

  /** Newest first. */
  entries(): LogEntry[] {
    const n = this.#ring.length;
    const out: LogEntry[] = [];
    for (let i = 1; i <= n; i++) out.push(this.#ring[(this.#next - i + n) % n]!);
    return out;
  }

  /** A logger that records warn/error lines here and forwards everything to `inner`. */
  wrap(inner: Logger): Logger {
    return {
      debug: (m) => inner.debug(m),
      info: (m) => inner.info(m),
      warn: (m) => {
        this.record("warn", m);
        inner.warn(m);
      },
      error: (m) => {
        this.record("error", m);
        inner.error(m);
      },
    };
  }
}
