/**
 * A clock that moves only when a test says so: the kernel's timers (keep alive sweep,
 * Will delay, session and message expiry, bans, refusal grace) fire in due order as
 * `advance` passes them, so timing tests need not sleep.
 */
import type { Clock } from "../../src/core/clock.ts";

interface Timer {
  due: number;
  fn: () => void;
  /** Repeat interval for setInterval timers. */
  every: number | undefined;
  seq: number;
}

/** Let promise chains and I/O callbacks scheduled so far run (a few event-loop turns). */
export async function settle(turns = 3): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise<void>((r) => setImmediate(r));
}

export class ManualClock implements Clock {
  #now: number;
  #timers = new Map<number, Timer>();
  #seq = 0;

  constructor(start = Date.UTC(2026, 0, 1)) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    return this.#add(fn, ms, undefined);
  }

  clearTimeout(handle: unknown): void {
    if (typeof handle === "number") this.#timers.delete(handle);
  }

  setInterval(fn: () => void, ms: number): unknown {
    return this.#add(fn, ms, Math.max(1, ms));
  }

  clearInterval(handle: unknown): void {
    this.clearTimeout(handle);
  }

  /** Timers waiting to fire. */
  get pending(): number {
    return this.#timers.size;
  }

  /**
   * Move time forward by `ms`, firing every timer that falls due on the way, earliest
   * first, with the clock reading its due time; promise chains settle before time moves
   * and after each timer.
   */
  async advance(ms: number): Promise<void> {
    // What is already under way (bytes in flight, settling commits) happens now, before time moves.
    await settle();
    const end = this.#now + ms;
    for (;;) {
      let next: Timer | undefined;
      let id = 0;
      for (const [k, t] of this.#timers) {
        if (t.due > end) continue;
        if (!next || t.due < next.due || (t.due === next.due && t.seq < next.seq)) [next, id] = [t, k];
      }
      if (!next) break;
      this.#now = Math.max(this.#now, next.due);
      if (next.every === undefined) this.#timers.delete(id);
      else {
        next.due += next.every;
        next.seq = ++this.#seq;
      }
      next.fn();
      await settle();
    }
    this.#now = end;
    await settle();
  }

  #add(fn: () => void, ms: number, every: number | undefined): number {
    const id = ++this.#seq;
    this.#timers.set(id, { due: this.#now + Math.max(0, ms), fn, every, seq: id });
    return id;
  }
}
