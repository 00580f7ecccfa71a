/**
 * A full store logged once when it fills and once when it has room again — not a line per
 * refused publish (thousands a second) and not silence with only a gauge changing.
 */
import type { Logger } from "../core/logger.ts";

export interface StorageState {
  /** True while the store refuses appends (quota reached with nothing to drop, or disk full). */
  full(): boolean;
  /** Publishes refused because storage is full, so far. */
  refused(): number;
  /** Messages and bytes in the store, for the line. */
  size(): { messages: number; bytes: number };
}

/** Check `state` now and every `everyMs`; returns the function that stops watching. */
export function watchStorage(
  state: StorageState,
  log: Logger,
  options: { everyMs?: number; maxBytes: number; now?: () => number },
): () => void {
  const now = options.now ?? Date.now;
  let since: number | undefined;
  let refusedBefore = 0;
  let refusedSeen = state.refused();
  const check = () => {
    // Refusals since the last check mean it was full meanwhile, even if it no longer is.
    const refused = state.refused();
    const previous = refusedSeen;
    const wasFull = refused > previous;
    refusedSeen = refused;
    const full = state.full();
    if ((full || wasFull) && since === undefined) {
      since = now();
      refusedBefore = previous; // refusals since the last check belong to this episode
      const { messages, bytes } = state.size();
      const quota = options.maxBytes > 0 ? ` (storage.max_bytes ${options.maxBytes})` : "";
      log.error(
        `storage full: ${messages} messages, ${bytes} bytes${quota}; QoS 1/2 publishes are refused (v5 0x97, 3.1.1 disconnected) until deliveries drain or disk space returns`,
      );
    }
    if (!full && since !== undefined) {
      const seconds = Math.round((now() - since) / 1000);
      log.warn(
        `storage has room again after ${seconds} s; accepting publishes (${
          state.refused() - refusedBefore
        } refused while it was full)`,
      );
      since = undefined;
    }
  };
  check();
  const timer = setInterval(check, options.everyMs ?? 1000);
  (timer as { unref?: () => void }).unref?.();
  return () => clearInterval(timer);
}
