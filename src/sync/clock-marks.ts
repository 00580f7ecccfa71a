/**
 * Whether the gateway's clock was synchronised when a message arrived, by log offset.
 * The uplink manager polls a probe (clock-probe.ts) and records each change at the log
 * offset it was seen at; the latest change to each state is saved, so a backlog logged
 * in an earlier run is judged too. An offset gets the state of the latest recorded
 * change at or below it; before any, "unknown". Keeping only the latest change of each
 * kind can turn an old range into "unknown" (when the same state came back later), never
 * into a wrong "synced".
 */
import type { ClockState } from "./cloud-properties.ts";

export const SYNCED_SINCE = "clock/synced-since";
export const UNSYNCED_SINCE = "clock/unsynced-since";
export const UNKNOWN_SINCE = "clock/unknown-since";

const KEYS: Record<ClockState, string> = {
  synced: SYNCED_SINCE,
  unsynced: UNSYNCED_SINCE,
  unknown: UNKNOWN_SINCE,
};
const STATES: readonly ClockState[] = ["synced", "unsynced", "unknown"];

export class ClockMarks {
  #since: Record<ClockState, number | undefined>;
  #last: ClockState | undefined;

  constructor(saved: Record<string, number>) {
    this.#since = { synced: saved[SYNCED_SINCE], unsynced: saved[UNSYNCED_SINCE], unknown: saved[UNKNOWN_SINCE] };
  }

  /** The probe's answer when the next logged offset is `nextOffset`; returns the counters to save on a change. */
  observe(state: ClockState, nextOffset: number): Record<string, number> | undefined {
    if (state === this.#last) return undefined;
    const first = this.#last === undefined;
    this.#last = state;
    // A start that finds the state the saved marks already give from here on has nothing
    // to record: saving it anyway would commit (and start the fsync threads) on every start
    // of an idle broker, and would only forget that the state began earlier.
    if (first && this.at(nextOffset) === state) return undefined;
    this.#since[state] = nextOffset;
    return { [KEYS[state]]: nextOffset };
  }

  at(offset: number): ClockState {
    let best: ClockState = "unknown";
    let bestSince = -1;
    for (const s of STATES) {
      const since = this.#since[s];
      if (since !== undefined && since <= offset && since > bestSince) {
        best = s;
        bestSince = since;
      }
    }
    return best;
  }
}
