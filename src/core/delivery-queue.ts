import { type Message, type Mutation, type QoS, QUEUED_RETAIN, type QueuedDeliveries } from "../store/store.ts";
import { COSTS, type MemoryAccount, UNCOUNTED } from "./memory-budget.ts";
import type { EncodeCache } from "./outbound-encoder.ts";

/** One message owed to a session, in its queue or in flight. */
export interface Outbound {
  message: Message;
  qos: QoS;
  /** RETAIN flag to send (retain-as-published already applied). */
  retain: boolean;
  subscriptionIds: number[] | undefined;
  packetId: number;
  phase: "queued" | "sent" | "pubrel";
  /** `group\0filter` of the shared subscription it came through, for redistribution. */
  shareKey: string | undefined;
  /**
   * The message's encodings, shared with the other deliveries of the same publish, so a
   * copy sent later from the queue is patched, not encoded again. Dropped once sent.
   */
  cache?: EncodeCache | undefined;
  /**
   * The commit that writes this delivery's record, when it was made outside a publish's
   * commit (a retained message on SUBSCRIBE, a shared message handed over) and may not be
   * durable yet. A QoS 2 PUBLISH to a persistent session waits for it (OutboundFlow#transmit).
   * A pending entry's delivery never needs it: its body is read after that commit.
   */
  recordCommit?: Promise<void> | undefined;
  /** Phase "pubrel" and its PUBREL still waiting for the commit that makes the phase durable. */
  releasePending?: boolean;
  /**
   * Its "sent" mark, while it may still wait in WriteBehind: the deletion or the "pubrel"
   * phase that follows makes it unnecessary (WriteBehind.supersede).
   */
  sentMark?: Mutation | undefined;
}

/**
 * A queued delivery whose message body is in the store rather than in memory: recovered
 * after a restart, set aside while its session was offline, or a retained message matched
 * on SUBSCRIBE whose body was not in memory. A loader reads the bodies a page at a time
 * as the queue drains (issue 13).
 */
export class Pending {
  /** The delivery, once the loader has read its message. */
  loaded: Outbound | undefined = undefined;
  /** The loader found no such message (a store that refused it, or a retained message cleared since). */
  gone = false;

  constructor(
    /** The message's log offset; 0 for a retained message read by `topic`. */
    readonly offset: number,
    /** The topic whose retained message to read, when `offset` is 0. */
    readonly topic: string | undefined,
    /** Payload bytes, for the queue's byte bound. */
    readonly bytes: number,
    readonly qos: QoS,
    readonly retain: boolean,
    readonly subscriptionIds: number[] | undefined,
  ) {}

  /** The delivery of `message` this entry stands for. */
  deliveryOf(message: Message): Outbound {
    return {
      message,
      qos: this.qos,
      retain: this.retain,
      subscriptionIds: this.subscriptionIds,
      packetId: 0,
      phase: "queued",
      shareKey: undefined,
      cache: undefined,
    };
  }

  /** Pending and not read yet. */
  get unread(): boolean {
    return this.loaded === undefined && !this.gone;
  }
}

/** An entry of a session's queue: a delivery in memory, or one whose body is in the store. */
export type Queued = Outbound | Pending;

/**
 * Entries read from the store at a time (and made into objects from a recovered backlog
 * at a time). A read can wait behind a commit's fsync on the storage thread, so a page
 * must last longer than that while a session drains: 256 stalled a drain at ~20,000
 * messages/s on a busy machine, 1024 did not. Pages are also bounded in bytes (the loader).
 */
export const PAGE = 1024;

/**
 * A session's queue, oldest first, in three parts: a page of the recovered backlog made into
 * entries, the rest of that backlog still in the store's columns (13 bytes per message, no
 * object), then everything queued since. Byte and count totals cover all three. What it
 * holds in memory is reported to `account` (the memory budget): each entry, each body in
 * memory, and the columns.
 */
export class DeliveryQueue {
  /** Entries made from the recovered backlog, not yet taken. */
  #front: Pending[] = [];
  #frontHead = 0;
  /** The recovered backlog not made into entries yet: `#run` from index `#runNext`. */
  #run: QueuedDeliveries | undefined;
  #runNext = 0;
  /** Entries queued since recovery. */
  #back: Queued[] = [];
  #backHead = 0;
  #bytes = 0;

