import { type RecoveredTail, RecoveryBuilder, type RecoverySink } from "../recovery-builder.ts";
import {
  addsToLog,
  type Message,
  type Mutation,
  type Recovered,
  RETAINED_COPY_ORIGIN,
  type Store,
  StoreFullError,
  type StoreStats,
} from "../store.ts";
import {
  type FileSync,
  SQLITE_BUSY,
  SQLITE_CORRUPT,
  SQLITE_FULL,
  SQLITE_LOCKED,
  SQLITE_NOTADB,
  type SqliteDatabase,
  type SqliteDriver,
  type WriteCounter,
} from "./driver.ts";
import { CommitWindow, isBookkeeping } from "./commit-window.ts";
import { undoneInBatch } from "./completed-deliveries.ts";
import { LogTrimmer } from "./log-trimmer.ts";
import { rowToMessage } from "./message-codec.ts";
import { recover } from "./recover.ts";
import { inspectSchema, migrate } from "./schema.ts";
import { type MutationEffect, runsSeveralStatements, Statements } from "./statements.ts";

export interface SqliteStoreOptions {
  /** The database file. Created if missing; never overwritten if it is not Ferry's. */
  path: string;
  /**
   * `commit`: commit() resolves after the transaction holding its mutations has been
   * fsynced, so an acknowledged message survives kill -9 and power loss. Concurrent
   * commits share one transaction and one fsync (group commit).
   *
   * `periodic`: commit() resolves at once (as Mosquitto's autosave does) and queued
   * mutations are written every `flushIntervalMs`. Risk window: a crash or power loss
   * loses what was acknowledged since the last flush — up to flushIntervalMs of
   * traffic, plus any flush that is failing (disk full) until it succeeds.
   */
  durability: "commit" | "periodic";
  /** Flush period for `periodic`. Default 1000. */
  flushIntervalMs?: number;
  /**
   * `commit`: the least time from the start of one transaction to the start of the next,
   * unless EARLY_COMMIT_LISTS lists wait (see commit-window.ts); 0 starts the next on the
   * turn after its first list. Default 0.
   */
  commitWindowMs?: number;
  /**
   * Quota on the pages in use. Above it the oldest unreferenced messages are
   * dropped (counted in stats().droppedMessages), even those above a log reader's
   * cursor that the reader has not read yet; if none can be, lists containing an
   * append are refused with StoreFullError while lists without (acks, session
   * changes) still commit, so the broker can drain. Unlimited if unset.
   */
  maxBytes?: number;
  /**
   * Unreferenced messages older than this are trimmed from the log, except those
   * above the lowest log-reader cursor (cursor-put). Kept if unset.
   */
  messageTtlMs?: number;
  /** Injected clock for TTL trimming. Default Date.now. */
  now?: () => number;
  /** Told about a periodic-mode list that could not be applied (its promise already resolved). */
  onError?: (error: Error) => void;
  /**
   * Told after each flush: with its error if the transaction failed (periodic mode then
   * keeps the lists for the next attempt). The storage thread forwards it.
   */
  onFlush?: (failure?: Error) => void;
  /**
   * Let SQLite write without waiting for the disk (`synchronous = OFF`, and no automatic
   * checkpoints) and fsync the WAL on the runtime's thread pool after each transaction (the
   * driver's `backgroundSync`); in commit mode a list settles only once that fsync has
   * returned. The store makes the checkpoints itself (#checkpoint). For the store on the
   * event loop (`storage.writer_thread: false`), which would otherwise stop every socket for
   * each fsync. Ignored where the driver has no background sync.
   */
  syncInBackground?: boolean;
  /**
   * `syncInBackground`: bytes the store writes (as the kernel counts them for its thread)
   * between two checkpoints, which Ferry then makes itself (see #checkpoint). Default
   * CHECKPOINT_BYTES; where the kernel does not count, every CHECKPOINT_TRANSACTIONS.
   */
  checkpointBytes?: number;
}

/**
 * SQLite checkpoints a WAL of 1,000 pages by default; about that much, with Ferry's 1 KiB pages.
 * Larger saves no flash (every page in the WAL reaches the database once per checkpoint, and
 * most are new leaves of the log, written once whatever the interval) but grows the WAL.
 */
export const CHECKPOINT_BYTES = 1 << 20;
/** Where the kernel does not count a thread's writes: a checkpoint every this many transactions. */
const CHECKPOINT_TRANSACTIONS = 500;
/**
 * How often #checkpointDue reads the kernel's count (a system call into /proc), at most and
 * at least: at the rate the WAL grew since the last reading, the next comes when half of what
 * is left before a checkpoint may have been written. So bulk traffic is looked at every
 * 100 ms and a gateway at 200 msg/s (about 100 KB of WAL a second) once a second.
 */
const CHECKPOINT_CHECK_MS = 100;
const CHECKPOINT_CHECK_MAX_MS = 1000;
/** A checkpoint's fsync of the database that failed is tried again after this long; writes wait. */
const DB_SYNC_RETRY_MS = 1000;
/**
 * `syncInBackground`: a WAL fsync at least this slow (an SD card's take several ms; this
 * machine's SSD 0.13) is followed by REFILL_HOLD_MS before the next transaction (#synced).
 */
const SLOW_FSYNC_MS = 4;
const REFILL_HOLD_MS = 1;

/** Stats of the SQLite store; the optional StoreStats fields are always present. */
export interface SqliteStoreStats extends StoreStats {
  droppedMessages: number;
  expiredMessages: number;
  transactions: number;
  full: boolean;
}

/**
 * Lists that arrived together (one batch from the event loop) and are answered together:
 * one callback for all of them instead of a promise per list.
 */
