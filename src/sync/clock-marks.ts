/**
 * Whether the gateway's clock was synchronised when a message arrived, by log offset.
 * The uplink manager polls a probe (src/runtime/clock-sync.ts) and records each change
 * at the log offset it was seen at; the latest change of each kind is persisted, so
 * backlog logged in an earlier run is judged too. A message is "synced" or "unsynced"
 * only when the last recorded change at or below its offset says so; before any
 * recorded change it is "unknown", never a guess.
 */
import type { ClockState } from "./cloud-properties.ts";

export const SYNCED_SINCE = "clock/synced-since";
export const UNSYNCED_SINCE = "clock/unsynced-since";

export class ClockMarks {
  #syncedSince: number | undefined;
  #unsyncedSince: number | undefined;
  #last: ClockState = "unknown";

  constructor(saved: Record<string, number>) {
    this.#syncedSince = saved[SYNCED_SINCE];
    this.#unsyncedSince = saved[UNSYNCED_SINCE];
  }

  /** The probe's answer now, when the next logged offset is `nextOffset`; returns counters to save on a change. */
  observe(state: ClockState, nextOffset: number): Record<string, number> | undefined {
    if (state === this.#last) return undefined;
    this.#last = state;
    if (state === "synced") {
      this.#syncedSince = nextOffset;
      return { [SYNCED_SINCE]: nextOffset };
    }
    // "unknown" after a known state: from here on nothing can be claimed.
    this.#unsyncedSince = state === "unsynced" ? nextOffset : this.#unsyncedSince;
    if (state === "unknown") {
      // Mark as unsynced-or-unknown so the earlier "synced" stops applying.
      this.#unsyncedSince = nextOffset;
      this.#unknownFrom = nextOffset;
    }
    return { [UNSYNCED_SINCE]: nextOffset };
  }

  #unknownFrom: number | undefined;

  at(offset: number): ClockState {
    const s = this.#syncedSince !== undefined && this.#syncedSince <= offset ? this.#syncedSince : -1;
    const u = this.#unsyncedSince !== undefined && this.#unsyncedSince <= offset ? this.#unsyncedSince : -1;
    if (s < 0 && u < 0) return "unknown";
    if (s > u) return "synced";
    return this.#unknownFrom !== undefined && u === this.#unknownFrom ? "unknown" : "unsynced";
  }
}