  constructor(public account: MemoryAccount = UNCOUNTED) {}

  get length(): number {
    return this.#front.length - this.#frontHead + this.#runLeft() + this.#back.length - this.#backHead;
  }

  /** Payload bytes of everything queued. */
  get bytes(): number {
    return this.#bytes;
  }

  /** A recovered backlog: older than anything queued, so it must be adopted first. */
  adopt(run: QueuedDeliveries): void {
    if (this.length > 0) throw new Error("a recovered backlog goes into an empty queue");
    if (run.length === 0) return;
    this.#run = run;
    this.#runNext = 0;
    for (let i = 0; i < run.length; i++) this.#bytes += run.bytes[i]!;
    this.account.addMessages(run.length * COSTS.column);
  }

  push(e: Queued): void {
    this.#back.push(e);
    this.#bytes += sizeOf(e);
    this.account.holdEntry(bodyOf(e));
  }

  /** The loader read pending entry `p`'s message: `o` is its delivery, in memory from now on. */
  fill(p: Pending, o: Outbound): void {
    p.loaded = o;
    this.account.hold(o.message);
  }

  /** The oldest entry, or undefined when empty. */
  peek(): Queued | undefined {
    if (this.#frontHead === this.#front.length && this.#runLeft() > 0) this.#materialize(PAGE);
    return this.#frontHead < this.#front.length ? this.#front[this.#frontHead] : this.#back[this.#backHead];
  }

  /** Removes the entry `peek` returned. */
  shift(): void {
    let e: Queued | undefined;
    if (this.#frontHead < this.#front.length) {
      e = this.#front[this.#frontHead];
      this.#front[this.#frontHead++] = undefined as unknown as Pending; // free the reference
    } else {
      e = this.#back[this.#backHead];
      if (e === undefined) return;
      this.#back[this.#backHead++] = undefined as unknown as Queued;
      // Compact now and then so the array does not grow without bound.
      if (this.#backHead > 1024 && this.#backHead * 2 > this.#back.length) {
        this.#back = this.#back.slice(this.#backHead);
        this.#backHead = 0;
      }
    }
    if (e !== undefined) {
      this.#bytes -= sizeOf(e);
      this.account.releaseEntry(bodyOf(e));
    }
  }

  /** Whether the entry `distance` places behind the oldest is a pending one not read yet. */
  unreadAt(distance: number): boolean {
    const front = this.#front.length - this.#frontHead;
    if (distance < front) return this.#front[this.#frontHead + distance]!.unread;
    if (distance < front + this.#runLeft()) return true;
    const e = this.#back[this.#backHead + distance - front - this.#runLeft()];
    return e instanceof Pending && e.unread;
  }

  /**
   * Up to `max` pending entries not read yet, oldest first, holding at most `maxBytes` of
   * payload (at least one): the loader's next read. Only the first few pages are looked at:
   * pending entries are the recovered backlog, or behind the first PAGE entries of an
   * offline session.
   */
  unreadPage(max: number, maxBytes: number): Pending[] {
    const page: Pending[] = [];
    let bytes = 0;
    const take = (e: Queued | undefined): boolean => {
      if (!(e instanceof Pending) || !e.unread) return true;
      if (page.length > 0 && bytes + e.bytes > maxBytes) return false;
      page.push(e);
      bytes += e.bytes;
      return page.length < max;
    };
    for (let i = this.#frontHead; i < this.#front.length; i++) if (!take(this.#front[i])) return page;
    if (this.#runLeft() > 0) {
      const from = this.#front.length;
      this.#materialize(max - page.length);
      for (let i = from; i < this.#front.length; i++) if (!take(this.#front[i])) return page;
      return page;
    }
    const end = Math.min(this.#back.length, this.#backHead + max + 2 * PAGE);
    for (let i = this.#backHead; i < end; i++) if (!take(this.#back[i])) return page;
    return page;
  }

  /** The first `max` entries, oldest first, without taking them (admin views). */
  head(max: number): Queued[] {
    const out: Queued[] = this.#front.slice(this.#frontHead, this.#frontHead + max);
    const run = this.#run;
    for (let i = this.#runNext; run && i < run.length && out.length < max; i++) out.push(entryOf(run, i));
    if (out.length < max) out.push(...this.#back.slice(this.#backHead, this.#backHead + max - out.length));
    return out;
  }

  /** Entries whose message is in memory: for tests of the memory bound. */
  resident(): number {
    let n = 0;
    for (let i = this.#frontHead; i < this.#front.length; i++) if (this.#front[i]!.loaded !== undefined) n++;
    for (let i = this.#backHead; i < this.#back.length; i++) {
      const e = this.#back[i]!;
      if (!(e instanceof Pending) || e.loaded !== undefined) n++;
    }
    return n;
  }

  /**
   * Keeps the first `entries` entries (within `bytes` of payload) as they are, and replaces
   * each later one for which `setAside` gives a pending entry (the session went offline;
   * see Session.setAsideQueue).
   */
  setAside(entries: number, bytes: number, setAside: (e: Queued) => Pending | undefined): void {
    let kept = this.#front.length - this.#frontHead + this.#runLeft();
    let keptBytes = 0;
    for (let i = this.#backHead; i < this.#back.length; i++) {
      const e = this.#back[i]!;
      if (kept < entries && keptBytes < bytes) {
        kept++;
        keptBytes += sizeOf(e);
        continue;
      }
      const pending = setAside(e);
      if (pending) {
        this.#back[i] = pending;
        // An entry for an entry; the body goes back to the store.
        const body = bodyOf(e);
        if (body !== undefined) this.account.release(body);
      }
    }
  }

  /** Removes and returns the entries `pick` chooses (only entries queued since recovery qualify). */
  take(pick: (e: Queued) => e is Outbound): Outbound[] {
    const taken: Outbound[] = [];
    const kept: Queued[] = [];
    for (let i = this.#backHead; i < this.#back.length; i++) {
      const e = this.#back[i]!;
      if (pick(e)) taken.push(e);
      else kept.push(e);
    }
    if (taken.length === 0) return taken;
    this.#back = kept;
    this.#backHead = 0;
    for (const e of taken) {
      this.#bytes -= sizeOf(e);
      this.account.releaseEntry(e.message);
    }
    return taken;
  }

  /**
   * Gives back what the queue holds to its account, which it then stops reporting to: the
   * session ended, and the queue goes with it.
   */
  release(): void {
    const account = this.account;
    this.account = UNCOUNTED;
    for (let i = this.#frontHead; i < this.#front.length; i++) account.releaseEntry(bodyOf(this.#front[i]!));
    account.addMessages(-this.#runLeft() * COSTS.column);
    for (let i = this.#backHead; i < this.#back.length; i++) account.releaseEntry(bodyOf(this.#back[i]!));
  }

  #runLeft(): number {
    return this.#run ? this.#run.length - this.#runNext : 0;
  }

  /** Makes up to `n` more entries of the recovered backlog into pending entries at the end of `#front`. */
  #materialize(n: number): void {
    const run = this.#run;
    if (!run) return;
    if (this.#frontHead > 0) {
      this.#front = this.#front.slice(this.#frontHead);
      this.#frontHead = 0;
    }
    const end = Math.min(run.length, this.#runNext + n);
    for (let i = this.#runNext; i < end; i++) this.#front.push(entryOf(run, i));
    // From the columns into objects.
    this.account.addMessages((end - this.#runNext) * (COSTS.entry - COSTS.column));
    this.#runNext = end;
    if (end === run.length) this.#run = undefined; // its buffers can go
  }
}

function entryOf(run: QueuedDeliveries, i: number): Pending {
  const flags = run.flags[i]!;
  return new Pending(
    run.offsets[i]!,
    undefined,
    run.bytes[i]!,
    (flags & 3) as QoS,
    (flags & QUEUED_RETAIN) !== 0,
    run.subscriptionIds.get(i),
  );
}

/** The message body `e` holds in memory, if any. */
function bodyOf(e: Queued): Message | undefined {
  return e instanceof Pending ? e.loaded?.message : e.message;
}

export function sizeOf(e: Queued): number {
  return e instanceof Pending ? e.bytes : e.message.payload.byteLength;
}
