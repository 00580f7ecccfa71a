/**
 * Whether the gateway's clock was synchronised when a message arrived, by log offset.
 * The uplink manager polls a probe (clock-probe.ts) and records each change at the log
 * offset it was seen at; the latest change to "synced" and the latest change away from
 * it are saved, so a backlog logged in an earlier run is judged too. An offset gets the
 * state of the last recorded change at or below it; before any, "unknown". A change to
 * "unknown" is saved as a change away from "synced" (so "synced" stops applying), and
 * after a restart such a range reads "unsynced" rather than "unknown" — never "synced".
 */
import type { ClockState } from "./cloud-properties.ts";

export const SYNCED_SINCE = "clock/synced-since";
export const UNSYNCED_SINCE = "clock/unsynced-since";

export class ClockMarks {
  #syncedSince: number | undefined;
  #unsyncedSince: number | undefined;
  /** Set when the last change away from "synced" seen in this run was to "unknown". */
  #unknownSince: number | undefined;
  #last: ClockState | undefined;

  constructor(saved: Record<string, number>) {
    this.#syncedSince = saved[SYNCED_SINCE];
    this.#unsyncedSince = saved[UNSYNCED_SINCE];
  }

  /** The probe's answer when the next logged offset is `nextOffset`; returns the counters to save on a change. */
  observe(state: ClockState, nextOffset: number): Record<string, number> | undefined {
    if (state === this.#last) return undefined;
    this.#last = state;
    if (state === "synced") {
      this.#syncedSince = nextOffset;
      return { [SYNCED_SINCE]: nextOffset };
    }
    this.#unsyncedSince = nextOffset;
    this.#unknownSince = state === "unknown" ? nextOffset : undefined;
    return { [UNSYNCED_SINCE]: nextOffset };
  }

  at(offset: number): ClockState {
    const s = this.#syncedSince !== undefined && this.#syncedSince <= offset ? this.#syncedSince : -1;
    const u = this.#unsyncedSince !== undefined && this.#unsyncedSince <= offset ? this.#unsyncedSince : -1;
    if (s < 0 && u < 0) return "unknown";
    if (s > u) return "synced";
    return u === this.#unknownSince ? "unknown" : "unsynced";
  }
}
