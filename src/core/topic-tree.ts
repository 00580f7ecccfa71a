/**
 * A trie of subscription filters, one level per node, so that matching a topic costs
 * in proportion to its depth (times the wildcard branches), not to the number of
 * subscriptions.
 */
class Node<V> {
  children = new Map<string, Node<V>>();
  values = new Map<string, V>();
}

/** Topics whose match results `matchAll` keeps; past this the cache starts over. */
const MATCH_CACHE_TOPICS = 4096;

export class TopicTree<V> {
  #root = new Node<V>();
  #size = 0;
  /**
   * Match results by topic, valid until the next add or remove. Devices publish to the
   * same topics over and over, and walking the tree (split, one Map lookup per level and
   * wildcard) was the largest part of routing a message.
   */
  #matchCache = new Map<string, readonly V[]>();

  get size(): number {
    return this.#size;
  }

  /** Add or replace the value stored under `key` for `filter`. */
  add(filter: string, key: string, value: V): void {
    let node = this.#root;
    for (const level of filter.split("/")) {
      let next = node.children.get(level);
      if (!next) node.children.set(level, next = new Node());
      node = next;
    }
    if (!node.values.has(key)) this.#size++;
    node.values.set(key, value);
    this.#forgetMatches();
  }

  /** Remove `key` under `filter`; prunes empty branches. Returns whether it was there. */
  remove(filter: string, key: string): boolean {
    const path: Array<[Node<V>, string]> = [];
    let node = this.#root;
    for (const level of filter.split("/")) {
      const next = node.children.get(level);
      if (!next) return false;
      path.push([node, level]);
      node = next;
    }
    if (!node.values.delete(key)) return false;
    this.#size--;
    this.#forgetMatches();
    for (let i = path.length - 1; i >= 0; i--) {
      const [parent, level] = path[i]!;
      const child = parent.children.get(level)!;
      if (child.values.size > 0 || child.children.size > 0) break;
      parent.children.delete(level);
    }
    return true;
  }

  #forgetMatches(): void {
    if (this.#matchCache.size > 0) this.#matchCache = new Map();
  }

  /**
   * Every value whose filter matches `topic`, in the order `collect` gives. The array is
   * shared with later calls for the same topic: callers must not modify it.
   */
  matchAll(topic: string): readonly V[] {
    const cached = this.#matchCache.get(topic);
    if (cached !== undefined) return cached;
    const out: V[] = [];
    this.collect(topic, out);
    if (this.#matchCache.size >= MATCH_CACHE_TOPICS) this.#matchCache = new Map();
    this.#matchCache.set(topic, out);
    return out;
  }

  /** Call `visit` for every value whose filter matches `topic`. */
  match(topic: string, visit: (value: V) => void): void {
    const out: V[] = [];
    this.collect(topic, out);
    for (const v of out) visit(v);
  }

  /** Append every value whose filter matches `topic` to `out`. */
  collect(topic: string, out: V[]): void {
    const levels = topic.split("/");
    // [MQTT-4.7.2-1] wildcards at the first level do not match topics starting with '$'.
    this.#gather(this.#root, levels, 0, out, topic.charCodeAt(0) === 36);
  }

  #gather(node: Node<V>, levels: string[], i: number, out: V[], dollar: boolean): void {
    const hash = dollar && i === 0 ? undefined : node.children.get("#");
    // '#' also matches the parent level itself [MQTT-4.7.1-2]: "sport/#" matches "sport".
    if (hash) { for (const v of hash.values.values()) out.push(v); }
    if (i === levels.length) {
      for (const v of node.values.values()) out.push(v);
      return;
    }
    const exact = node.children.get(levels[i]!);
    if (exact) this.#gather(exact, levels, i + 1, out, dollar);
    const plus = dollar && i === 0 ? undefined : node.children.get("+");
    if (plus) this.#gather(plus, levels, i + 1, out, dollar);
  }
}
