import type { Clock } from "./clock.ts";
import type { Logger } from "./logger.ts";
import type { Message } from "../store/store.ts";

/**
 * What the budget charges for the things it counts, in bytes, besides their payloads and
 * strings. Measured on Bun 1.4.4 (x64) with the runtime's heap statistics after a full collection
 * (test/memory-budget-costs.test.ts, which fails when a charge falls below what it
 * measures), then rounded up: a 64-byte message measured about 200 bytes with its payload,
 * a queued delivery about 90, an offline persistent session with one subscription about
 * 3,100 with the memory store's records (2,450 without), a connected client about 640
 * more on the JavaScript heap, besides Bun's own socket (about 0.6 KiB outside it).
 */
export const COSTS = {
  /** A message body held in memory: the Message object, its payload's Buffer and ArrayBuffer. */
  message: 256,
  /** A queued or in-flight delivery: its Outbound or Pending object and its slot in a queue or table. */
  entry: 128,
  /** A delivery of a recovered backlog not yet made into an object: its place in the store's columns (13 bytes). */
  column: 16,
  /** A connection: ClientConnection, its reader and the adapter's socket objects. */
  connection: 2048,
  /** A session: the Session object, its queue and tables, its expiry timer, its record in the memory store. */
  session: 2048,
  /**
   * A subscription: its one object, its levels in the topic tree and its place in the
   * session's list (491 B of heap each at 20,000, `scripts/measure-subscribe-heap.ts`),
   * plus the memory store's copy of its record (512 fell short by up to 17 B per offline
   * session in test/memory-budget-costs.test.ts); its filter strings are charged by length
   * (Router).
   */
  subscription: 768,
};

/** Bytes a message's body is charged (once, however many queues and tables hold it). */
export function bodyCost(m: Message): number {
  return m.payload.byteLength + 2 * m.topic.length + COSTS.message;
}

/** What queues, tables and indexes report to: the broker's MemoryBudget, or UNCOUNTED. */
export interface MemoryAccount {
  /** One more holder of `m`'s body (charged when it is the first). */
  hold(m: Message): void;
  release(m: Message): void;
  /** A queued or in-flight delivery entry, holding `m`'s body (none for an entry whose body is in the store). */
  holdEntry(m: Message | undefined): void;
  releaseEntry(m: Message | undefined): void;
  addMessages(delta: number): void;
  addClients(delta: number): void;
}

/** Counts nothing, and leaves messages' holder counts alone: for structures outside a broker, and ended sessions. */
export const UNCOUNTED: MemoryAccount = {
  hold() {},
  release() {},
  holdEntry() {},
  releaseEntry() {},
  addMessages() {},
  addClients() {},
};

/** A message as the budget sees it: how many holders its body has. */
interface Held {
  memoryHolders?: number;
}

/**
 * The memory budget (`limits.max_memory`, issue 13): what Ferry holds on behalf of its
 * clients, counted as it comes and goes, against one total.
 *
 * Counted:
 * - `messages`: message bodies held in memory — queued or in flight to a session, a loaded
 *   page of a session's queue, a retained message, a publish read and not yet acknowledged
 *   — once per body however many hold it (a reference count on the message), plus each
 *   queued or in-flight delivery at a fixed cost (COSTS);
 * - `clients`: connections, sessions and subscriptions at fixed costs;
 * - `output`: bytes waiting to be written to clients, as last seen (each connection's is
 *   refreshed when it is written to, when it drains while paused, and by `recount`);
 * - `input`: bytes read and not handled yet (incomplete packets, what a paused connection
 *   left unread, packets held behind a CONNECT).
 *
 * Levels, as fractions of the limit: at `high` (3/4) new connections are refused, and
 * messages that would be added to an offline (or stalled) session's queue, or queued at
 * QoS 0, are dropped and counted; at `full` (7/8) publishers are slowed (their acks held,
 * their reading paused; see ClientConnection.throttle) until the total is below `high`
 * again, or for `maxWaitMs` at most (`mqtt.stalled_subscriber_ms`: memory that nothing
 * frees, such as the queue of a subscriber that takes nothing, must not stop every
 * publisher for good); at the limit a PUBLISH is refused before it is routed (v5: 0x97;
 * 3.1.1: the connection is closed without an ack). What can pass the limit is what was
 * already read or written when it was reached: see the README, *Memory budget*.
 */
export class MemoryBudget implements MemoryAccount {
  messages = 0;
  clients = 0;
  output = 0;
  input = 0;
  /** The highest `used` seen since start (or `resetPeak`). */
  peak = 0;
  /** Connections slowed by the budget right now (ClientConnection.throttle). */
  throttled = 0;
  readonly high: number;
  readonly full: number;
  #waiters: Array<() => void> = [];
  #flushQueued = false;
  /** Releases the waiters after `maxWaitMs` if the total did not fall meanwhile. */
  #waitTimer: unknown = undefined;
  /** The warning about memory not freed is out (until the total falls below `high`). */
  #stuckWarned = false;
  #recountedAt = Number.NEGATIVE_INFINITY;

