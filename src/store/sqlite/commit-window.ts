/**
 * When a group commit starts (commit durability). Every acknowledgement still waits for the
 * fsync of the transaction that holds its message; what the window changes is how many
 * messages share that transaction.
 *
 * Why (issue 14): a commit rewrites at least the WAL page it appends to, and with SQLite's
 * 4,096-byte pages each 4,120-byte WAL frame straddles two pages of the file, so a commit
 * costs the flash about 8 KiB however little it holds. At low rates every message was its
 * own commit: 8 KiB written per 64-byte message, and an fsync, a transaction and two thread
 * hand-overs of CPU each.
 *
 * The window runs from the start of each commit: lists that arrive while it runs wait for
 * its end, then go together. So a commit starts at most once per window, and messages that
 * arrive further apart than the window wait for nothing (at 1 or 10 msg/s nothing could be
 * shared anyway). It ends early once EARLY_COMMIT_LISTS lists wait, since by then a commit's
 * fixed cost is spread thin and waiting longer would only hold back busy clients (a publisher
 * keeping 64 messages in flight would otherwise be paced by the window).
 *
 * Waiting is only worth it while it gathers company, and while company is still coming:
 * - A lone client that waits for each acknowledgement before sending its next message would
 *   get one message per window and gain nothing, only lose speed. So the window is used only
 *   while the commits that waited for it gathered at least WORTH lists on average; otherwise
 *   commits start on the next turn, and once a second one window probes whether waiting
 *   pays again.
 * - A client that keeps a few messages in flight and sends the next as soon as an ack comes
 *   (Paho keeps 10) sends its burst right after each commit and then nothing until the next:
 *   held for the whole window, it would be paced at 10 messages per window. So a window also
 *   ends once nothing has come for IDLE_GAPS times the mean gap between the lists it gathered
 *   (at least MIN_IDLE_MS): a burst that has stopped ends it, while steady traffic (200 devices
 *   at 1 msg/s each, one device at 200 msg/s) keeps arriving and fills it. Independent devices
 *   arrive about as a Poisson stream, and there a quiet of k mean gaps comes by chance: with the
 *   mean taken from the window's first gaps, 1/(1+k) at the second arrival alone, about e^-k per
 *   gap later on. At k = 4 that ended about half the windows early at 200 devices × 1 msg/s (17
 *   commits a second where 10 were due; 958 B written per message at steady state, against
 *   837 at k = 10); at 10 about one in seven (the unit test simulates it: 53 % at 4, 14 % at 10, 7 % at 20). k is not larger
 *   because a few clients that each wait for their ack answer the same commit some hundreds
 *   of µs apart, and each of them waits out k of those gaps every cycle: 2 and 4 such clients
 *   lost 18 and 12 % of their rate at k = 20, none at 10 (BENCHMARKS.md, the idle rule's k).
 *
 * Bookkeeping lists (a delivery's "sent" mark, a completed delivery's deletion: WriteBehind's
 * `later`) wait for the window like any list but are not company: nothing waits for them,
 * and WriteBehind hands them over in the same turn as the commit they ride on. Counted, they
 * made a persistent subscriber's traffic look like pairs of lists 0 ms apart: the idle rule
 * ended each window 1 ms after it began, the window fell out of use, and a device at 200
 * msg/s with one persistent subscriber got a commit (and 17 KB of writes) per message.
 */

import type { Mutation } from "../store.ts";

/**
 * 32, not 16, since the window became 100 ms: at 200 msg/s, 16 lists ended each window after
 * 80 ms with 16 messages (591-601 B written per message); 32 lets the window run its 100 ms and
 * gather 20 (505-509 B), and at 10,000 msg/s it wrote a fifth less with the same ack p99
 * (BENCHMARKS.md, the commit window's default).
 */
