import { topicMatches } from "../mqtt/topic.ts";
import { type Message, type RecoveredRetained, type RetainedStub, retainedStub } from "../store/store.ts";
import { type MemoryAccount, UNCOUNTED } from "./memory-budget.ts";

/**
 * A retained message as the index holds it: the message itself, or, for one recovered from
 * the store, a stub (topic, QoS, size, expiry) whose body the broker reads from the store
 * when a subscription matches it. A restart with 100,000 retained messages then holds no
 * bodies (issue 13).
 */
export type RetainedEntry = Message | RetainedStub;

/** Whether the index holds `entry`'s body. */
export function isResident(entry: RetainedEntry): entry is Message {
  return (entry as Message).payload !== undefined;
}

class Node {
  /** Created with the first child: most nodes are leaves. */
  children: Map<string, Node> | undefined;
  entry: RetainedEntry | undefined;
}

/**
 * Retained messages by topic: those set while running in a trie of topic levels, so that
 * a wildcard subscription visits only the branches its filter can match; those recovered
 * from the store in a sorted table of stubs (StubTable), which a later set or clear of the
 * topic overrides.
 */
export class RetainedIndex {
  #root = new Node();
  #size = 0;
  #resident = 0;
  #stubs: StubTable | undefined;

  /** @param account where the bodies it holds are counted (the memory budget) */
  constructor(private readonly account: MemoryAccount = UNCOUNTED) {}

  get size(): number {
    return this.#size + (this.#stubs?.live ?? 0);
  }

  /** Entries whose body is in memory (the rest are stubs): for tests of the memory bound. */
  get residentCount(): number {
    return this.#resident;
  }

  /** The retained messages a store recovered, as stubs (their bodies stay in the store). */
  load(recovered: RecoveredRetained): void {
    const stubs = StubTable.from(recovered);
    // Anything set before (at start, nothing) is newer than what the store recovered.
    if (this.#size > 0) { for (const entry of this.all()) stubs.remove(entry.topic); }
    this.#stubs = stubs;
  }

  get(topic: string): RetainedEntry | undefined {
    let node: Node | undefined = this.#root;
    for (const level of topic.split("/")) {
      node = node.children?.get(level);
      if (!node) return this.#stubs?.get(topic);
    }
    return node.entry ?? this.#stubs?.get(topic);
  }

  /** Store or (with `undefined`) remove the retained message of `topic`. */
  set(topic: string, entry: RetainedEntry | undefined): void {
    this.#stubs?.remove(topic);
    if (!entry) {
      this.#remove(topic);
      return;
    }
    let node = this.#root;
    for (const level of topic.split("/")) {
      let next = node.children?.get(level);
      if (!next) (node.children ??= new Map()).set(level, next = new Node());
      node = next;
    }
    this.#forget(node);
    node.entry = entry;
    this.#size++;
    if (isResident(entry)) {
      this.#resident++;
      this.account.hold(entry);
    }
  }

  /** Every retained entry whose topic matches `filter`. */
  match(filter: string): RetainedEntry[] {
    const out: RetainedEntry[] = [];
    this.#walk(this.#root, filter.split("/"), 0, out);
    this.#stubs?.match(filter, out);
    return out;
  }

  /** All retained entries (admin listing). */
  *all(): Generator<RetainedEntry> {
    const stack = [this.#root];
    while (stack.length > 0) {
      const node = stack.pop()!;
      if (node.entry) yield node.entry;
      if (node.children) { for (const child of node.children.values()) stack.push(child); }
    }
    if (this.#stubs) yield* this.#stubs.all();
  }

  #remove(topic: string): void {
    const path: Array<[Node, string]> = [];
    let node = this.#root;
    for (const level of topic.split("/")) {
      const next = node.children?.get(level);
      if (!next) return;
      path.push([node, level]);
      node = next;
    }
    this.#forget(node);
    for (let i = path.length - 1; i >= 0; i--) {
      const [parent, level] = path[i]!;
      const child = parent.children!.get(level)!;
      if (child.entry || (child.children !== undefined && child.children.size > 0)) break;
      parent.children!.delete(level);
    }
  }

  #forget(node: Node): void {
    if (!node.entry) return;
    this.#size--;
    if (isResident(node.entry)) {
      this.#resident--;
      this.account.release(node.entry);
    }
    node.entry = undefined;
  }

  #walk(node: Node, f: string[], i: number, out: RetainedEntry[]): void {
    if (i === f.length) {
      if (node.entry) out.push(node.entry);
      return;
    }
    const level = f[i]!;
    if (level === "#") {
      // '#' matches the parent level too, and never a $-topic from the first level [MQTT-4.7.2-1].
      if (node.entry && i > 0) out.push(node.entry);
      this.#collect(node, i === 0, out);
      return;
    }
    if (!node.children) return;
    if (level === "+") {
      for (const [name, child] of node.children) {
        if (i === 0 && name.startsWith("$")) continue;
        this.#walk(child, f, i + 1, out);
      }
      return;
    }
    const child = node.children.get(level);
    if (child) this.#walk(child, f, i + 1, out);
  }

