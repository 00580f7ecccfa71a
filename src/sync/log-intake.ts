/**
 * The uplink's reads of the durable log: batches from the read position into the send
 * window (sized to about READ_BYTES of recent messages), and a probe of the oldest
 * message still to forward after the cursor — during an outage nothing is read ahead,
 * so the window alone would report an age of 0 exactly while it climbs.
 */
import type { ForwardRule } from "../config/schema.ts";
import type { Message } from "../store/store.ts";
import type { LogPort } from "./log-port.ts";
import type { SendWindow } from "./send-window.ts";

/** Log entries read at once at most, and the bytes a read aims at (the batch shrinks for large messages). */
const READ_MAX = 1024;
export const READ_MIN = 16;
const READ_BYTES = 4 * 1024 * 1024;
/** Log entries probed past the cursor for the oldest pending message. */
const OLDEST_PROBE = 256;

export class LogIntake {
  /** A read is under way (its batch lands at the read position). */
  reading = false;
  /** Average size (payload and topic) of recent messages, for the read batch size. */
  #avgBytes = 256;
  #probe: { cursor: number; receivedAt: number | undefined } | undefined;
  #probing = false;

  constructor(
    private readonly log: LogPort,
    private readonly ruleFor: (m: Message) => ForwardRule | undefined,
    /** buffer.ttl_seconds in ms (0 = none), and what to call for each message it skips. */
    private readonly ttlMs: number,
    private readonly expired: () => void,
  ) {}

  /** Messages per read (and queued at most): about READ_BYTES, between READ_MIN and READ_MAX. */
  readLimit(): number {
    return Math.max(READ_MIN, Math.min(READ_MAX, Math.floor(READ_BYTES / this.#avgBytes)));
  }

  /** A message taken from memory rather than read (caught up): it counts towards the average size. */
  noteTaken(m: Message): void {
    this.#avgBytes += (m.payload.byteLength + m.topic.length - this.#avgBytes) / 64;
  }

  /** Read the next batch into the window, unless a read is under way or nothing is left to read. */
  fill(w: SendWindow<ForwardRule>, done: () => void, failed: (err: unknown) => void): void {
    if (this.reading || w.nextRead > w.logEnd) return;
    this.reading = true;
    const from = w.nextRead;
    // Everything up to here was committed before the read starts, so the read sees it.
    const endAtCall = w.logEnd;
    const limit = this.readLimit();
    this.log.readLog(from, limit).then(
      (batch) => {
        this.reading = false;
        this.#take(w, batch);
        // Fewer than asked: everything committed before the read has been read (gaps
        // are offsets whose commit failed, or copies logged for sessions only).
        if (batch.length < limit) w.readThrough(endAtCall);
        w.advance();
        done();
      },
      (err: unknown) => {
        this.reading = false;
        failed(err);
      },
    );
  }

  #take(w: SendWindow<ForwardRule>, batch: readonly Message[]): void {
    const now = this.log.clock.now();
    w.takeBatch(batch, (m) => {
      const rule = this.ruleFor(m);
      if (!rule) return undefined;
      if (this.ttlMs > 0 && now - m.receivedAt > this.ttlMs) {
        this.expired();
        return "expired";
      }
      return rule;
    });
    let bytes = 0;
    for (const m of batch) bytes += m.payload.byteLength + m.topic.length;
    if (batch.length > 0) this.#avgBytes = (this.#avgBytes + bytes / batch.length) / 2;
  }

  /**
   * The receive time of the first message after `cursor` that a rule matches (of the
   * first entry, if none of the probed ones matches: an upper bound on the age), as
   * last probed for this cursor; starts a probe if the cursor moved since.
   */
  oldestAfter(cursor: number, logEnd: number): number | undefined {
    if (this.#probe?.cursor === cursor) return this.#probe.receivedAt;
    if (logEnd <= cursor) {
      this.#probe = { cursor, receivedAt: undefined };
      return undefined;
    }
    if (this.#probing) return undefined;
    this.#probing = true;
    this.log.readLog(cursor + 1, OLDEST_PROBE).then(
      (batch) => {
        this.#probing = false;
        const first = batch.find((m) => this.ruleFor(m) !== undefined) ?? batch[0];
        this.#probe = { cursor, receivedAt: first?.receivedAt };
      },
      () => {
        this.#probing = false;
      },
    );
    return undefined;
  }
}
