import { decodeMessagePage } from "../message-page-codec.ts";
import { MutationWriter } from "../mutation-codec.ts";
import { addsToLog, type Message, type Mutation, type Recovered, type Store, StoreFullError } from "../store.ts";
import { CommitWindow, isBookkeeping } from "./commit-window.ts";
import type { SqliteStoreStats } from "./sqlite-store.ts";
import type { FromStoreThread, ThreadPort, ThreadStoreOptions, ToStoreThread, WireError } from "./thread-protocol.ts";

/** The event loop's end of the storage thread: a Worker running `serveSqliteStore`. */
export interface StoreThread extends ThreadPort {
  onerror: ((event: ErrorEvent) => void) | null;
  terminate(): void;
}

export interface ThreadedStoreOptions extends ThreadStoreOptions {
  /** Told once if the thread dies; every later call fails. The broker cannot persist anymore. */
  onFatal?: (error: Error) => void;
  /** Periodic mode: told about a flush that failed, or a list refused after it was acknowledged. */
  onError?: (error: Error) => void;
}

interface Waiting {
  resolve: () => void;
  reject: (error: Error) => void;
}

/** The next turn of the event loop, after pending I/O callbacks: their lists join one message. */
const defer: (fn: () => void) => void = typeof setImmediate === "function"
  ? (fn) => setImmediate(fn)
  : (fn) => setTimeout(fn, 0);

/** The largest batch buffer kept for reuse; a bigger one (a burst of large messages) is let go. */
const SPARE_MAX_BYTES = 1 << 20;

const EMPTY_STATS: SqliteStoreStats = {
  messages: 0,
  bytes: 0,
  droppedMessages: 0,
  expiredMessages: 0,
  transactions: 0,
  full: false,
};

/**
 * The SQLite store with its statements and fsyncs on a thread of their own.
 *
 * Why: bun:sqlite and node:sqlite are synchronous. In-thread, every group commit stops
 * the event loop for its statements (its fsync no longer: `syncInBackground` in
 * sqlite-store.ts, the default since stop 28). This thread, `storage.writer_thread: true`,
 * takes the statements off the loop too, which keeps delivery latency low when the loop is
 * saturated, for about 7 MB more RSS and more CPU per message at low rates. Here the event
 * loop only encodes mutation lists into one buffer (`mutation-codec.ts`) and transfers
 * it; the thread applies them with the same SqliteStore, one transaction per batch, and
 * answers per list. A list's promise still resolves only after its transaction is
 * durable, so PUBACK/PUBREC keep waiting for the disk.
 *
 * At most one batch is in flight: lists that arrive while the thread commits gather in
 * the next batch, which goes as soon as the answer comes (issue 14: posting every turn's
 * lists put 3-7 batches in the thread's queue per transaction, and postMessage was the
 * largest JavaScript cost at low rates). The answer brings the batch's buffer back for
 * the one after. With `commitWindowMs`, a batch goes no sooner than that after the one
 * before it, unless EARLY_COMMIT_LISTS lists wait (commit-window.ts). Reads and close() send
 * what is gathered at once, since they must see it.
 *
 * `stats()` is synchronous for the broker, so it returns the thread's figures as of
 * its latest answer.
 */
export class ThreadedSqliteStore implements Store {
  readonly kind = "sqlite";
  readonly offloadsBodies = true;
  readonly #thread: StoreThread;
  readonly #options: ThreadedStoreOptions;
  #writer = new MutationWriter();
  #waiting: Waiting[] = [];
  /** A send on the next turn is scheduled. */
  #scheduled = false;
  /** Commit mode with `commitWindowMs`: lists that come while it runs wait for its end. */
  readonly #window: CommitWindow | undefined;
  /** The buffer of an answered batch, for the next one. */
  #spare: ArrayBuffer | undefined;
  #seq = 0;
  /**
   * Batches sent and not yet answered, oldest first, as parallel queues (seq, then its
   * lists' callers). Not a Map: one entry added and removed per batch made JavaScriptCore
   * chain its replaced hash tables, which kept answered batches (and their promises) alive
   * across minor collections (see src/core/inflight-table.ts).
   */
  #inFlightSeqs: number[] = [];
  #inFlightWaiting: Waiting[][] = [];
  #reads = new Map<number, { resolve: (m: Message[]) => void; reject: (e: Error) => void }>();
  #nextReadId = 0;
  #stats: SqliteStoreStats = EMPTY_STATS;
  #opening: { resolve: (r: Recovered) => void; reject: (e: Error) => void } | undefined;
  #closing: { resolve: () => void; reject: (e: Error) => void } | undefined;
  #opened = false;
  #closed = false;
  #dead: Error | undefined;
  /** Periodic: the last flush failed with this; cleared by the next one that commits. */
  #flushFailure: Error | undefined;