  #collect(node: Node, skipDollar: boolean, out: RetainedEntry[]): void {
    if (!node.children) return;
    for (const [name, child] of node.children) {
      if (skipDollar && name.startsWith("$")) continue;
      if (child.entry) out.push(child.entry);
      this.#collect(child, false, out);
    }
  }
}

/**
 * Retained messages recovered from the store, without bodies, in columns sorted by topic:
 * per message a topic string and a few bytes of typed arrays, where the trie cost several
 * objects and strings each (100,000 recovered topics took some 50 MB that way). Nothing is
 * added after recovery; a topic set or cleared while running is dropped here (the trie
 * holds what replaced it).
 */
class StubTable {
  live: number;
  readonly #r: RecoveredRetained;
  readonly #dead: Uint8Array;

  private constructor(r: RecoveredRetained) {
    this.#r = r;
    this.#dead = new Uint8Array(r.topics.length);
    this.live = r.topics.length;
  }

  /** The table for `r`, sorted by topic (SQLite gives them in that order; others are sorted here). */
  static from(r: RecoveredRetained): StubTable {
    const t = r.topics;
    let sorted = true;
    for (let i = 1; i < t.length && sorted; i++) sorted = t[i - 1]! < t[i]!;
    if (sorted) return new StubTable(r);
    const order = Array.from(t.keys()).sort((a, b) => (t[a]! < t[b]! ? -1 : t[a]! > t[b]! ? 1 : 0));
    return new StubTable({
      topics: order.map((i) => t[i]!),
      qos: Uint8Array.from(order, (i) => r.qos[i]!),
      bytes: Uint32Array.from(order, (i) => r.bytes[i]!),
      expiresAt: Float64Array.from(order, (i) => r.expiresAt[i]!),
    });
  }

  get(topic: string): RetainedStub | undefined {
    const i = this.#find(topic);
    return i < 0 ? undefined : retainedStub(this.#r, i);
  }

  remove(topic: string): void {
    const i = this.#find(topic);
    if (i < 0) return;
    this.#dead[i] = 1;
    this.live--;
  }

  /** Adds the stubs whose topic matches `filter` to `out`. */
  match(filter: string, out: RetainedEntry[]): void {
    if (this.live === 0) return;
    const wildcard = firstWildcard(filter);
    if (wildcard < 0) {
      const i = this.#find(filter);
      if (i >= 0) out.push(retainedStub(this.#r, i));
      return;
    }
    // The levels before the first wildcard are a prefix of every match, so only that range
    // of the sorted topics is visited ("a/#" matches "a" too: the range is of "a", not "a/").
    const prefix = wildcard === 0 ? "" : filter.slice(0, wildcard - 1);
    // "a/b/#" (the commonest wildcard filter): every topic of the range that is "a/b" or below it.
    const below = wildcard > 0 && wildcard === filter.length - 1 && filter.endsWith("#") ? `${prefix}/` : undefined;
    const everything = filter === "#";
    const topics = this.#r.topics;
    for (let i = this.#lowerBound(prefix); i < topics.length; i++) {
      const topic = topics[i]!;
      if (!topic.startsWith(prefix)) break;
      if (this.#dead[i]) continue;
      // [MQTT-4.7.2-1] a filter starting with a wildcard matches no $-topic (topicMatches checks too).
      const matches = below !== undefined
        ? topic.length === prefix.length || topic.startsWith(below)
        : everything
        ? topic.charCodeAt(0) !== 36
        : topicMatches(filter, topic);
      if (matches) out.push(retainedStub(this.#r, i));
    }
  }

  *all(): Generator<RetainedStub> {
    for (let i = 0; i < this.#r.topics.length; i++) if (!this.#dead[i]) yield retainedStub(this.#r, i);
  }

  /** The index of live `topic`, or -1. */
  #find(topic: string): number {
    const i = this.#lowerBound(topic);
    return i < this.#r.topics.length && this.#r.topics[i] === topic && !this.#dead[i] ? i : -1;
  }

  /** The first index whose topic is not below `key`. */
  #lowerBound(key: string): number {
    const topics = this.#r.topics;
    let lo = 0;
    let hi = topics.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (topics[mid]! < key) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/** Where the first level of `filter` that is a wildcard starts, or -1. */
function firstWildcard(filter: string): number {
  let start = 0;
  for (;;) {
    const c = filter.charCodeAt(start);
    const whole = start + 1 === filter.length || filter.charCodeAt(start + 1) === 47; /* / */
    if ((c === 43 /* + */ || c === 35) /* # */ && whole) return start;
    const slash = filter.indexOf("/", start);
    if (slash < 0) return -1;
    start = slash + 1;
  }
}