interface CommitGroup {
  readonly outcomes: Array<Error | undefined>;
  left: number;
  failed: boolean;
  readonly done: (outcomes: Array<Error | undefined> | undefined) => void;
}

interface Queued {
  mutations: readonly Mutation[];
  appends: boolean;
  /** Commit mode: settles the caller's promise. Periodic lists have none. */
  settle?: (error?: Error) => void;
  /** Commit mode, from `commitLists`: the batch this list is answered with, and its place in it. */
  group?: CommitGroup;
  index?: number;
}

/** Settles one list of a CommitGroup; the group's callback runs once all of them are settled. */
function settleQueued(queued: Queued, error: Error | undefined): boolean {
  if (queued.settle) {
    queued.settle(error);
    return true;
  }
  const group = queued.group;
  if (!group) return false;
  group.outcomes[queued.index!] = error;
  if (error) group.failed = true;
  if (--group.left === 0) group.done(group.failed ? group.outcomes : undefined);
  return true;
}

interface BatchResult {
  added: number;
  highest: number;
  dropped: number;
  expired: number;
  moreExpired: boolean;
  overQuota: boolean;
  bytes: number;
}

/**
 * The page size of a store Ferry creates (SQLite's default is 4,096; older stores keep theirs).
 *
 * Why (issue 14, flash wear): in WAL mode a commit appends every page it changed, whole, as a
 * frame (the page plus 24 bytes), and the kernel writes every 4 KiB page of the WAL file that
 * the append touches, the one the last commit ended in included: about 4,096 bytes plus the
 * frames per commit. A commit of ten 64-byte messages changes one or two leaves of the message
 * table (and, when a leaf fills, its parent and page 1): with 4,096-byte pages 1.9 frames of
 * 4,120 bytes on average, with 1,024-byte pages 4.2 frames of 1,048. Measured at 200 msg/s
 * with a 50 ms commit window: 1,184 B/msg with 4,096, 1,010 with 2,048, 847 with 1,024, 720
 * with 512 (README, Flash wear). 512 writes least but puts any message over about 450 bytes
 * in overflow pages and makes every b-tree deeper; 1,024 keeps messages under about 990 bytes
 * on their leaf.
 */
export const NEW_STORE_PAGE_SIZE = 1024;

/** Primary result codes that concern one statement only; others leave the transaction in doubt. */
const LIST_LOCAL_CODES = new Set([18, /* TOOBIG */ 19, /* CONSTRAINT */ 20, /* MISMATCH */ 25 /* RANGE */]);

/** The next turn of the event loop, after pending I/O callbacks: they all join one batch. */
const defer: (fn: () => void) => void = typeof setImmediate === "function"
  ? (fn) => setImmediate(fn)
  : (fn) => setTimeout(fn, 0);

/**
 * The durable store: a log of messages plus session state in one SQLite database in
 * WAL mode. Every flush applies all queued mutation lists in ONE transaction, each
 * list inside its own savepoint, so lists stay atomic while sharing the sync.
 *
 * Why `synchronous = FULL` in both modes: in WAL mode NORMAL syncs only at
 * checkpoints, so the last transactions before a power loss can vanish even though
 * COMMIT returned — exactly the messages already PUBACKed. FULL syncs the WAL at
 * every commit; group commit keeps that to one fsync per batch (commit mode) or per
 * interval (periodic), which is why FULL costs little here. With `syncInBackground` the
 * store runs OFF and makes each fsync itself, off the event loop, before it answers.
 *
 * Why `locking_mode = EXCLUSIVE`: the store is owned by one broker process. The lock
 * makes a second broker on the same file fail at open instead of interleaving
 * offsets, and lets WAL keep its index in heap memory rather than a mmapped -shm
 * file (no shared-memory file to fail on a full disk).
 *
 * bun:sqlite and node:sqlite are synchronous: a flush runs on the calling thread. On the
 * storage thread (threaded-store.ts) its fsync does too. On the event loop
 * (`syncInBackground`), SQLite only writes and the WAL's fsync runs on the runtime's thread
 * pool; lists that arrive meanwhile form the next transaction, made when it returns.
 */