export const EARLY_COMMIT_LISTS = 32;
/** Lists per commit that waited for the window, on average, for the window to stay in use. */
const WORTH = 2;
/** How often an unused window is tried again, ms. */
const PROBE_MS = 1000;
/** A window ends once no list came for this many mean gaps between the lists it gathered… */
const IDLE_GAPS = 10;
/** …but not before this many ms of quiet. */
const MIN_IDLE_MS = 1;

export class CommitWindow {
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Checks whether the lists gathered have stopped coming (see IDLE_GAPS). */
  #idleTimer: ReturnType<typeof setTimeout> | undefined;
  /** Lists (bookkeeping not counted) that arrived while this window ran: how many, the first's and the last's time. */
  #arrived = 0;
  #firstAt = 0;
  #lastAt = 0;
  /** Lists (bookkeeping not counted) waiting now that arrived while the window ran; 0: none. */
  #held = 0;
  /** Lists per commit that waited, smoothed (each new count weighs a quarter). */
  #gathered = WORTH;
  #probeAt = 0;

  /** `onEnd` runs when a window ends (not when it is cut short by `sent`). */
  constructor(private readonly ms: number, private readonly onEnd: () => void) {}

  /**
   * A list arrived: whether it (and those before it) must wait for the window's end, which
   * calls `onEnd`. A `bookkeeping` list (see isBookkeeping) waits if the window runs but
   * counts for nothing: not towards EARLY_COMMIT_LISTS, not as an arrival for the idle rule,
   * not as company.
   */
  admit(bookkeeping = false): boolean {
    if (bookkeeping) return this.#timer !== undefined;
    if (!this.holds()) return false;
    this.#held++;
    const now = performance.now();
    if (this.#arrived++ === 0) this.#firstAt = now;
    this.#lastAt = now;
    if (this.#arrived === 2) this.#idleTimer = setTimeout(this.#idleCheck, this.#idleLimit());
    return this.holds();
  }

  /** Whether the lists waiting must still wait for the window's end. */
  holds(): boolean {
    return this.#timer !== undefined && this.#arrived < EARLY_COMMIT_LISTS;
  }

  /** A commit starts: the next window starts with it, if waiting pays. */
  sent(): void {
    const now = performance.now();
    if (this.#held > 0) {
      const worth = this.#gathered >= WORTH;
      this.#gathered = 0.75 * this.#gathered + 0.25 * this.#held;
      this.#held = 0;
      if (worth && this.#gathered < WORTH) this.#probeAt = now + PROBE_MS;
    }
    this.stop();
    if (this.#gathered < WORTH) {
      if (now < this.#probeAt) return;
      this.#probeAt = now + PROBE_MS;
    }
    this.#timer = setTimeout(this.#ended, this.ms);
  }

  /** No window runs after this (until the next `sent`). */
  stop(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    if (this.#idleTimer !== undefined) clearTimeout(this.#idleTimer);
    this.#timer = undefined;
    this.#idleTimer = undefined;
    this.#arrived = 0;
  }

  #idleLimit(): number {
    return Math.max(MIN_IDLE_MS, (IDLE_GAPS * (this.#lastAt - this.#firstAt)) / (this.#arrived - 1));
  }

  readonly #idleCheck = (): void => {
    this.#idleTimer = undefined;
    const left = this.#idleLimit() - (performance.now() - this.#lastAt);
    // Re-armed rather than moved at every arrival: one timer per window, not per list.
    if (left > 0) this.#idleTimer = setTimeout(this.#idleCheck, left);
    else this.#ended();
  };

  readonly #ended = (): void => {
    this.stop();
    this.onEnd();
  };
}

/**
 * Whether a list is bookkeeping that nothing waits for: only "sent" marks and deletions of
 * completed deliveries (what WriteBehind's `later` carries).
 */
export function isBookkeeping(mutations: readonly Mutation[]): boolean {
  if (mutations.length === 0) return false;
  for (const m of mutations) if (m.op !== "delivery-sent" && m.op !== "delivery-delete-offset") return false;
  return true;
}
