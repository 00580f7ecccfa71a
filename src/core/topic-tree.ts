/**
 * A trie of subscription filters, one level per node, so that matching a topic costs
 * in proportion to its depth (times the wildcard branches), not to the number of
 * subscriptions.
 */
class Node<V> {
  children = new Map<string, Node<V>>();
  values = new Map<string, V>();
}

export class TopicTree<V> {
  #root = new Node<V>();
  #size = 0;

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
    for (let i = path.length - 1; i >= 0; i--) {
      const [parent, level] = path[i]!;
      const child = parent.children.get(level)!;
      if (child.values.size > 0 || child.children.size > 0) break;
      parent.children.delete(level);
    }
    return true;
  }

  /** Call `visit` for every value whose filter matches `topic`. */
  match(topic: string, visit: (value: V) => void): void {
    const levels = topic.split("/");
    // [MQTT-4.7.2-1] wildcards at the first level do not match topics starting with '$'.
    this.#walk(this.#root, levels, 0, visit, topic.charCodeAt(0) === 36);
  }

  #walk(node: Node<V>, levels: string[], i: number, visit: (v: V) => void, dollar: boolean): void {
    const hash = dollar && i === 0 ? undefined : node.children.get("#");
    // '#' also matches the parent level itself [MQTT-4.7.1-2]: "sport/#" matches "sport".
    if (hash) { for (const v of hash.values.values()) visit(v); }
    if (i === levels.length) {
      for (const v of node.values.values()) visit(v);
      return;
    }
    const exact = node.children.get(levels[i]!);
    if (exact) this.#walk(exact, levels, i + 1, visit, dollar);
    const plus = dollar && i === 0 ? undefined : node.children.get("+");
    if (plus) this.#walk(plus, levels, i + 1, visit, dollar);
  }
}
