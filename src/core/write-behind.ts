import type { Message, Mutation, Recovered, Store, StoreStats } from "../store/store.ts";
import type { Clock } from "./clock.ts";

/**
 * The kernel's view of the store, with one addition: `later`, for writes nothing waits
 * for — a delivery's "sent" mark (only the DUP flag of a re-send after a restart depends on
 * it) and a completed delivery's deletion. Those wait here until the next `commit` that
 * something does wait for, and go to the store just before it, as a list of their own in the
 * same turn, so both share one transaction and its fsync (the threaded store packs a turn's
 * lists into one batch, each list keeping its own outcome: a refused append never takes a
 * deletion down with it). With nothing to ride on they go after `delayMs`.
 *
 * Why (issue 19): draining QoS 2 to a persistent session, each window of messages needs one
 * durable step (the "pubrel" phase before the PUBRELs). The deletions and "sent" marks of the
 * previous window, written on their own, started a transaction just before it, so every
 * window waited for two transactions in a row instead of one.
 *
 * A "sent" mark often has a newer write of the same row behind it before it is written: the
 * delivery's deletion once it is acknowledged, or its "pubrel" phase (which records the packet
 * id as well). `supersede` drops such a mark while it still waits here, so a drained message
 * costs one statement fewer on the storage thread (issue 19: a QoS 1 delivery acknowledged
 * within `delayMs` is one DELETE, a QoS 2 delivery one UPDATE and one DELETE). A mark that
 * has left already (handed over while the store gathers, below) is caught by the store
 * instead, when the newer write shares its transaction (store/sqlite/completed-deliveries.ts);
 * dropping it here also saves encoding it and carrying it to the storage thread.
 *
 * Order is kept: a `later` list goes to the store before any `commit` made after it, so
 * "a commit has settled, so everything handed in before it is durable" still holds.
 * `delayMs` 0 writes at once (memory and periodic durability, where nothing waits for a
 * transaction anyway).
 *
 * While the store is `gathering` (its commit window runs, or a batch goes at the end of this
 * turn), `later` lists go as soon as the task that made them is done: they wait there for a
 * transaction that is coming anyway. Why
 * (issue 14, flash wear): a completed delivery's deletion that waited here missed the
 * window's transaction, which then wrote the delivery its message had just created, and the
 * next one deleted it: two pages of the deliveries table and its index in every commit, for
 * rows that, handed over in time, cancel out in one transaction (completed-deliveries.ts).
 */
export class WriteBehind implements Store {
  #pending: Mutation[] = [];
  /** Pending writes made unnecessary by newer ones of the same row (see supersede). */
  #superseded: Set<Mutation> | undefined;
  #settle: ReturnType<typeof Promise.withResolvers<void>> | undefined;
  #timer: unknown;
  /** A hand-over at the end of this task is queued (the store is gathering). */
  #soon = false;

  constructor(private readonly store: Store, private readonly clock: Clock, private readonly delayMs: number) {}

  get kind(): string {
    return this.store.kind;
  }

  open(): Promise<Recovered> {
    return this.store.open();
  }

  commit(mutations: readonly Mutation[]): Promise<void> {
    if (this.#pending.length > 0) this.#flush();
    return this.store.commit(mutations);
  }

  /** Write `mutations` with the next commit, or after `delayMs`; resolves once durable. */
  later(mutations: readonly Mutation[]): Promise<void> {
    if (this.delayMs <= 0) return this.store.commit(mutations);
    for (const m of mutations) this.#pending.push(m);
    this.#settle ??= Promise.withResolvers<void>();
    if (this.store.gathering?.() === true) {
      // Once the task that made it is done: all the bookkeeping of one socket read (a
      // subscriber's PUBACKs arrive many to a read while it drains) goes as one list, not a
      // list (and a promise to settle) per acknowledgement.
      if (!this.#soon) {
        this.#soon = true;
        queueMicrotask(this.#handOver);
      }
    } else {
      this.#timer ??= this.clock.setTimeout(() => {
        this.#timer = undefined;
        this.#handOver();
      }, this.delayMs);
    }
    return this.#settle.promise;
  }

  /**
   * `m`, handed to `later`, need not be written: a write made after it leaves the row as if
   * it had been. The caller makes sure of that, and that the newer write follows it: in the
   * same pending list (a deletion) or in a `commit`, which writes what waits here first.
   * A mark written already is left alone.
   */
  supersede(m: Mutation): void {
    if (this.#pending.length === 0) return;
    (this.#superseded ??= new Set()).add(m);
  }

  readonly #handOver = (): void => {
    this.#soon = false;
    if (this.#pending.length > 0) this.#flush();
  };

  #flush(): void {
    let mutations = this.#pending;
    const superseded = this.#superseded;
    if (superseded !== undefined) {
      this.#superseded = undefined;
      mutations = mutations.filter((m) => !superseded.has(m));
    }
    const settle = this.#settle!;
    this.#pending = [];
    this.#settle = undefined;
    if (this.#timer !== undefined) {
      this.clock.clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    // All of them superseded: the writes that stand in for them carry their own outcome.
    if (mutations.length === 0) settle.resolve();
    else this.store.commit(mutations).then(settle.resolve, settle.reject);
  }

  readLog(from: number, limit: number): Promise<Message[]> {
    return this.store.readLog(from, limit);
  }

  /**
   * Bodies by offset. Writes waiting here are only "sent" marks and deletions of deliveries,
   * which a body read does not depend on; so they stay behind (a read does not cost a flush).
   */
  readMessages(offsets: readonly number[]): Promise<Message[]> {
    return this.store.readMessages(offsets);
  }

  readRetained(topics: readonly string[]): Promise<Message[]> {
    return this.store.readRetained(topics);
  }

  get offloadsBodies(): boolean {
    return this.store.offloadsBodies;
  }

  stats(): StoreStats {
    return this.store.stats();
  }

  gathering(): boolean {
    return this.store.gathering?.() === true;
  }

  close(): Promise<void> {
    if (this.#pending.length > 0) this.#flush();
    return this.store.close();
  }
}