export class SqliteStore implements Store {
  readonly kind = "sqlite";
  readonly offloadsBodies = true;
  readonly #driver: SqliteDriver;
  readonly #options: SqliteStoreOptions;
  readonly #path: string;
  readonly #now: () => number;
  #db: SqliteDatabase | undefined;
  #s: Statements | undefined;
  #trimmer: LogTrimmer | undefined;
  #closed = false;
  #queue: Queued[] = [];
  #scheduled = false;
  #timer: ReturnType<typeof setInterval> | undefined;
  /** Commit mode with `commitWindowMs`: lists that come while it runs wait for its end. */
  readonly #window: CommitWindow | undefined;
  /** The driver's write counter, made at open on the store's thread; its reading then, and the latest (see stats). */
  #counter: WriteCounter | undefined;
  #writtenAtOpen: number | undefined;
  #written = 0;
  #writtenReadAt = -Infinity;
  /** Highest offset in a committed transaction (or recovered). */
  #highest = 0;
  #messages = 0;
  #bytes = 0;
  #dropped = 0;
  #expired = 0;
  #transactions = 0;
  /** Over maxBytes with nothing left to drop, as of the last transaction. */
  #overQuota = false;
  /** The last flush failed with this; cleared by the next successful one. */
  #failure: Error | undefined;
  #nextTtlCheck = 0;
  /** Periodic: appends acknowledged and waiting in #queue for the flush. */
  #queuedAppends = 0;
  /** `syncInBackground`: the WAL's fsync, off the event loop. */
  #walSync: FileSync | undefined;
  /**
   * `syncInBackground`: who waits for the fsync in flight (each to be told its outcome), or
   * undefined when none is. Every transaction they wait for committed before it started.
   */
  #syncing: Array<(failure?: Error) => void> | undefined;
  /** `syncInBackground`: who waits for a transaction that committed after the fsync in flight began. */
  #unsynced: Array<(failure?: Error) => void> = [];
  /** `syncInBackground`: the database file's fsync, after each checkpoint. */
  #dbSync: FileSync | undefined;
  /** `syncInBackground`: the write count and transactions at the last checkpoint, and when it was last looked at. */
  #writtenAtCheckpoint = 0;
  #transactionsAtCheckpoint = 0;
  #checkpointCheckedAt = -Infinity;
  /** The count at that reading, and how long until the next (see CHECKPOINT_CHECK_MS). */
  #writtenAtCheck = 0;
  #checkpointCheckMs = CHECKPOINT_CHECK_MS;
  #checkpoints = 0;
  /** `syncInBackground`: the waiters of a checkpoint's database fsync while it runs. No transaction may start then. */
  #dbSyncing: Array<(failure?: Error) => void> | undefined;
  /** close() while it waits for that fsync: a second call gets the same promise. */
  #closing: Promise<void> | undefined;
  /**
   * `syncInBackground`: a WAL fsync failed. Linux may then have dropped the pages it could not
   * write (and marked them clean), so a later fsync that succeeds proves nothing for them, and
   * the WAL's checksum chain ends at the first lost frame: every transaction after it would be
   * lost too. So nothing more is acknowledged until a restart recovers what is on the disk.
   */
  #syncBroken: Error | undefined;
  /** `syncInBackground`: when the WAL fsync in flight began (performance.now()). */
  #syncStartedAt = 0;
  /** `syncInBackground`: the next transaction waits for this timer (see #holdForRefills). */
  #holding: ReturnType<typeof setTimeout> | undefined;

  constructor(driver: SqliteDriver, options: SqliteStoreOptions) {
    this.#driver = driver;
    this.#options = options;
    this.#path = options.path;
    this.#now = options.now ?? Date.now;
    const ms = options.durability === "commit" ? options.commitWindowMs ?? 0 : 0;
    this.#window = ms > 0 ? new CommitWindow(ms, this.#windowPassed) : undefined;
  }

  get durability(): "commit" | "periodic" {
    return this.#options.durability;
  }

  open(): Promise<Recovered> {
    const builder = new RecoveryBuilder();
    return this.openInto(builder).then((tail) => builder.finish(tail));
  }

