import type { Clock } from "./clock.ts";
import type { Logger } from "./logger.ts";
import type { MemoryBudget } from "./memory-budget.ts";

/** Bytes read from clients between two looks at the resident size (see ResidentWatch.onRead). */
export const SAMPLE_EVERY_BYTES = 1024 * 1024;
/** The shortest time between two collections the watch asks for, so that they cannot take the event loop over. */
export const MIN_COLLECTION_GAP_MS = 100;

/**
 * How far the resident size may rise above what it was after the last collection before
 * the watch asks for the next one: an eighth of the memory budget, between 8 and 64 MiB
 * (16 MiB at the default budget of 128 MiB).
 */
export function garbageHeadroom(limit: number): number {
  return Math.min(64 * MiB, Math.max(8 * MiB, Math.floor(limit / 8)));
}

/**
 * The process as the OS sees it, against the memory budget (which counts what Ferry holds
 * for clients, not the runtime, its code, the storage thread or garbage not collected yet).
 *
 * 1. **Garbage.** The runtime's collector sizes its next full collection in proportion to
 *    the heap that survived the last one (about twice it), and what a fast flood turns over
 *    (payload buffers, socket reads) mostly outlives the young-generation collections, since
 *    a message lives until its commit. So a flood of 4 KiB QoS 1 messages stored and then
 *    dropped for a stalled subscriber made RSS swing between 195 and 375 MB while the budget
 *    counted 77 MiB of 128 (bench-memory's row *budget*): on a 512 MB gateway, most of what
 *    the OOM killer sees is garbage. With `collectGarbage` (the runtime adapter's), the watch asks for a
 *    full collection whenever RSS has grown by `garbageHeadroom` over its lowest since the
 *    last one, looking every SAMPLE_EVERY_BYTES read from clients and at the broker's
 *    once-a-second sweep, and at most every MIN_COLLECTION_GAP_MS. At low rates RSS never
 *    grows that much and nothing happens; the lowest RSS after a collection follows what is
 *    really held, so memory the budget holds on purpose (a full queue) costs one collection
 *    per headroom it grows by, not one per look. Off when the budget is not enforced
 *    (`limits.max_memory` 0) or the runtime cannot collect on request.
 * 2. **A sanity check.** A resident size that grew by more than twice the budget since start
 *    means something outside the budget grows: logged once (until it falls back).
 */
export class ResidentWatch {
  /** RSS when the broker started. */
  #start: number | undefined;
  #warned = false;
  /** The lowest RSS seen since the last collection (or start): what is held, as near as RSS tells. */
  #floor = Number.POSITIVE_INFINITY;
  #collectedAt = Number.NEGATIVE_INFINITY;
  /** The client bytes received (BrokerMetrics.bytesReceived) at which `onRead` looks next. */
  #nextLookAt = SAMPLE_EVERY_BYTES;
  /** Collections asked for since start. */
  collections = 0;
  readonly headroom: number;

  constructor(
    private readonly residentBytes: () => number | undefined,
    private readonly budget: MemoryBudget,
    private readonly logger: Logger,
    private readonly clock: Clock,
    /** A full, synchronous collection of the runtime's heap; undefined where the runtime offers none. */
    private readonly collectGarbage?: () => void,
  ) {
    this.headroom = garbageHeadroom(budget.limit);
  }

  start(): void {
    this.#start = this.residentBytes();
    if (this.#start !== undefined) this.#floor = this.#start;
  }

  /** Clients' bytes were read; `received` is the total since start. Cheap: one comparison per read. */
  onRead(received: number): void {
    if (received < this.#nextLookAt) return;
    this.#nextLookAt = received + SAMPLE_EVERY_BYTES;
    const rss = this.residentBytes();
    if (rss !== undefined) this.#collectIfGrown(rss);
  }

  /** The broker's sweep, once a second. */
  check(): void {
    const limit = this.budget.limit;
    const start = this.#start;
    if (limit === 0 || start === undefined) return;
    let rss = this.residentBytes();
    if (rss === undefined) return;
    if (this.#collectIfGrown(rss)) rss = this.residentBytes() ?? rss;
    const over = rss - start > 2 * limit;
    if (over && !this.#warned) {
      this.logger.warn(
        `resident memory ${mib(rss)} MiB grew by more than twice limits.max_memory (${mib(limit)} MiB) since start ` +
          `(${mib(start)} MiB), while the budget counts ${
            mib(this.budget.used)
          } MiB: memory outside the budget is growing`,
      );
    }
    this.#warned = over;
  }

  /** Collects when RSS grew by the headroom over its floor; true if it did. */
  #collectIfGrown(rss: number): boolean {
    if (rss < this.#floor) {
      this.#floor = rss;
      return false;
    }
    const collect = this.collectGarbage;
    if (collect === undefined || this.budget.limit === 0 || rss - this.#floor <= this.headroom) return false;
    const now = this.clock.now();
    if (now - this.#collectedAt < MIN_COLLECTION_GAP_MS) return false;
    this.#collectedAt = now;
    this.collections++;
    collect();
    // What survived, as the OS sees it now; later looks lower it as the allocator gives pages back.
    this.#floor = this.residentBytes() ?? rss;
    return true;
  }
}

const MiB = 1024 * 1024;
const mib = (bytes: number) => (bytes / MiB).toFixed(1);
