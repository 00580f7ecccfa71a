/**
 * The few SQLite calls the store needs, so that `sqlite-store.ts` imports no runtime.
 * `runtime/bun/sqlite-driver.ts` implements it over `bun:sqlite`, and
 * `runtime/deno/sqlite-driver.ts` over `node:sqlite` (DatabaseSync). Both libraries
 * are synchronous, so the interface is too: a call returns once SQLite returned.
 */

/** A value SQLite can bind or return. BLOBs come back as Uint8Array. */
export type SqlValue = string | number | bigint | null | Uint8Array;

export type SqlRow = Record<string, SqlValue>;

export interface SqliteStatement {
  run(...params: SqlValue[]): { changes: number };
  all(...params: SqlValue[]): SqlRow[];
  /** The first row, or undefined when there is none. */
  get(...params: SqlValue[]): SqlRow | undefined;
}

export interface SqliteDatabase {
  /** Runs one or more statements that take no parameters (DDL, PRAGMA, BEGIN…). */
  exec(sql: string): void;
  prepare(sql: string): SqliteStatement;
  /**
   * Runs `fn` between BEGIN and COMMIT and returns its result. If `fn` or COMMIT
   * throws, the transaction is rolled back (when SQLite has not already done so,
   * which it may after SQLITE_FULL or an I/O error) and the error is rethrown.
   */
  transaction<T>(fn: () => T): T;
  close(): void;
}

export interface SqliteDriver {
  /** "bun:sqlite", "node:sqlite": for messages. */
  readonly name: string;
  /** Opens (creating if missing) the database file at `path`. Reads nothing yet. */
  open(path: string): SqliteDatabase;
  /**
   * The primary SQLite result code (SQLITE_FULL = 13, SQLITE_NOTADB = 26, …) carried
   * by an error this driver threw, or undefined for errors that did not come from
   * SQLite. Each library shapes its errors differently; the store only needs this.
   */
  resultCode(error: unknown): number | undefined;
  /**
   * A counter of the bytes the calling thread has caused to be written to storage (Linux:
   * write_bytes of /proc/thread-self/io, counted as pages are dirtied). The store makes one
   * when it opens, on its own thread, reports the growth since then as its flash wear, and
   * closes it when it closes.
   */
  writeCounter?(): WriteCounter;
  /**
   * An fsync of the file at `path` that runs off the calling thread (the runtime's thread
   * pool), so the event loop keeps serving sockets while the disk flushes. Absent where the
   * runtime has none; the store then lets SQLite fsync in line (`synchronous = FULL`).
   */
  backgroundSync?(path: string): FileSync;
}

/** Bytes written to storage so far by the thread that made it. */
export interface WriteCounter {
  /** The count now, or undefined where the system does not count. */
  read(): number | undefined;
  close(): void;
}

/** A file flushed to stable storage on demand, off the calling thread. */
export interface FileSync {
  /**
   * Resolves once everything written to the file before the call is on stable storage
   * (fsync, not fdatasync: a WAL that grew must have its new size durable too).
   */
  sync(): Promise<void>;
  /** Releases the file. A sync still running may then fail; nobody waits for it any more. */
  close(): void;
}

/** Primary result codes the store reacts to (https://sqlite.org/rescode.html). */
export const SQLITE_BUSY = 5;
export const SQLITE_LOCKED = 6;
export const SQLITE_IOERR = 10;
export const SQLITE_CORRUPT = 11;
export const SQLITE_FULL = 13;
export const SQLITE_NOTADB = 26;

/**
 * Shared by both drivers: BEGIN IMMEDIATE so the write lock is taken up front, and a
 * ROLLBACK that tolerates SQLite having rolled back on its own already.
 */
export function runTransaction<T>(exec: (sql: string) => void, fn: () => T): T {
  exec("BEGIN IMMEDIATE");
  let result: T;
  try {
    result = fn();
    exec("COMMIT");
  } catch (error) {
    try {
      exec("ROLLBACK");
    } catch {
      // "cannot rollback - no transaction is active": SQLite already rolled back
      // (it may after SQLITE_FULL, SQLITE_IOERR or SQLITE_NOMEM). Nothing left to undo.
    }
    throw error;
  }
  return result;
}
