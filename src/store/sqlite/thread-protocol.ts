import type { EncodedPage } from "../message-page-codec.ts";
import type { EncodedLists } from "../mutation-codec.ts";
import type { Recovered } from "../store.ts";
import type { SqliteStoreOptions, SqliteStoreStats } from "./sqlite-store.ts";

/**
 * The messages between the event loop (`ThreadedSqliteStore`) and the storage thread
 * (`serveSqliteStore`). Both ends are runtime-free; each runtime only provides the
 * thread (a web-standard Worker) and the SQLite driver inside it.
 */

/** The store's options that can cross a thread: everything but callbacks. */
export type ThreadStoreOptions = Omit<SqliteStoreOptions, "now" | "onError" | "onFlush">;

/** An error as it crosses the thread boundary; `name` keeps StoreFullError recognisable. */
export interface WireError {
  name: string;
  message: string;
}

export type ToStoreThread =
  | { t: "open"; options: ThreadStoreOptions }
  | { t: "commit"; seq: number; encoded: EncodedLists }
  | { t: "read"; id: number; from: number; limit: number }
  /** Bodies for the broker: messages of the log by offset, or retained messages by topic. */
  | { t: "read-messages"; id: number; offsets: readonly number[] }
  | { t: "read-retained"; id: number; topics: readonly string[] }
  | { t: "close" };

export type FromStoreThread =
  /** The recovered state; its columns' buffers are transferred (see recovery-builder.ts). */
  | { t: "opened"; recovered: Recovered; stats: SqliteStoreStats }
  | { t: "open-failed"; error: WireError }
  /**
   * `outcomes` is null when every list committed; otherwise one entry per list. `buffer`, in
   * commit mode, is the batch's own buffer, transferred back for the next batch to reuse.
   */
  | {
    t: "committed";
    seq: number;
    outcomes: Array<WireError | null> | null;
    stats: SqliteStoreStats;
    buffer?: ArrayBuffer;
  }
  /** The messages read (by any read request), as one page (message-page-codec.ts). */
  | { t: "read"; id: number; page: EncodedPage }
  | { t: "read-failed"; id: number; error: WireError }
  /** Periodic mode: a flush committed (fresh figures), or failed with `error`. */
  | { t: "flushed"; error?: WireError; stats: SqliteStoreStats }
  /** Periodic mode: one acknowledged list could not be applied. */
  | { t: "list-error"; error: WireError }
  | { t: "closed"; error?: WireError };

/** The end of a message channel each side holds: a Worker, or the worker's global scope. */
export interface ThreadPort {
  postMessage(message: unknown, transfer?: ArrayBuffer[]): void;
  onmessage: ((event: MessageEvent) => void) | null;
}

export function toWireError(error: unknown): WireError {
  return error instanceof Error
    ? { name: error.name, message: error.message }
    : { name: "Error", message: String(error) };
}
