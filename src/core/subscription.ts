import type { QoS, SubscriptionRecord } from "../store/store.ts";
import type { Session } from "./session.ts";

/** Bits of ActiveSubscription's options: the wire's Subscription Options byte (spec 3.8.3.1). */
const QOS_MASK = 0x03;
const NO_LOCAL = 0x04;
const RETAIN_AS_PUBLISHED = 0x08;
const RETAIN_HANDLING_SHIFT = 4;
/** The Subscription Identifier rides above the option bits (it is at most 268,435,455: 2^28 - 1). */
const ID_FACTOR = 64;

/**
 * One subscription of a session, as routing needs it: whose it is, its filter and its
 * options. The topic tree holds these themselves, and a session lists them (see
 * SessionSubscriptions). Options and Subscription Identifier are packed into one number
 * and the list position is kept here, so a subscription is one object of six fields (a
 * 64-byte cell): with 20,000 subscriptions of one session (issue 13) the record, the tree's
 * entry and the session's Map entry had cost about 330 bytes each.
 */
export class ActiveSubscription implements SubscriptionRecord {
  /** Options bits, plus Subscription Identifier × 64 (0: none). */
  readonly #packed: number;
  /** Position in its session's list (SessionSubscriptions); -1 when in none. */
  index = -1;

  constructor(
    readonly session: Session,
    /** The filter as subscribed, $share/group/ prefix included. */
    readonly filter: string,
    /** The filter without the $share prefix. */
    readonly plainFilter: string,
    readonly group: string | undefined,
    /** Subscription Options as the wire has them (subscriptionOptions makes them from a record). */
    options: number,
    subscriptionId: number | undefined,
  ) {
    this.#packed = (options & 0x3f) + (subscriptionId ?? 0) * ID_FACTOR;
  }

  get qos(): QoS {
    return (this.#packed & QOS_MASK) as QoS;
  }

  get noLocal(): boolean {
    return (this.#packed & NO_LOCAL) !== 0;
  }

  get retainAsPublished(): boolean {
    return (this.#packed & RETAIN_AS_PUBLISHED) !== 0;
  }

  get retainHandling(): 0 | 1 | 2 {
    return ((this.#packed >> RETAIN_HANDLING_SHIFT) & 0x03) as 0 | 1 | 2;
  }

  get subscriptionId(): number | undefined {
    const id = Math.floor(this.#packed / ID_FACTOR);
    return id === 0 ? undefined : id;
  }
}

/** The Subscription Options byte (spec 3.8.3.1) of a stored subscription's fields. */
export function subscriptionOptions(
  qos: QoS,
  noLocal: boolean,
  retainAsPublished: boolean,
  retainHandling: 0 | 1 | 2,
): number {
  return qos | (noLocal ? NO_LOCAL : 0) | (retainAsPublished ? RETAIN_AS_PUBLISHED : 0) |
    (retainHandling << RETAIN_HANDLING_SHIFT);
}

/**
 * A session's subscriptions, in an array: each knows its position, so adding and removing
 * cost no search, and an entry costs a slot instead of a Map entry (40-160 bytes in
 * JavaScriptCore, depending on how full the Map's table is). Finding one by filter goes
 * through the topic tree (Router.subscriptionOf); `get` and `has` here scan, for tests and
 * the admin API.
 */
export class SessionSubscriptions {
  /** Made with the first subscription: an idle connection's session has none. */
  #list: ActiveSubscription[] | undefined;

  get size(): number {
    return this.#list?.length ?? 0;
  }

  values(): IterableIterator<ActiveSubscription> {
    return (this.#list ?? NONE).values();
  }

  add(sub: ActiveSubscription): void {
    const list = this.#list ??= [];
    sub.index = list.length;
    list.push(sub);
  }

  /** Remove `sub` (the last entry takes its place). */
  remove(sub: ActiveSubscription): void {
    const list = this.#list;
    const i = sub.index;
    if (list === undefined || list[i] !== sub) return;
    const last = list.pop()!;
    if (last !== sub) {
      list[i] = last;
      last.index = i;
    }
    sub.index = -1;
  }

  /** Every subscription, removed from the list. */
  takeAll(): ActiveSubscription[] {
    const all = this.#list ?? [];
    this.#list = undefined;
    for (const sub of all) sub.index = -1;
    return all;
  }

  /** The subscription to `filter` (as subscribed); linear. */
  get(filter: string): ActiveSubscription | undefined {
    return this.#list?.find((s) => s.filter === filter);
  }

  /** Whether it has a subscription to `filter`; linear. */
  has(filter: string): boolean {
    return this.get(filter) !== undefined;
  }
}

const NONE: readonly ActiveSubscription[] = [];
