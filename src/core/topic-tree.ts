/**
 * A trie of subscription filters, one level per node, so that matching a topic costs
 * in proportion to its depth (times the wildcard branches), not to the number of
 * subscriptions.
 */
/**
 * One level. A level usually has one child and the last level of a filter one value (one
 * subscriber), so the first of each is kept in fields and a Map is made only for a second:
 * two Maps per subscription made 20,000 subscriptions of distinct filters cost several MB
 * more (issue 13).
 */
class Node<V> {
  childKey: string | undefined;
  child: Node<V> | undefined;
  children: Map<string, Node<V>> | undefined;
  valueKey: string | undefined;
  value: V | undefined;
  values: Map<string, V> | undefined;

  getChild(level: string): Node<V> | undefined {
    if (this.children) return this.children.get(level);
    return this.childKey === level ? this.child : undefined;
  }

  /** The child for `level`, made if missing. */
  childFor(level: string): Node<V> {
    const found = this.getChild(level);
    if (found) return found;
    const made = new Node<V>();
    if (this.children) this.children.set(level, made);
    else if (this.childKey === undefined) {
      this.childKey = level;
      this.child = made;
    } else {
      this.children = new Map([[this.childKey, this.child!], [level, made]]);
      this.childKey = undefined;
      this.child = undefined;
    }
    return made;
  }

  deleteChild(level: string): void {
    if (this.children) this.children.delete(level);
    else if (this.childKey === level) {
      this.childKey = undefined;
      this.child = undefined;
    }
  }

  /** Sets the value under `key`; returns whether it is a new key. */
  setValue(key: string, value: V): boolean {
    if (this.values) {
      const isNew = !this.values.has(key);
      this.values.set(key, value);
      return isNew;
    }
    if (this.valueKey === undefined || this.valueKey === key) {
      const isNew = this.valueKey === undefined;
      this.valueKey = key;
      this.value = value;
      return isNew;
    }
    this.values = new Map([[this.valueKey, this.value!], [key, value]]);
    this.valueKey = undefined;
    this.value = undefined;
    return true;
  }

  deleteValue(key: string): boolean {
    if (this.values) return this.values.delete(key);
    if (this.valueKey !== key) return false;
    this.valueKey = undefined;
    this.value = undefined;
    return true;
  }

  pushValues(out: V[]): void {
    if (this.values) { for (const v of this.values.values()) out.push(v); }
    else if (this.valueKey !== undefined) out.push(this.value!);
  }

  get empty(): boolean {
    return this.valueKey === undefined && this.childKey === undefined && !this.values?.size && !this.children?.size;
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
    let node = this.#root;
    for (const level of filter.split("/")) node = node.childFor(level);
    if (node.setValue(key, value)) this.#size++;
    this.#forgetMatches();
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
