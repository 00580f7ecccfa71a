import type { Message, QoS } from "../store/store.ts";
import { COSTS, type MemoryAccount, UNCOUNTED } from "./memory-budget.ts";
import { parseSubscriptionFilter } from "../mqtt/topic.ts";
import type { ActiveSubscription, Outbound, Session } from "./session.ts";
import { TopicTree } from "./topic-tree.ts";

/** One subscription in the tree: whose it is (`session`), and its options. */
export type SubEntry = ActiveSubscription;

/**
 * Who gets a message: the subscription tree, shared-subscription groups and their
 * round-robin, and the merge of overlapping subscriptions into one delivery per session.
 * Routing allocates one Outbound per receiving session and nothing per match.
 */
export class Router {
  #subs = new TopicTree<SubEntry>();
  /** Numbers routing passes, for the per-session scratch fields (Session.routeMark). */
  #routePass = 0;
  #shareCursor = new Map<string, number>();
  #shareGroups = new Map<string, Map<string, SubEntry>>();

  constructor(
    private readonly options: { readonly maxQueuedMessages: number },
    /** Where subscriptions are counted (the memory budget). */
    private readonly account: MemoryAccount = UNCOUNTED,
  ) {}

  /**
   * Add or replace (same session and filter) a subscription [MQTT-3.8.4-3]; returns whether
   * it is new. `sub.session` is the subscriber.
   */
  subscribe(sub: ActiveSubscription): boolean {
    const s = sub.session;
    const old = this.#subs.get(sub.plainFilter, subKey(s, sub));
    if (old) this.#remove(s, old);
    s.subscriptions.add(sub);
    this.#subs.add(sub.plainFilter, subKey(s, sub), sub);
    if (sub.group !== undefined) {
      const key = shareKey(sub);
      let members = this.#shareGroups.get(key);
      if (!members) this.#shareGroups.set(key, members = new Map());
      members.set(s.clientId, sub);
    }
    if (old === undefined) this.account.addClients(subscriptionCost(sub));
    return old === undefined;
  }

  /** `s`'s subscription to `filter` (as subscribed, $share prefix included), found through the tree. */
  subscriptionOf(s: Session, filter: string): ActiveSubscription | undefined {
    const parsed = parseSubscriptionFilter(filter);
    if (typeof parsed === "string") return undefined;
    const key = parsed.group === undefined ? s.clientId : `${parsed.group}\u0000${s.clientId}`;
    return this.#subs.get(parsed.filter, key);
  }

  unsubscribe(s: Session, filter: string): boolean {
    const sub = this.subscriptionOf(s, filter);
    if (!sub) return false;
    this.#remove(s, sub);
    this.account.addClients(-subscriptionCost(sub));
    return true;
  }

  /** The session ends: every subscription of it goes. */
  unsubscribeAll(s: Session): void {
    for (const sub of s.subscriptions.takeAll()) {
      this.#remove(s, sub);
      this.account.addClients(-subscriptionCost(sub));
    }
  }