  /**
   * Opens the store and hands what it recovers to `sink` as it reads it, page by page (the
   * storage thread builds it in columns whose buffers it transfers to the event loop).
   */
  openInto(sink: RecoverySink): Promise<RecoveredTail> {
    if (this.#db || this.#closed) {
      return Promise.reject(new Error(`SQLite store ${this.#path}: open() may be called once per instance`));
    }
    let db: SqliteDatabase;
    this.#counter = this.#driver.writeCounter?.();
    this.#writtenAtOpen = this.#counter?.read();
    try {
      db = this.#driver.open(this.#path);
    } catch (error) {
      this.#closeCounter();
      return Promise.reject(this.#openError(error));
    }
    try {
      db.exec("PRAGMA locking_mode = EXCLUSIVE");
      // Let a broker that is still shutting down release the file.
      db.exec("PRAGMA busy_timeout = 2000");
      // Nothing above writes. inspectSchema reads the header and refuses foreign or
      // newer files before anything below can change a byte of them.
      const version = inspectSchema(db, this.#path);
      // A new file only: SQLite ignores page_size once the header exists, and changing an
      // existing store's would take a VACUUM, a full copy of the user's data at start.
      if (version === 0) db.exec(`PRAGMA page_size = ${NEW_STORE_PAGE_SIZE}`);
      const mode = db.prepare("PRAGMA journal_mode = WAL").get()?.journal_mode;
      if (mode !== "wal") throw new Error(`cannot switch to WAL mode (journal_mode is ${String(mode)})`);
      db.exec("PRAGMA synchronous = FULL");
      // A checkpoint resets the WAL; this truncates it back after a burst grew it past what
      // the default auto-checkpoint (1000 pages: ~1 MiB with 1 KiB pages, ~4 MiB with 4 KiB)
      // lets it reach. A larger auto-checkpoint saves the flash nothing: every page written
      // to the WAL reaches the database file once per checkpoint, and the pages a commit
      // changes are mostly new leaves of the log, written once whatever the interval.
      db.exec("PRAGMA journal_size_limit = 8388608");
      migrate(db, version);

      const state = recover(db, sink);
      const background = this.#options.syncInBackground ? this.#driver.backgroundSync : undefined;
      if (background) {
        // Why OFF is safe here, when the class comment rules NORMAL out: SQLite then makes no
        // fsync at all, and the store makes each one it left out, off the event loop, in the
        // order SQLite would have (see #checkpoint):
        // - a commit: the WAL, before anyone is told the commit is durable (this also covers
        //   the WAL header SQLite rewrites when it starts the WAL over);
        // - a checkpoint: only of frames already fsynced, then the database file, before any
        //   write can start the WAL over.
        // SQLite's own checkpoints would skip both under OFF, so they are off.
        db.exec("PRAGMA wal_autocheckpoint = 0");
        db.exec("PRAGMA synchronous = OFF");
        this.#walSync = background(`${this.#path}-wal`);
        this.#dbSync = background(this.#path);
        this.#writtenAtCheckpoint = this.#counter?.read() ?? 0;
      }
      const s = new Statements(db);
      const pageSize = Number(db.prepare("PRAGMA page_size").get()?.page_size ?? 4096);
      this.#trimmer = new LogTrimmer(s, pageSize);
      this.#s = s;
      this.#db = db;
      this.#highest = state.nextOffset - 1;
      this.#messages = state.messageCount;
      this.#bytes = this.#trimmer.fileBytes();
      const max = this.#options.maxBytes;
      this.#overQuota = max !== undefined && this.#trimmer.usedBytes() > max;

      if (this.#options.durability === "periodic") {
        // With a background fsync still running, this interval's lists wait for the next one:
        // one transaction per fsync, so that each fsync's return finds the whole WAL durable
        // and a checkpoint can follow (#synced). Otherwise a disk slower than the interval
        // would keep the WAL from ever being checkpointed.
        const timer = setInterval(() => {
          if (!this.#syncing) this.#flush();
        }, this.#options.flushIntervalMs ?? 1000);
        // The broker's sockets keep the process alive; close() does the final flush.
        (timer as { unref?: () => void }).unref?.();
        this.#timer = timer;
      }
      const { messageCount: _, ...recovered } = state;
      return Promise.resolve(recovered);
    } catch (error) {
      this.#db = undefined;
      try {
        db.close();
      } catch {
        // Already failing; the first error is the one worth reporting.
      }
      this.#closeCounter();
      return Promise.reject(this.#openError(error));
    }
  }

  commit(mutations: readonly Mutation[]): Promise<void> {
    if (!this.#db) return Promise.reject(new Error(`SQLite store ${this.#path} is not open`));
    if (this.#syncBroken) return Promise.reject(this.#syncBroken);
    let appendCount = 0;
    for (const m of mutations) if (addsToLog(m)) appendCount++;
    const appends = appendCount > 0;
    if (this.#options.durability === "periodic") {
      // The promise resolves now, so a refusal has to be decided now, from the state
      // of the last flush.
      if (appends && this.#failure) return Promise.reject(this.#failure);
      if (appends && this.#overQuota) return Promise.reject(this.#quotaError());
      this.#queue.push({ mutations, appends });
      this.#queuedAppends += appendCount;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const settle = (error?: Error) => (error ? reject(error) : resolve());
      this.#queue.push({ mutations, appends, settle });
      this.#scheduleFlush(isBookkeeping(mutations));
    });
  }

  /**
   * Commit mode: the next turn, unless the commit window of the last flush still runs (its
   * end flushes) and fewer than EARLY_COMMIT_LISTS lists wait.
   */
  #scheduleFlush(bookkeeping: boolean): void {
    if (this.#scheduled) return;
    const held = this.#window?.admit(bookkeeping) ?? false;
    // With a background fsync in flight, what comes meanwhile is the next transaction,
    // made when that fsync returns (#synced): one transaction per fsync, as on the thread.
    if (held || this.#syncing || this.#holding) return;
    this.#scheduled = true;
    defer(() => this.#flush());
  }

  readonly #windowPassed = (): void => {
    if (this.#mayFlush()) this.#flush();
  };

  /**
   * Lists wait and nothing holds them any more: not a flush already scheduled for this turn,
   * the commit window, a background fsync in flight, or the wait after a slow one.
   */
  #mayFlush(): boolean {
    return this.#db !== undefined && this.#queue.length > 0 && !this.#scheduled && !this.#syncing &&
      !this.#holding && !(this.#window?.holds() ?? false);
  }

  /**
   * `syncInBackground`: `settle` runs once an fsync that began after every transaction
   * committed so far has returned (with its failure, if it failed). Starts one unless one is
   * in flight; then it waits for the next, which #synced starts.
   */
  #afterSync(settle: (failure?: Error) => void): void {
    this.#unsynced.push(settle);
    if (!this.#syncing) this.#startSync();
  }

  #startSync(): void {
    const walSync = this.#walSync!;
    const group = this.#unsynced;
    this.#unsynced = [];
    this.#syncing = group;
    this.#syncStartedAt = performance.now();
    walSync.sync().then(
      () => this.#synced(group, undefined),
      (error: unknown) => {
        const detail = error instanceof Error ? error.message : String(error);
        const failure = new Error(
          `SQLite store ${this.#path}: fsync of the WAL failed (${detail}); nothing more can be ` +
            "acknowledged until Ferry restarts",
          { cause: error },
        );
        if (!this.#syncBroken) {
          this.#syncBroken = failure;
          this.#options.onError?.(failure);
        }
        this.#synced(group, failure);
      },
    );
  }

  /** The fsync of `group` returned. The next transaction starts before its callers run, as on the thread. */
  #synced(group: Array<(failure?: Error) => void>, failure: Error | undefined): void {
    const walTook = this.#dbSyncing === group ? 0 : performance.now() - this.#syncStartedAt;
    if (this.#syncing === group) this.#syncing = undefined;
    if (this.#dbSyncing === group) this.#dbSyncing = undefined;
    // Every frame in the WAL is durable only when nothing committed after this fsync began.
    if (
      this.#db && !this.#closed && !this.#syncing && !failure && this.#unsynced.length === 0 && this.#checkpointDue()
    ) {
      this.#checkpoint();
    }
    if (this.#options.durability === "commit" && this.#mayFlush()) {
      if (walTook >= SLOW_FSYNC_MS) this.#holdForRefills();
      else this.#flush();
    } else if (this.#db && !this.#syncing && this.#unsynced.length > 0) this.#startSync();
    // close() may have settled this group already, and emptied it.
    for (const settle of group) settle(failure);
    if (this.#syncBroken) this.#refuseAll(this.#syncBroken);
  }

  /** After a failed WAL fsync: every list not yet answered is refused, now and from now on. */
  #refuseAll(error: Error): void {
    const queued = this.#queue;
    this.#queue = [];
    this.#queuedAppends = 0;
    for (const q of queued) settleQueued(q, error);
    const waiting = this.#unsynced;
    this.#unsynced = [];
    for (const settle of waiting) settle(error);
  }

  /**
   * After a slow fsync (a disk that takes SLOW_FSYNC_MS or more), the lists it answers are
   * settled first and the next transaction waits REFILL_HOLD_MS. Why: a client with a window
   * of messages in flight sends the next one when a PUBACK comes. Made at once, the next
   * transaction holds what came during the fsync but not those refills, which arrive a
   * fraction of a millisecond later and then wait out a whole fsync more: on a 10 ms fsync a
   * message waited about two. On a fast disk the hold would cost more than the fsync it saves.
   */
  #holdForRefills(): void {
    this.#holding = setTimeout(() => {
      this.#holding = undefined;
      if (this.#mayFlush()) this.#flush();
    }, REFILL_HOLD_MS);
  }

  /** `syncInBackground`: whether the WAL has grown by `checkpointBytes` since the last checkpoint. */
  #checkpointDue(): boolean {
    if (this.#transactions === this.#transactionsAtCheckpoint) return false;
    const now = this.#now();
    const since = now - this.#checkpointCheckedAt;
    if (since < this.#checkpointCheckMs && since >= 0) return false;
    const written = this.#counter?.read();
    if (written === undefined) return this.#transactions - this.#transactionsAtCheckpoint >= CHECKPOINT_TRANSACTIONS;
    const left = (this.#options.checkpointBytes ?? CHECKPOINT_BYTES) - (written - this.#writtenAtCheckpoint);
    const perMs = since > 0 && Number.isFinite(since) ? (written - this.#writtenAtCheck) / since : 0;
    this.#checkpointCheckMs = perMs > 0
      ? Math.min(CHECKPOINT_CHECK_MAX_MS, Math.max(CHECKPOINT_CHECK_MS, left / 2 / perMs))
      : CHECKPOINT_CHECK_MS;
    this.#checkpointCheckedAt = now;
    this.#writtenAtCheck = written;
    return left <= 0;
  }

  /**
   * `syncInBackground`: copies the WAL into the database (SQLite's PASSIVE checkpoint, which
   * under `synchronous = OFF` only writes), then fsyncs the database file off the event loop.
   * That fsync stands where a WAL fsync would: no transaction starts until it returns, because
   * the next one may start the WAL over, and the WAL must not be overwritten before what it
   * held is durable in the database. Called only when every frame in the WAL is durable, so
   * the database never gets a page the WAL could lose. Lists that come meanwhile gather for
   * the transaction after it, as they do behind a WAL fsync.
   */
  #checkpoint(): void {
    const db = this.#db!;
    try {
      db.exec("PRAGMA wal_checkpoint(PASSIVE)");
    } catch (error) {
      // Nothing is lost: the WAL still holds everything. Try again after more writes.
      this.#options.onError?.(new Error(`SQLite store ${this.#path}: checkpoint failed: ${String(error)}`));
      return;
    }
    this.#checkpoints++;
    this.#writtenAtCheckpoint = this.#counter?.read() ?? 0;
    this.#transactionsAtCheckpoint = this.#transactions;
    this.#syncDatabase([]);
  }

  #syncDatabase(group: Array<(failure?: Error) => void>): void {
    this.#syncing = group;
    this.#dbSyncing = group;
    this.#dbSync!.sync().then(
      () => this.#synced(group, undefined),
      (error: unknown) => {
        if (this.#syncing !== group) return; // closed meanwhile
        if (this.#closed) {
          // close() waits for this; it closes with FULL, whose checkpoint fsyncs the database.
          this.#synced(group, undefined);
          return;
        }
        this.#options.onError?.(
          new Error(
            `SQLite store ${this.#path}: fsync of the database after a checkpoint failed (${String(error)}); ` +
              `writes wait and it is tried again in ${DB_SYNC_RETRY_MS} ms`,
          ),
        );
        const retry = setTimeout(() => {
          if (this.#syncing === group && this.#db) this.#syncDatabase(group);
        }, DB_SYNC_RETRY_MS);
        (retry as { unref?: () => void }).unref?.();
      },
    );
  }

  /** Checkpoints made by the store itself (`syncInBackground`), for tests. */
  get checkpoints(): number {
    return this.#checkpoints;
  }

  /** `syncInBackground`: resolves once everything committed so far is on the disk (or its fsync failed). */
  #whenDurable(): Promise<void> {
    return new Promise<void>((resolve) => {
      // Nothing committed after the fsync in flight began: that one covers everything.
      if (this.#syncing && this.#unsynced.length === 0) this.#syncing.push(() => resolve());
      else this.#afterSync(() => resolve());
    });
  }

  /**
   * The storage thread's way in: the lists of one batch from the event loop (which waited
   * out the commit window itself), answered together through `done`, with an outcome per
   * list or undefined when all of them committed. Commit mode applies them at once, in one
   * transaction with anything else waiting; periodic mode queues them for the next flush
   * and answers at once, refusing appends as `commit` does.
   */
  commitLists(
    lists: readonly (readonly Mutation[])[],
    done: (outcomes: Array<Error | undefined> | undefined) => void,
  ): void {
    if (!this.#db || this.#syncBroken) {
      const error = this.#syncBroken ?? new Error(`SQLite store ${this.#path} is not open`);
      done(lists.map(() => error));
      return;
    }
    if (lists.length === 0) {
      done(undefined);
      return;
    }
    const group: CommitGroup = { outcomes: new Array(lists.length), left: lists.length, failed: false, done };
    const periodic = this.#options.durability === "periodic";
    for (let i = 0; i < lists.length; i++) {
      const mutations = lists[i]!;
      let appendCount = 0;
      for (const m of mutations) if (addsToLog(m)) appendCount++;
      const appends = appendCount > 0;
      if (!periodic) {
        this.#queue.push({ mutations, appends, group, index: i });
        continue;
      }
      const refusal = appends ? (this.#failure ?? (this.#overQuota ? this.#quotaError() : undefined)) : undefined;
      if (!refusal) {
        this.#queue.push({ mutations, appends });
        this.#queuedAppends += appendCount;
      }
      settleQueued({ mutations, appends, group, index: i }, refusal);
    }
    if (!periodic) this.#flush();
  }

  readLog(from: number, limit: number): Promise<Message[]> {
    if (!this.#s || !this.#db) return Promise.reject(new Error(`SQLite store ${this.#path} is not open`));
    if (limit <= 0) return Promise.resolve([]);
    if (this.#walSync && this.#options.durability === "commit") {
      // The log's readers (the uplink, the history API) see only durable messages: a read
      // waits for the fsync of what was written before it, and leaves out lists still
      // gathering (nobody has been told they are logged: the broker announces a message to
      // the log's readers once its commit has settled).
      if (this.#syncing || this.#unsynced.length > 0) {
        return this.#whenDurable().then(() => this.#readLogNow(from, limit, false));
      }
      return this.#readLogNow(from, limit, false);
    }
    return this.#readLogNow(from, limit, true);
  }

  #readLogNow(from: number, limit: number, withGathering: boolean): Promise<Message[]> {
    const s = this.#s;
    if (!s || !this.#db) return Promise.reject(new Error(`SQLite store ${this.#path} is not open`));
    const logged = s.readLog.all(from, limit).map(rowToMessage);
    const queued = withGathering ? this.#unflushed() : undefined;
    if (!queued || queued.appends.size === 0) return Promise.resolve(logged);
    // Lists waiting for the flush (periodic: acknowledged already) are part of the log.
    const byOffset = new Map<number, Message>();
    for (const message of logged) byOffset.set(message.offset, message);
    for (const [offset, message] of queued.appends) if (offset >= from) byOffset.set(offset, message);
    const merged = [...byOffset.values()].sort((a, b) => a.offset - b.offset).slice(0, limit);
    return Promise.resolve(merged);
  }

  readMessages(offsets: readonly number[]): Promise<Message[]> {
    const s = this.#s;
    if (!s || !this.#db) return Promise.reject(new Error(`SQLite store ${this.#path} is not open`));
    if (offsets.length === 0) return Promise.resolve([]);
    const logged = s.messagesAt.all(JSON.stringify(offsets)).map(rowToMessage);
    const queued = this.#unflushed();
    if (!queued || queued.appends.size === 0) return Promise.resolve(logged);
    const found = new Map<number, Message>();
    for (const message of logged) found.set(message.offset, message);
    const out: Message[] = [];
    for (const offset of offsets) {
      const message = queued.appends.get(offset) ?? found.get(offset);
      if (message) out.push(message);
    }
    return Promise.resolve(out);
  }

  readRetained(topics: readonly string[]): Promise<Message[]> {
    const s = this.#s;
    if (!s || !this.#db) return Promise.reject(new Error(`SQLite store ${this.#path} is not open`));
    if (topics.length === 0) return Promise.resolve([]);
    const stored = s.retainedOf.all(JSON.stringify(topics)).map(rowToMessage);
    const queued = this.#unflushed();
    if (!queued || queued.retained.size === 0) return Promise.resolve(stored);
    const found = new Map<string, Message>();
    for (const message of stored) found.set(message.topic, message);
    const out: Message[] = [];
    for (const topic of topics) {
      const message = queued.retained.has(topic) ? queued.retained.get(topic) : found.get(topic);
      if (message) out.push(message);
    }
    return Promise.resolve(out);
  }

  /**
   * What the lists waiting for a flush add to the log and change in the retained set: a
   * read sees every list committed before it, written yet or not (commit mode flushes on
   * the next turn; periodic mode every interval). Undefined when nothing waits.
   */
  #unflushed(): { appends: Map<number, Message>; retained: Map<string, Message | null> } | undefined {
    if (this.#queue.length === 0) return undefined;
    const appends = new Map<number, Message>();
    const retained = new Map<string, Message | null>();
    for (const queued of this.#queue) {
      for (const m of queued.mutations) {
        if (m.op === "append") appends.set(m.message.offset, m.message);
        else if (m.op === "retain") retained.set(m.topic, m.message);
        else if (m.op === "retained-copy") {
          const source = retained.has(m.topic)
            ? retained.get(m.topic)
            : this.#s!.retainedOf.all(JSON.stringify([m.topic])).map(rowToMessage)[0];
          if (source) appends.set(m.offset, { ...source, offset: m.offset, origin: RETAINED_COPY_ORIGIN });
        }
      }
    }
    return { appends, retained };
  }

  /** Commit mode: a list committed now waits for the window's end or the next turn. */
  gathering(): boolean {
    return this.#options.durability === "commit" && (this.#scheduled || (this.#window?.holds() ?? false));
  }

  stats(): SqliteStoreStats {
    const stats: SqliteStoreStats = {
      // Periodic: appends acknowledged but not yet flushed are in the log as far as
      // callers can tell (readLog returns them too).
      messages: this.#messages + this.#queuedAppends,
      bytes: this.#bytes,
      droppedMessages: this.#dropped,
      expiredMessages: this.#expired,
      transactions: this.#transactions,
      full: this.#overQuota || this.#failure instanceof StoreFullError,
    };
    const written = this.#bytesWritten();
    if (written !== undefined) stats.bytesWritten = written;
    return stats;
  }

  /**
   * Bytes this thread caused to be written to storage since open (the driver reads the
   * kernel's count; undefined where it cannot). Read at most once a second: the storage
   * thread reports stats with every commit, and an operator's counter needs no more.
   */
  #bytesWritten(fresh = false): number | undefined {
    const atOpen = this.#writtenAtOpen;
    if (atOpen === undefined) return undefined;
    const now = this.#now();
    if (fresh || now - this.#writtenReadAt >= 1000 || now < this.#writtenReadAt) {
      // After close the counter is gone, and the last reading stands.
      const total = this.#counter?.read();
      if (total !== undefined) this.#written = Math.max(0, total - atOpen);
      this.#writtenReadAt = now;
    }
    return this.#written;
  }

  #closeCounter(): void {
    this.#counter?.close();
    this.#counter = undefined;
  }

  close(): Promise<void> {
    if (this.#closed) return this.#closing ?? Promise.resolve();
    this.#closed = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#window?.stop();
    clearTimeout(this.#holding);
    this.#holding = undefined;
    // A checkpoint's database fsync must return before the last transaction (see #flush).
    const dbSyncing = this.#dbSyncing;
    if (!dbSyncing) return this.#closeNow();
    this.#closing = new Promise<void>((resolve) => dbSyncing.push(() => resolve())).then(() => this.#closeNow());
    return this.#closing;
  }

  #closeNow(): Promise<void> {
    const db = this.#db;
    if (!db) return Promise.resolve();
    // The last transaction fsyncs in line: nothing is left to wait for a background fsync,
    // and closing checkpoints the WAL, with FULL's fsyncs, anyway.
    if (this.#walSync) {
      try {
        db.exec("PRAGMA synchronous = FULL");
      } catch {
        // A broken database fails the flush below too, and that error is the one reported.
      }
    }
    const failure = this.#queue.length > 0 ? this.#flush() : undefined;
    const lost = this.#queue.length;
    this.#queue = [];
    this.#db = undefined;
    this.#s = undefined;
    // Everyone still waiting for a background fsync is covered by the FULL transaction just
    // made, or by the checkpoint of close() below.
    const waiting = [...(this.#syncing ?? []), ...this.#unsynced];
    if (this.#syncing) this.#syncing.length = 0;
    this.#syncing = undefined;
    this.#unsynced = [];
    let closeError: Error | undefined;
    try {
      db.close();
    } catch (error) {
      closeError = new Error(`SQLite store ${this.#path}: close failed: ${String(error)}`, { cause: error });
    }
    for (const settle of waiting) settle(closeError);
    this.#walSync?.close();
    this.#dbSync?.close();
    this.#bytesWritten(true); // the last reading stays in stats
    this.#closeCounter();
    if (closeError) return Promise.reject(closeError);
    if (failure && lost > 0) {
      return Promise.reject(
        new Error(`SQLite store ${this.#path}: closed with ${lost} acknowledged lists unwritten`, {
          cause: failure,
        }),
      );
    }
    return Promise.resolve();
  }

  /** Applies everything queued in one transaction. Returns the error if the transaction failed. */
  #flush(): Error | undefined {
    this.#scheduled = false;
    if (this.#syncBroken) {
      this.#refuseAll(this.#syncBroken);
      return this.#syncBroken;
    }
    const db = this.#db;
    // A checkpoint's database fsync runs: a transaction now could start the WAL over before
    // the database holds its pages durably. #synced flushes when it returns.
    if (!db || this.#dbSyncing) return undefined;
    const ttlDue = this.#options.messageTtlMs !== undefined && this.#now() >= this.#nextTtlCheck;
    if (this.#queue.length === 0 && !ttlDue) return undefined;
    if (this.#queue.length > 0) this.#window?.sent();
    const batch = this.#queue;
    this.#queue = [];
    const outcomes: Array<Error | undefined> = [];
    let result: BatchResult;
    try {
      result = db.transaction(() => this.#applyBatch(batch, outcomes, ttlDue));
    } catch (error) {
      const failure = this.#commitError(error);
      this.#failure = failure;
      this.#options.onFlush?.(failure);
      if (this.#options.durability === "periodic") {
        // Already acknowledged: keep them, in order, for the next attempt.
        this.#queue = batch.concat(this.#queue);
      } else if (this.#walSync) {
        // Refused after the lists before them are answered, so acks keep their order.
        this.#afterSync(() => {
          for (const queued of batch) settleQueued(queued, failure);
        });
      } else {
        for (const queued of batch) settleQueued(queued, failure);
      }
      return failure;
    }
    this.#transactions++;
    this.#failure = undefined;
    this.#queuedAppends = 0;
    this.#messages += result.added - result.dropped - result.expired;
    this.#dropped += result.dropped;
    this.#expired += result.expired;
    this.#highest = result.highest;
    this.#overQuota = result.overQuota;
    this.#bytes = result.bytes;
    if (ttlDue) {
      const ttl = this.#options.messageTtlMs!;
      const every = Math.min(60_000, Math.max(1000, ttl / 10));
      this.#nextTtlCheck = result.moreExpired ? 0 : this.#now() + every;
    }
    const settleBatch = (failure?: Error) => {
      for (let i = 0; i < batch.length; i++) {
        const error = failure ?? outcomes[i];
        if (!settleQueued(batch[i]!, error) && error) this.#options.onError?.(error);
      }
    };
    if (!this.#walSync) settleBatch();
    else if (this.#options.durability === "commit") this.#afterSync(settleBatch);
    else {
      // Periodic lists were acknowledged already: a failed fsync can only be reported, and
      // refuse appends until a flush succeeds (as a failed transaction does).
      settleBatch();
      this.#afterSync((failure) => {
        if (!failure) return;
        this.#failure = failure;
        this.#options.onFlush?.(failure);
        this.#options.onError?.(failure);
      });
    }
    this.#options.onFlush?.();
    return undefined;
  }

  /** The body of the group transaction. Throws only for errors that doom the whole batch. */
  #applyBatch(batch: Queued[], outcomes: Array<Error | undefined>, ttlDue: boolean): BatchResult {
    const s = this.#s!;
    const trimmer = this.#trimmer!;
    const max = this.#options.maxBytes;
    const r: BatchResult = {
      added: 0,
      highest: this.#highest,
      dropped: 0,
      expired: 0,
      moreExpired: false,
      overQuota: false,
      bytes: 0,
    };

    // Periodic lists were acknowledged already and must be written; only commit mode
    // can still refuse.
    let refuseAppends = false;
    if (max !== undefined && this.#options.durability === "commit" && trimmer.usedBytes() > max) {
      r.dropped += trimmer.trimToSize(this.#trimTarget(max), r.highest);
      refuseAppends = trimmer.usedBytes() > max;
    }

    // Lists without appends (acks, session changes) may release messages: an append after
    // them in the same batch is decided on what they left, as if they had their own
    // transaction. Otherwise a publish arriving just behind the acks that make room was
    // refused when both shared a batch.
    let released = false;
    // Writes of deliveries that complete within this batch (completed-deliveries.ts).
    const undone = undoneInBatch(batch);
    for (const queued of batch) {
      if (queued.appends && refuseAppends && released) {
        r.dropped += trimmer.trimToSize(this.#trimTarget(max!), r.highest);
        refuseAppends = trimmer.usedBytes() > max!;
        released = false;
      }
      if (queued.appends && refuseAppends) {
        outcomes.push(this.#quotaError());
        continue;
      }
      if (!queued.appends) released = true;
      const effect: MutationEffect = { added: 0, maxOffset: 0 };
      // A list of one single-statement mutation (most lists: one publish's append) is
      // atomic without a savepoint, since SQLite undoes a failed statement by itself.
      // Two statements fewer per message.
      const single = queued.mutations.length === 1 && !runsSeveralStatements(queued.mutations[0]!);
      if (!single) s.savepoint.run();
      try {
        for (const m of queued.mutations) if (!undone?.has(m)) s.apply(m, effect);
        if (!single) s.release.run();
      } catch (error) {
        if (!this.#isListLocal(error)) throw error;
        if (!single) {
          s.rollbackTo.run();
          s.release.run();
        }
        outcomes.push(error instanceof Error ? error : new Error(String(error)));
        continue;
      }
      outcomes.push(undefined);
      r.added += effect.added;
      if (effect.maxOffset > r.highest) r.highest = effect.maxOffset;
    }

    // Trimming after the lists lets acks in this very batch release their messages.
    if (ttlDue) {
      const cutoff = this.#now() - this.#options.messageTtlMs!;
      const expired = trimmer.trimExpired(cutoff, 10_000, r.highest);
      r.expired = expired.dropped;
      r.moreExpired = expired.more;
    }
    if (max !== undefined && trimmer.usedBytes() > max) {
      r.dropped += trimmer.trimToSize(this.#trimTarget(max), r.highest);
      r.overQuota = trimmer.usedBytes() > max;
    }
    r.bytes = trimmer.fileBytes();
    return r;
  }

  /** A little below the quota, so that a store at its limit does not trim on every commit. */
  #trimTarget(max: number): number {
    return max - Math.min(max / 20, 1 << 20);
  }

  #isListLocal(error: unknown): boolean {
    const code = this.#driver.resultCode(error);
    return code === undefined || LIST_LOCAL_CODES.has(code);
  }

  #quotaError(): StoreFullError {
    return new StoreFullError(
      `SQLite store ${this.#path} is over its quota of ${this.#options.maxBytes} bytes and every message ` +
        "in it is still owed to a session; refusing new messages until deliveries drain",
    );
  }

  #commitError(error: unknown): Error {
    const detail = error instanceof Error ? error.message : String(error);
    if (this.#driver.resultCode(error) === SQLITE_FULL) {
      return new StoreFullError(`SQLite store ${this.#path}: disk full (${detail})`, { cause: error });
    }
    return new Error(`SQLite store ${this.#path}: commit failed: ${detail}`, { cause: error });
  }

  #openError(error: unknown): Error {
    const detail = error instanceof Error ? error.message : String(error);
    const path = this.#path;
    switch (this.#driver.resultCode(error)) {
      case SQLITE_NOTADB:
        return new Error(
          `${path} is not a SQLite database (or it is encrypted or damaged); refusing to open it. ` +
            "Ferry never overwrites a file it did not create.",
          { cause: error },
        );
      case SQLITE_CORRUPT:
        return new Error(`${path} is damaged (${detail}); restore it from a backup or move it aside.`, {
          cause: error,
        });
      case SQLITE_BUSY:
      case SQLITE_LOCKED:
        return new Error(`${path} is locked by another process: is another Ferry using the same store?`, {
          cause: error,
        });
    }
    if (detail.includes(path)) return error instanceof Error ? error : new Error(detail);
    return new Error(`SQLite store ${path}: ${detail}`, { cause: error });
  }
}
