/**
 * The uplink's send window and cursor arithmetic, with no I/O and no clock: pure
 * bookkeeping that the link drives and unit tests check directly
 * (test/unit/send-window.test.ts).
 *
 * Between the cursor and the read position sit the matching messages read from the
 * log, in offset order, each queued, in flight or done. The cursor is the offset
 * before the first entry not done, so it never passes a message the cloud has not
 * acknowledged. After a cut, entries in flight go back to queued and are sent again
 * from there. live-first: new messages can be taken ahead of the reader; they are sent
 * first, and when the reader reaches their offset they become window entries like any
 * other (or, already acknowledged, are skipped), so each is counted exactly once.
 */
import type { Message } from "../store/store.ts";

export const QUEUED = 0;
export const INFLIGHT = 1;
export const DONE = 2;
export type EntryState = typeof QUEUED | typeof INFLIGHT | typeof DONE;

/** A matching message between the cursor and the read position. */
export interface Pending<R> {
  readonly m: Message;
  readonly rule: R;
  state: EntryState;
  sentAt: number;
  /** Times it was handed to the cloud connection (more than once: a re-send, with DUP). */
  sends: number;
  /** Taken ahead of the reader (live-first) and not yet reached by it. */
  live: boolean;
}

/** Offsets the reader skipped without forwarding (buffer bound), for the log line and the counter. */
export interface SkippedRange {
  from: number;
  to: number;
  /** Matching or unread entries in [from, to] given up on. */
  count: number;
}

/** Entries of the window to drop at once from its front (amortises the copy). */
const COMPACT_AT = 1024;

export class SendWindow<R> {
  /** Every offset up to here is done with (forwarded, refused, expired or not matching). */
  cursor: number;
  /** The next log offset to read; everything below it is in the window or done with. */
  nextRead: number;
  /** The highest offset known to be in the log (committed). */
  logEnd: number;
  #entries: Pending<R>[] = [];
  /** Index of the first entry not done. */
  #head = 0;
  /** No entry before this index is queued. */
  #next = 0;
  #queued = 0;
  #inflight = 0;
  /** live-first: taken ahead of the reader; by offset until the reader reaches them. */
  #liveQueue: Pending<R>[] = [];
  #liveHead = 0;
  #live = new Map<number, Pending<R>>();
  /** live-first entries acknowledged before the reader reached them. */
  #liveDone = new Set<number>();

  constructor(cursor: number, logEnd = cursor) {
    this.cursor = cursor;
    this.nextRead = cursor + 1;
    this.logEnd = Math.max(cursor, logEnd);
  }

  get queued(): number {
    return this.#queued;
  }

  get inflight(): number {
    return this.#inflight;
  }

  /** live-first entries taken ahead of the reader and not yet reached by it. */
  get liveAhead(): number {
    return this.#live.size;
  }

  noteLogged(offset: number): void {
    if (offset > this.logEnd) this.logEnd = offset;
  }

  /** Caught up: the message at the read position, taken from memory instead of the log. */
  takeNext(m: Message, rule: R | undefined): void {
    this.nextRead = m.offset + 1;
    this.noteLogged(m.offset);
    if (rule !== undefined) this.#push(m, rule);
    this.advance();
  }