  constructor(
    /** `limits.max_memory`; 0: counted, never enforced. */
    readonly limit: number,
    private readonly clock: Clock,
    private readonly options: {
      /** Refreshes `output` from every connection (output that drained unseen counts until then). */
      readonly recountOutput?: () => void;
      /** The longest a waiter waits for the total to fall below `high`; 0: waiters go on at once. */
      readonly maxWaitMs?: number;
      readonly logger?: Logger;
    } = {},
  ) {
    this.high = limit > 0 ? Math.floor((limit * 3) / 4) : Number.POSITIVE_INFINITY;
    this.full = limit > 0 ? Math.floor((limit * 7) / 8) : Number.POSITIVE_INFINITY;
  }

  get used(): number {
    return this.messages + this.clients + this.output + this.input;
  }

  /** At or above `high` (refuse connections, drop offline-queue additions), recounting a stale output first. */
  get overHigh(): boolean {
    return this.#over(this.high);
  }

  /** At or above `full`: slow publishers. */
  get overFull(): boolean {
    return this.#over(this.full);
  }

  /** At or above the limit: refuse publishes. */
  get overLimit(): boolean {
    return this.limit > 0 && this.#over(this.limit);
  }

  #over(level: number): boolean {
    if (this.used < level) return false;
    // Output that went to the OS without the connection telling (it only does while
    // paused) still counts: look again, at most every few milliseconds.
    const now = this.clock.now();
    if (now - this.#recountedAt >= RECOUNT_EVERY_MS) this.recount(now);
    return this.used >= level;
  }

  /** Refresh the output of every connection (the broker's sweep, and `#over`). */
  recount(now = this.clock.now()): void {
    this.#recountedAt = now;
    this.options.recountOutput?.();
    this.#shrank();
  }

  // ---- counting -------------------------------------------------------------------------

  addMessages(delta: number): void {
    this.messages += delta;
    if (delta > 0) this.#grew();
    else this.#shrank();
  }

  addClients(delta: number): void {
    this.clients += delta;
    if (delta > 0) this.#grew();
    else this.#shrank();
  }

  addOutput(delta: number): void {
    this.output += delta;
    if (delta > 0) this.#grew();
    else if (delta < 0) this.#shrank();
  }

  addInput(delta: number): void {
    this.input += delta;
    if (delta > 0) this.#grew();
    else if (delta < 0) this.#shrank();
  }

  /** One more holder of `m`'s body: charged when it is the first. */
  hold(m: Message): void {
    const h = m as Message & Held;
    const n = h.memoryHolders;
    if (n === undefined || n === 0) {
      h.memoryHolders = 1;
      this.messages += bodyCost(m);
      this.#grew();
    } else h.memoryHolders = n + 1;
  }

  /** One holder fewer: `m`'s body is no longer charged once nobody holds it. */
  release(m: Message): void {
    const h = m as Message & Held;
    const n = h.memoryHolders ?? 0;
    if (n > 1) h.memoryHolders = n - 1;
    else if (n === 1) {
      h.memoryHolders = 0;
      this.messages -= bodyCost(m);
      this.#shrank();
    }
  }

  /** A delivery entry (queued or in flight) holding `m` (or, for a pending entry, no body). */
  holdEntry(m: Message | undefined): void {
    this.messages += COSTS.entry;
    if (m !== undefined) this.hold(m);
    else this.#grew();
  }

  releaseEntry(m: Message | undefined): void {
    this.messages -= COSTS.entry;
    if (m !== undefined) this.release(m);
    else this.#shrank();
  }

  resetPeak(): void {
    this.peak = this.used;
  }

  #grew(): void {
    const used = this.messages + this.clients + this.output + this.input;
    if (used > this.peak) this.peak = used;
  }

  // ---- waiting for room -----------------------------------------------------------------

  /**
   * Call `fn` once the total is below `high` (at once, on a later microtask, if it is now),
   * or once `maxWaitMs` passed, whichever comes first.
   */
  whenBelowHigh(fn: () => void): void {
    this.#waiters.push(fn);
    if (this.#waitTimer === undefined) {
      const wait = this.options.maxWaitMs ?? 0;
      this.#waitTimer = this.clock.setTimeout(() => {
        this.#waitTimer = undefined;
        if (this.#waiters.length === 0) return;
        if (!this.#stuckWarned) {
          this.#stuckWarned = true;
          this.options.logger?.warn(
            `memory budget: ${mib(this.used)} of ${mib(this.limit)} MiB (limits.max_memory) held and not freed for ` +
              `${wait} ms (a subscriber that takes nothing? see $SYS/broker/memory/…): publishers are slowed, not ` +
              `stopped, and publishes past the budget are refused`,
          );
        }
        this.#flush();
      }, wait);
    }
    this.#shrank();
  }

  get waiting(): number {
    return this.#waiters.length;
  }

  #shrank(): void {
    if (this.#waiters.length === 0 || this.#flushQueued || this.used >= this.high) return;
    this.#flushQueued = true;
    // On a fresh stack: releases come from deep inside acks and writes.
    queueMicrotask(() => {
      this.#flushQueued = false;
      if (this.used >= this.high) return;
      this.#stuckWarned = false;
      this.#flush();
    });
  }

  /** The broker stops: nobody waits any more. */
  close(): void {
    this.#flush();
  }

  #flush(): void {
    if (this.#waitTimer !== undefined) {
      this.clock.clearTimeout(this.#waitTimer);
      this.#waitTimer = undefined;
    }
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const fn of waiters) fn();
  }
}

const mib = (bytes: number) => (bytes / (1024 * 1024)).toFixed(1);

/** How often `output` may be recounted when a level is reached. */
const RECOUNT_EVERY_MS = 10;
