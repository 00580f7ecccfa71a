import type { Statements } from "./statements.ts";

/**
 * Garbage collection of the log. A message stays while any delivery refers to it;
 * beyond that the log is history, trimmed oldest first by age (messageTtlMs) and by
 * size (maxBytes). Age trimming also keeps every message above the lowest log-reader
 * cursor (the uplink has not read it yet); the size quota does not, because a full
 * disk must not stop the broker. Runs inside the store's group transaction, so a trim
 * costs no extra sync and commits or rolls back together with the batch that
 * triggered it.
 */
export class LogTrimmer {
  constructor(
    private readonly s: Statements,
    private readonly pageSize: number,
  ) {}

  /** Bytes in pages that hold data: what the quota counts. Freed pages are reused. */
  usedBytes(): number {
    return (this.#pragma(this.s.pageCount) - this.#pragma(this.s.freelistCount)) * this.pageSize;
  }

  /** Size of the main database file (what it will be once the WAL is checkpointed). */
  fileBytes(): number {
    return this.#pragma(this.s.pageCount) * this.pageSize;
  }

  /**
   * Drops the oldest unreferenced messages until the used size is at most `target`
   * or nothing droppable is left; cursors do not protect messages from this.
   * `highestOffset` is recorded first, so the offset counter survives even if the
   * newest message goes. Returns how many were dropped.
   */
  trimToSize(target: number, highestOffset: number): number {
    let dropped = 0;
    let after = 0;
    // Row sizes only estimate page usage (pages are freed only once emptied, and
    // their slack is not in the estimate), so each round drops about half the
    // measured excess and measures again: it converges in a few rounds without
    // overshooting by much. The bound keeps one commit from stalling on a
    // pathological layout.
    for (let round = 0; round < 64; round++) {
      const excess = this.usedBytes() - target;
      if (excess <= 0) break;
      const candidates = this.s.unreferenced.all(after, 1024);
      if (candidates.length === 0) break;
      if (dropped === 0) this.#recordHighest(highestOffset);
      let freed = 0;
      for (const row of candidates) {
        const offset = Number(row.offset);
        this.s.deleteMessage.run(offset);
        dropped++;
        after = offset;
        // ~40 bytes of cell header, rowid and column types per row.
        freed += Number(row.size) + 40;
        if (freed >= excess / 2) break;
      }
    }
    return dropped;
  }

  /**
   * Drops unreferenced messages received before `cutoff` and at or below the lowest
   * cursor, at most `budget` of them. Stops at the first young message: offsets
   * follow arrival, so the rest are younger still (a clock stepped backwards only
   * delays trimming).
   */
  trimExpired(cutoff: number, budget: number, highestOffset: number): { dropped: number; more: boolean } {
    const minCursor = this.s.minCursor.get()?.min;
    const upTo = minCursor === null || minCursor === undefined ? Number.MAX_SAFE_INTEGER : Number(minCursor);
    let dropped = 0;
    let after = 0;
    while (dropped < budget) {
      const candidates = this.s.unreferencedUpTo.all(after, upTo, Math.min(1024, budget - dropped));
      if (candidates.length === 0) return { dropped, more: false };
      for (const row of candidates) {
        if (Number(row.received_at) >= cutoff) return { dropped, more: false };
        if (dropped === 0) this.#recordHighest(highestOffset);
        after = Number(row.offset);
        this.s.deleteMessage.run(after);
        dropped++;
      }
    }
    return { dropped, more: true };
  }

  #recordHighest(highestOffset: number): void {
    this.s.raiseNextOffset.run(highestOffset + 1, highestOffset + 1);
  }

  #pragma(statement: Statements["pageCount"]): number {
    const row = statement.get();
    return row ? Number(Object.values(row)[0]) : 0;
  }
}
