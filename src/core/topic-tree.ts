/**
 * A trie of subscription filters, one level per node, so that matching a topic costs
 * in proportion to its depth (times the wildcard branches), not to the number of
 * subscriptions.
 */
/**
 * One level. A level usually has one child and the last level of a filter one value (one
 * subscriber), so the first of each is kept in two fields and a Map is made only for a
 * second: two Maps per subscription made 20,000 subscriptions of distinct filters cost
 * several MB more (issue 13). With a Map, the key field is undefined and the Map is in the
 * other field; four fields fit a 48-byte cell where six took 64.
 */
class Node<V> {
  childKey: string | undefined;
  /** The one child (under childKey), or every child by level when childKey is undefined. */
  child: Node<V> | Map<string, Node<V>> | undefined;
  valueKey: string | undefined;
  /** The one value (under valueKey), or every value by key when valueKey is undefined. */
  value: V | Map<string, V> | undefined;

  getChild(level: string): Node<V> | undefined {
    const child = this.child;
    if (child === undefined) return undefined;
    if (this.childKey === undefined) return (child as Map<string, Node<V>>).get(level);
    return this.childKey === level ? child as Node<V> : undefined;
  }

  /** The child for `level`, made if missing. */
  childFor(level: string): Node<V> {
    const found = this.getChild(level);
    if (found) return found;
    const made = new Node<V>();
    const child = this.child;
    if (child === undefined) {
      this.childKey = level;
      this.child = made;
    } else if (this.childKey === undefined) (child as Map<string, Node<V>>).set(level, made);
    else {
      this.child = new Map([[this.childKey, child as Node<V>], [level, made]]);
      this.childKey = undefined;
    }
    return made;
  }

  deleteChild(level: string): void {
    const child = this.child;
    if (child === undefined) return;
    if (this.childKey === undefined) {
      const map = child as Map<string, Node<V>>;
      map.delete(level);
      if (map.size === 0) this.child = undefined;
    } else if (this.childKey === level) {
      this.childKey = undefined;
      this.child = undefined;
    }
  }

  getValue(key: string): V | undefined {
    const value = this.value;
    if (value === undefined) return undefined;
    if (this.valueKey === undefined) return (value as Map<string, V>).get(key);
    return this.valueKey === key ? value as V : undefined;
  }

  /** Sets the value under `key`; returns whether it is a new key. */
  setValue(key: string, v: V): boolean {
    const value = this.value;
    if (value === undefined || this.valueKey === key) {
      this.valueKey = key;
      this.value = v;
      return value === undefined;
    }
    if (this.valueKey === undefined) {
      const map = value as Map<string, V>;
      const isNew = !map.has(key);
      map.set(key, v);
      return isNew;
    }
    this.value = new Map([[this.valueKey, value as V], [key, v]]);
    this.valueKey = undefined;
    return true;
  }

  deleteValue(key: string): boolean {
    const value = this.value;
    if (value === undefined) return false;
    if (this.valueKey === undefined) {
      const map = value as Map<string, V>;
      if (!map.delete(key)) return false;
      if (map.size === 0) this.value = undefined;
      return true;
    }
    if (this.valueKey !== key) return false;
    this.valueKey = undefined;
    this.value = undefined;
    return true;
  }

  pushValues(out: V[]): void {
    const value = this.value;
    if (value === undefined) return;
    if (this.valueKey !== undefined) out.push(value as V);
    else for (const v of (value as Map<string, V>).values()) out.push(v);
  }

  get empty(): boolean {
    return this.value === undefined && this.child === undefined;
  }
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
    // Level by level without split(): no array per subscription (issue 13's SUBSCRIBE storm).
    let node = this.#root;
    let from = 0;
    for (;;) {
      const slash = filter.indexOf("/", from);
      node = node.childFor(slash < 0 ? filter.slice(from) : filter.slice(from, slash));
      if (slash < 0) break;
      from = slash + 1;
    }
    if (node.setValue(key, value)) this.#size++;
    this.#forgetMatches();
  }

  /** The value stored under `key` for `filter`, if any. */
  get(filter: string, key: string): V | undefined {
    let node: Node<V> | undefined = this.#root;
    let from = 0;
    for (;;) {
      const slash = filter.indexOf("/", from);
      node = node.getChild(slash < 0 ? filter.slice(from) : filter.slice(from, slash));
      if (node === undefined) return undefined;
      if (slash < 0) return node.getValue(key);
      from = slash + 1;
    }
  }

  /** Remove `key` under `filter`; prunes empty branches. Returns whether it was there. */
  remove(filter: string, key: string): boolean {
    const path: Array<[Node<V>, string]> = [];
    let node = this.#root;
    for (const level of filter.split("/")) {
      const next = node.getChild(level);
      if (!next) return false;
      path.push([node, level]);
      node = next;
    }
    if (!node.deleteValue(key)) return false;
    this.#size--;
    this.#forgetMatches();
    for (let i = path.length - 1; i >= 0; i--) {
      const [parent, level] = path[i]!;
      if (!parent.getChild(level)!.empty) break;
      parent.deleteChild(level);
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
    const hash = dollar && i === 0 ? undefined : node.getChild("#");
    // '#' also matches the parent level itself [MQTT-4.7.1-2]: "sport/#" matches "sport".
    if (hash) hash.pushValues(out);
    if (i === levels.length) {
      node.pushValues(out);
      return;
    }
    const exact = node.getChild(levels[i]!);
    if (exact) this.#gather(exact, levels, i + 1, out, dollar);
    const plus = dollar && i === 0 ? undefined : node.getChild("+");
    if (plus) this.#gather(plus, levels, i + 1, out, dollar);
  }
}