  /** live-first: a new message ahead of the reader, sent before the window's entries. */
  takeLive(m: Message, rule: R): boolean {
    if (m.offset < this.nextRead || this.#live.has(m.offset)) return false;
    const p: Pending<R> = { m, rule, state: QUEUED, sentAt: 0, sends: 0, live: true };
    this.#live.set(m.offset, p);
    this.#liveQueue.push(p);
    return true;
  }

  /**
   * A batch read from the log at the read position. `classify` gives a message's rule,
   * undefined (not forwarded), or "expired" (counted by the caller, not sent).
   */
  takeBatch(batch: readonly Message[], classify: (m: Message) => R | undefined | "expired"): void {
    for (const m of batch) {
      if (m.offset < this.nextRead) continue;
      this.nextRead = m.offset + 1;
      this.noteLogged(m.offset);
      if (this.#liveDone.delete(m.offset)) continue; // already acknowledged (live-first)
      const live = this.#live.get(m.offset);
      if (live) {
        // Taken ahead of the reader: from now on it is a window entry like any other
        // (holding the cursor while in flight; skipped in the live queue if still queued).
        this.#live.delete(m.offset);
        live.live = false;
        this.#entries.push(live);
        if (live.state === QUEUED) this.#queued++;
        continue;
      }
      const rule = classify(m);
      if (rule === undefined || rule === "expired") continue;
      this.#push(m, rule);
    }
  }

  /**
   * The reader has seen everything up to `offset` (a short read: the offsets between
   * are gaps, commits that failed or copies logged for sessions only).
   */
  readThrough(offset: number): void {
    if (this.nextRead > offset) return;
    this.nextRead = offset + 1;
    this.#forgetLiveBelow(this.nextRead);
  }

  #push(m: Message, rule: R): void {
    this.#entries.push({ m, rule, state: QUEUED, sentAt: 0, sends: 0, live: false });
    this.#queued++;
  }

  /**
   * Bound the backlog to `max` log entries behind the log's end: unread offsets below
   * the floor are skipped, and so are queued entries below it (in flight ones are
   * settled by their acknowledgement). Returns what was skipped, or undefined.
   */
  enforceBound(max: number): SkippedRange | undefined {
    if (max <= 0 || this.logEnd - this.cursor <= max) return undefined;
    const floor = this.logEnd - max + 1;
    let count = 0;
    let from = Number.POSITIVE_INFINITY;
    let to = 0;
    const w = this.#entries;
    for (let i = this.#head; i < w.length && w[i]!.m.offset < floor; i++) {
      const p = w[i]!;
      if (p.state !== QUEUED) continue;
      p.state = DONE;
      this.#queued--;
      count++;
      from = Math.min(from, p.m.offset);
      to = Math.max(to, p.m.offset);
    }
    if (this.nextRead < floor) {
      count += floor - this.nextRead;
      from = Math.min(from, this.nextRead);
      to = floor - 1;
      this.nextRead = floor;
      this.#forgetLiveBelow(floor);
    }
    this.advance();
    return count > 0 ? { from, to, count } : undefined;
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

  /** The next entry to send (live-first entries first), without taking it. */
  peek(): Pending<R> | undefined {
    const live = this.#nextLive();
    if (live) return live;
    const w = this.#entries;
    while (this.#next < w.length && w[this.#next]!.state !== QUEUED) this.#next++;
    return w[this.#next];
  }

  /** Take the entry `peek()` returned: it is in flight from now on. */
  markSent(p: Pending<R>, now: number): void {
    if (p.live) this.#liveHead++;
    else {
      this.#next++;
      this.#queued--;
    }
    p.state = INFLIGHT;
    p.sentAt = now;
    p.sends++;
    this.#inflight++;
  }

  #nextLive(): Pending<R> | undefined {
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

  /** The entry is done with (acknowledged, refused for good, or expired). Returns whether the cursor moved. */
  settle(p: Pending<R>): boolean {
    if (p.state === INFLIGHT) this.#inflight--;
    else if (p.state === QUEUED && !p.live) {
      // Settled without being sent (expired when its turn came): it was counted as queued.
      this.#queued--;
    }
    p.state = DONE;
    if (p.live) {
      p.live = false;
      this.#live.delete(p.m.offset);
      this.#liveDone.add(p.m.offset);
      return false; // the reader has not reached it: the cursor cannot move for it yet
    }
    return this.advance();
  }

  /** Everything below the first entry not done (or below the read position) is done. Returns whether the cursor moved. */
  advance(): boolean {
    const w = this.#entries;
    let head = this.#head;
    while (head < w.length && w[head]!.state === DONE) head++;
    if (head >= COMPACT_AT && head * 2 >= w.length) {
      this.#entries = w.slice(head);
      this.#next = Math.max(0, this.#next - head);
      head = 0;
    } else if (head === w.length && head > 0) {
      this.#entries = [];
      this.#next = 0;
      head = 0;
    }
    this.#head = head;
    const first = this.#entries[head];
    const cursor = (first ? first.m.offset : this.nextRead) - 1;
    if (cursor <= this.cursor) return false;
    this.cursor = cursor;
    return true;
  }

  /**
   * One entry in flight is to be sent again on the same connection (the cloud asked to
   * slow down). A window entry is queued again (it goes before any later queued one); a
   * live-first entry is handed back to the reader, which finds it in the log.
   */
  retry(p: Pending<R>): void {
    if (p.state !== INFLIGHT) return;
    this.#inflight--;
    if (p.live) {
      p.live = false;
      p.state = DONE; // this copy is dropped; the reader makes a new entry for the offset
      this.#live.delete(p.m.offset);
      return;
    }
    p.state = QUEUED;
    this.#queued++;
    this.#next = this.#head;
  }

  /** The connection is gone: whatever was in flight is sent again, in order, on the next. */
  requeue(): void {
    const w = this.#entries;
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
  }

  /** The smallest `key` over the entries not done (window and live-first); +Infinity if none. */
  oldest(key: (p: Pending<R>) => number): number {
    let oldest = Number.POSITIVE_INFINITY;
    const w = this.#entries;
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
}