  #remove(s: Session, sub: ActiveSubscription): void {
    s.subscriptions.remove(sub);
    this.#subs.remove(sub.plainFilter, subKey(s, sub));
    if (sub.group !== undefined) {
      const key = shareKey(sub);
      const members = this.#shareGroups.get(key);
      members?.delete(s.clientId);
      if (members?.size === 0) this.#shareGroups.delete(key);
    }
  }

  /** Every subscription matching `topic` (shared with later calls: never modify it). */
  matches(topic: string): readonly SubEntry[] {
    return this.#subs.matchAll(topic);
  }

  /**
   * Work out who gets `message`: one delivery per session (overlapping subscriptions merge),
   * one member per shared-subscription group. Appends to `sessions` and `outbounds` in step.
   */
  route(message: Message, sessions: Session[], outbounds: Outbound[]): void {
    const matches = this.#subs.matchAll(message.topic);
    const n = matches.length;
    if (n === 0) return;
    const pass = ++this.#routePass;
    let groups: Map<string, SubEntry[]> | undefined;
    for (let i = 0; i < n; i++) {
      const e = matches[i]!;
      if (e.group !== undefined) {
        groups ??= new Map();
        const key = shareKey(e);
        const list = groups.get(key);
        if (list) list.push(e);
        else groups.set(key, [e]);
        continue;
      }
      // [MQTT-3.8.3-3] No Local: not back to the connection that published it.
      if (e.noLocal && e.session.clientId === message.origin) continue;
      addTarget(pass, sessions, outbounds, e, message, undefined);
    }
    if (groups) {
      for (const [key, members] of groups) {
        const chosen = this.pickMember(key, members);
        if (chosen) addTarget(pass, sessions, outbounds, chosen, message, key);
      }
    }
  }

  /**
   * Round-robin over the group's connected members with queue room; then any member with
   * room; when every queue is full, a connected member (whose publisher then waits for room,
   * see PublisherFlow) rather than an offline one (where the message would be dropped).
   */
  pickMember(key: string, members: SubEntry[]): SubEntry | undefined {
    const max = this.options.maxQueuedMessages;
    const roomy = members.filter((m) => m.session.queuedCount < max);
    const online = roomy.filter((m) => m.session.client?.state === "connected");
    let pool = online.length > 0 ? online : roomy;
    if (pool.length === 0) {
      const connected = members.filter((m) => m.session.client?.state === "connected");
      pool = connected.length > 0 ? connected : members;
    }
    if (pool.length === 0) return undefined;
    const n = (this.#shareCursor.get(key) ?? 0) + 1;
    this.#shareCursor.set(key, n);
    return pool[n % pool.length];
  }

  /** The connected members of shared group `key` other than `s` (for redistribution). */
  otherConnectedMembers(key: string, s: Session): SubEntry[] {
    return [...(this.#shareGroups.get(key)?.values() ?? [])]
      .filter((e) => e.session !== s && e.session.client?.state === "connected");
  }
}

function addTarget(
  pass: number,
  sessions: Session[],
  outbounds: Outbound[],
  e: SubEntry,
  m: Message,
  share: string | undefined,
): void {
  const sub = e;
  const s = e.session;
  const qos = Math.min(m.qos, sub.qos) as QoS;
  // [MQTT-3.3.1-12/13] Retain As Published keeps the publisher's RETAIN flag; otherwise 0.
  const retain = sub.retainAsPublished ? m.retain : false;
  if (s.routeMark !== pass) {
    s.routeMark = pass;
    s.routeIndex = outbounds.length;
    sessions.push(s);
    outbounds.push({
      message: m,
      qos,
      retain,
      subscriptionIds: sub.subscriptionId !== undefined ? [sub.subscriptionId] : undefined,
      packetId: 0,
      phase: "queued",
      shareKey: share,
      cache: undefined,
    });
    return;
  }
  const t = outbounds[s.routeIndex]!;
  // Overlapping subscriptions: one delivery, highest QoS, every identifier [MQTT-3.3.4-2] [MQTT-3.3.4-4].
  if (qos > t.qos) t.qos = qos;
  t.retain ||= retain;
  if (sub.subscriptionId !== undefined) (t.subscriptionIds ??= []).push(sub.subscriptionId);
  if (share === undefined) t.shareKey = undefined;
}

function subKey(s: Session, sub: ActiveSubscription): string {
  return sub.group === undefined ? s.clientId : `${sub.group}\u0000${s.clientId}`;
}

function shareKey(sub: ActiveSubscription): string {
  return `${sub.group}\u0000${sub.plainFilter}`;
}

/** What a subscription is charged in the memory budget: a fixed cost and its filter, stored twice (full and plain). */
function subscriptionCost(sub: ActiveSubscription): number {
  return COSTS.subscription + 2 * (sub.filter.length + sub.plainFilter.length);
}
