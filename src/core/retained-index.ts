import type { Message } from "../store/store.ts";

class Node {
  children = new Map<string, Node>();
  message: Message | undefined;
}

/**
 * Retained messages by topic, in a trie of topic levels so that a wildcard
 * subscription visits only the branches its filter can match.
 */
export class RetainedIndex {
  #root = new Node();
  #size = 0;

  get size(): number {
    return this.#size;
  }

  get(topic: string): Message | undefined {
    let node: Node | undefined = this.#root;
    for (const level of topic.split("/")) {
      node = node.children.get(level);
      if (!node) return undefined;
    }
    return node.message;
  }

  /** Store or (with `undefined`) remove the retained message of `topic`. */
  set(topic: string, message: Message | undefined): void {
    const levels = topic.split("/");
    if (!message) {
      const path: Array<[Node, string]> = [];
      let node = this.#root;
      for (const level of levels) {
        const next = node.children.get(level);
        if (!next) return;
        path.push([node, level]);
        node = next;
      }
      if (node.message) this.#size--;
      node.message = undefined;
      for (let i = path.length - 1; i >= 0; i--) {
        const [parent, level] = path[i]!;
        const child = parent.children.get(level)!;
        if (child.message || child.children.size > 0) break;
        parent.children.delete(level);
      }
      return;
    }
    let node = this.#root;
    for (const level of levels) {
      let next = node.children.get(level);
      if (!next) node.children.set(level, next = new Node());
      node = next;
    }
    if (!node.message) this.#size++;
    node.message = message;
  }

  /** Every retained message whose topic matches `filter`. */
  match(filter: string): Message[] {
    const out: Message[] = [];
    this.#walk(this.#root, filter.split("/"), 0, out);
    return out;
  }

  /** All retained messages (admin listing). */
  *all(): Generator<Message> {
    const stack = [this.#root];
    while (stack.length > 0) {
      const node = stack.pop()!;
      if (node.message) yield node.message;
      for (const child of node.children.values()) stack.push(child);
    }
  }

  #walk(node: Node, f: string[], i: number, out: Message[]): void {
    if (i === f.length) {
      if (node.message) out.push(node.message);
      return;
    }
    const level = f[i]!;
    if (level === "#") {
      // '#' matches the parent level too, and never a $-topic from the first level [MQTT-4.7.2-1].
      if (node.message && i > 0) out.push(node.message);
      this.#collect(node, i === 0, out);
      return;
    }
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

  #collect(node: Node, skipDollar: boolean, out: Message[]): void {
    for (const [name, child] of node.children) {
      if (skipDollar && name.startsWith("$")) continue;
      if (child.message) out.push(child.message);
      this.#collect(child, false, out);
    }
  }
}