  constructor(thread: StoreThread, options: ThreadedStoreOptions) {
    this.#thread = thread;
    this.#options = options;
    const ms = options.durability === "commit" ? options.commitWindowMs ?? 0 : 0;
    this.#window = ms > 0 ? new CommitWindow(ms, this.#windowPassed) : undefined;
    thread.onmessage = (event) => this.#onMessage(event.data as FromStoreThread);
    thread.onerror = (event) => {
      // An uncaught error in the thread ends it; nothing more will be committed.
      event.preventDefault?.();
      this.#die(new Error(`SQLite store ${options.path}: storage thread failed: ${event.message}`));
    };
  }

  open(): Promise<Recovered> {
    if (this.#opened || this.#closed || this.#opening) {
      return Promise.reject(new Error(`SQLite store ${this.#options.path}: open() may be called once per instance`));
    }
    if (this.#dead) return Promise.reject(this.#dead);
    // The window is this side's business: the thread commits each batch as it comes.
    const { onFatal: _f, onError: _e, commitWindowMs: _w, ...options } = this.#options;
    return new Promise<Recovered>((resolve, reject) => {
      this.#opening = { resolve, reject };
      this.#post({ t: "open", options });
    });
  }

  commit(mutations: readonly Mutation[]): Promise<void> {
    if (this.#dead) return Promise.reject(this.#dead);
    if (!this.#opened || this.#closed) {
      return Promise.reject(new Error(`SQLite store ${this.#options.path} is not open`));
    }
    if (this.#options.durability === "periodic") return this.#commitPeriodic(mutations);
    // withResolvers rather than `new Promise(executor)`: no executor closure and scope, and
    // its result serves as the Waiting entry itself (one commit per QoS>0 message).
    const waiting = Promise.withResolvers<void>();
    this.#enqueue(mutations, waiting);
    return waiting.promise;
  }

  /**
   * Periodic mode acknowledges at once, as the in-thread store does, so a publish never
   * waits for the thread, which may be busy with a whole interval's flush. A refusal
   * is decided now from the thread's latest report, as the in-thread store decides it
   * from its last flush.
   */
  #commitPeriodic(mutations: readonly Mutation[]): Promise<void> {
    const appends = mutations.some(addsToLog);
    if (appends && this.#flushFailure) return Promise.reject(this.#flushFailure);
    if (appends && this.#stats.full) {
      return Promise.reject(
        new StoreFullError(
          `SQLite store ${this.#options.path} is full (quota or disk); refusing new messages until deliveries drain`,
        ),
      );
    }
    this.#enqueue(mutations, this.#acknowledged);
    return Promise.resolve();
  }

  /** Periodic lists were acknowledged already: a late refusal can only be reported. */
  readonly #acknowledged: Waiting = {
    resolve: () => {},
    reject: (error) => this.#options.onError?.(error),
  };

  #enqueue(mutations: readonly Mutation[], waiting: Waiting): void {
    this.#writer.add(mutations);
    this.#waiting.push(waiting);
    // Sent later: with the next turn, or when the batch in flight is answered, or at the end
    // of the window.
    if (this.#scheduled) return;
    const held = this.#window?.admit(isBookkeeping(mutations)) ?? false;
    if (held || this.#inFlightSeqs.length > 0) return;
    this.#scheduled = true;
    defer(this.#sendScheduled);
  }

  readonly #windowPassed = (): void => {
    if (this.#waiting.length > 0 && this.#inFlightSeqs.length === 0 && !this.#scheduled) this.#send();
  };

  /** The end of the turn in which lists were gathered; unless a batch went out meanwhile. */
  readonly #sendScheduled = (): void => {
    if (!this.#scheduled) return;
    this.#scheduled = false;
    if (this.#inFlightSeqs.length === 0) this.#send();
  };

  readLog(from: number, limit: number): Promise<Message[]> {
    if (limit <= 0) return this.#dead ? Promise.reject(this.#dead) : Promise.resolve([]);
    return this.#read((id) => ({ t: "read", id, from, limit }));
  }

  readMessages(offsets: readonly number[]): Promise<Message[]> {
    if (offsets.length === 0) return this.#dead ? Promise.reject(this.#dead) : Promise.resolve([]);
    return this.#read((id) => ({ t: "read-messages", id, offsets }));
  }

  readRetained(topics: readonly string[]): Promise<Message[]> {
    if (topics.length === 0) return this.#dead ? Promise.reject(this.#dead) : Promise.resolve([]);
    return this.#read((id) => ({ t: "read-retained", id, topics }));
  }

  #read(request: (id: number) => ToStoreThread): Promise<Message[]> {
    if (this.#dead) return Promise.reject(this.#dead);
    if (!this.#opened || this.#closed) {
      return Promise.reject(new Error(`SQLite store ${this.#options.path} is not open`));
    }
    // Lists committed before this read go first, so the thread sees them in order.
    this.#send();
    const id = this.#nextReadId++;
    return new Promise<Message[]>((resolve, reject) => {
      this.#reads.set(id, { resolve, reject });
      this.#post(request(id));
    });
  }

  stats(): SqliteStoreStats {
    return this.#stats;
  }

  /**
   * A list committed now joins a batch that goes anyway: the window's, or the one scheduled
   * for the end of this turn. (Not merely one behind a batch in flight: with no window, that
   * batch goes when the answer comes, possibly with nothing else in it.)
   */
  gathering(): boolean {
    return this.#scheduled || (this.#window?.holds() ?? false);
  }

  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    if (this.#dead || !this.#opened) {
      this.#thread.terminate();
      return Promise.resolve();
    }
    this.#send();
    return new Promise<void>((resolve, reject) => {
      this.#closing = { resolve, reject };
      this.#post({ t: "close" });
    });
  }

  /** Hands the lists gathered so far to the thread as one transferred buffer. */
  #send(): void {
    this.#scheduled = false;
    if (this.#waiting.length === 0 || this.#dead) return;
    this.#window?.sent();
    const encoded = this.#writer.finish();
    const seq = this.#seq++;
    this.#inFlightSeqs.push(seq);
    this.#inFlightWaiting.push(this.#waiting);
    this.#writer.restart(this.#spare, Math.max(1024, Math.min(encoded.length * 2, SPARE_MAX_BYTES)));
    this.#spare = undefined;
    this.#waiting = [];
    this.#post({ t: "commit", seq, encoded }, [encoded.buffer]);
  }

  #post(message: ToStoreThread, transfer?: ArrayBuffer[]): void {
    try {
      this.#thread.postMessage(message, transfer);
    } catch (error) {
      this.#die(new Error(`SQLite store ${this.#options.path}: cannot reach the storage thread: ${String(error)}`));
    }
  }

  #onMessage(reply: FromStoreThread): void {
    switch (reply.t) {
      case "opened":
        this.#opened = true;
        this.#stats = reply.stats;
        this.#opening?.resolve(reply.recovered);
        this.#opening = undefined;
        return;
      case "open-failed":
        this.#opening?.reject(fromWire(reply.error));
        this.#opening = undefined;
        // Nothing was opened; the thread has no more work.
        this.#closed = true;
        this.#thread.terminate();
        return;
      case "committed": {
        this.#stats = reply.stats;
        // The thread answers batches in the order sent, so this is nearly always the first.
        const at = this.#inFlightSeqs.indexOf(reply.seq);
        const waiting = at === -1 ? [] : this.#inFlightWaiting[at]!;
        if (at !== -1) {
          this.#inFlightSeqs.splice(at, 1);
          this.#inFlightWaiting.splice(at, 1);
        }
        // A buffer that grew for a burst is not kept (the memory it holds would stay).
        if (reply.buffer !== undefined && reply.buffer.byteLength <= SPARE_MAX_BYTES) this.#spare = reply.buffer;
        // The thread is free: what gathered meanwhile starts its transaction before the
        // callers below run (their lists go with the batch after).
        if (
          this.#waiting.length > 0 && this.#inFlightSeqs.length === 0 && !this.#scheduled &&
          !this.#window?.holds()
        ) this.#send();
        const outcomes = reply.outcomes;
        for (let i = 0; i < waiting.length; i++) {
          const error = outcomes?.[i];
          if (error) waiting[i]!.reject(fromWire(error));
          else waiting[i]!.resolve();
        }
        return;
      }
      case "read": {
        const read = this.#reads.get(reply.id);
        this.#reads.delete(reply.id);
        let messages: Message[];
        try {
          messages = decodeMessagePage(reply.page);
        } catch (error) {
          read?.reject(error instanceof Error ? error : new Error(String(error)));
          return;
        }
        read?.resolve(messages);
        return;
      }
      case "read-failed":
        this.#reads.get(reply.id)?.reject(fromWire(reply.error));
        this.#reads.delete(reply.id);
        return;
      case "flushed":
        this.#stats = reply.stats;
        this.#flushFailure = reply.error ? fromWire(reply.error) : undefined;
        if (this.#flushFailure) this.#options.onError?.(this.#flushFailure);
        return;
      case "list-error":
        this.#options.onError?.(fromWire(reply.error));
        return;
      case "closed":
        this.#thread.terminate();
        if (reply.error) this.#closing?.reject(fromWire(reply.error));
        else this.#closing?.resolve();
        this.#closing = undefined;
        return;
    }
  }

  /** The thread is gone: fail everything waiting and everything after. */
  #die(error: Error): void {
    if (this.#dead) return;
    this.#dead = error;
    this.#thread.terminate();
    this.#opening?.reject(error);
    this.#closing?.reject(error);
    for (const waiting of this.#inFlightWaiting) for (const w of waiting) w.reject(error);
    for (const w of this.#waiting) w.reject(error);
    for (const r of this.#reads.values()) r.reject(error);
    this.#inFlightSeqs = [];
    this.#inFlightWaiting = [];
    this.#waiting = [];
    this.#reads.clear();
    this.#window?.stop();
    this.#options.onFatal?.(error);
  }
}

function fromWire(error: WireError): Error {
  if (error.name === "StoreFullError") return new StoreFullError(error.message);
  const e = new Error(error.message);
  if (error.name !== "Error") e.name = error.name;
  return e;
}
