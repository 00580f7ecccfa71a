/**
 * The busiest topics, counted in bounded memory with the Space-Saving algorithm
 * (Metwally et al.): at most `capacity` topics are tracked; a new topic replaces the
 * least counted one and inherits its count as an error bound. Heavy hitters are always
 * kept; counts of rarely seen topics may be overestimated by at most `error`.
 */
import type { Broker } from "../core/broker.ts";

interface Entry {
  topic: string;
  messages: number;
  bytes: number;
  /** Upper bound on how much of `messages` belongs to topics this entry replaced. */
  error: number;
  /** Its place in the heap. */
  at: number;
}

export interface TopTopic {
  topic: string;
  messages: number;
  bytes: number;
  error: number;
}

/**
 * The entries sit in a binary min-heap by message count, so the least counted one (the one a
 * new topic replaces) is at the root. Scanning for it cost O(capacity) per message once there
 * were more topics than slots, which a gateway with one topic per device reaches at once: at
 * 200 devices it was 5 % of the event loop (issue 14). A counted message moves its entry
 * towards the leaves, a few comparisons at most.
 */
export class TopTopics {
  #entries = new Map<string, Entry>();
  #heap: Entry[] = [];
  #total = 0;

  constructor(readonly capacity = 128) {}

  /** Count one message. O(log capacity). */
  add(topic: string, bytes: number): void {
    this.#total++;
    const e = this.#entries.get(topic);
    if (e) {
      e.messages++;
      e.bytes += bytes;
      this.#down(e);
      return;
    }
    const heap = this.#heap;
    if (heap.length < this.capacity) {
      const entry: Entry = { topic, messages: 1, bytes, error: 0, at: heap.length };
      heap.push(entry);
      this.#entries.set(topic, entry);
      this.#up(entry);
      return;
    }
    // The least counted topic makes room; the newcomer inherits its count as the error bound.
    const min = heap[0]!;
    this.#entries.delete(min.topic);
    min.topic = topic;
    min.error = min.messages;
    min.messages++;
    min.bytes += bytes;
    this.#entries.set(topic, min);
    this.#down(min);
  }

  /** Messages counted since start, on every topic. */
  get total(): number {
    return this.#total;
  }

  get tracked(): number {
    return this.#entries.size;
  }

  top(n: number): TopTopic[] {
    return this.#heap.map(({ topic, messages, bytes, error }) => ({ topic, messages, bytes, error }))
      .sort((a, b) => b.messages - a.messages || (a.topic < b.topic ? -1 : 1))
      .slice(0, n);
  }

  #up(e: Entry): void {
    const heap = this.#heap;
    let i = e.at;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = heap[parent]!;
      if (p.messages <= e.messages) break;
      heap[i] = p;
      p.at = i;
      i = parent;
    }
    heap[i] = e;
    e.at = i;
  }

  #down(e: Entry): void {
    const heap = this.#heap;
    const n = heap.length;
    let i = e.at;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= n) break;
      const right = left + 1;
      const child = right < n && heap[right]!.messages < heap[left]!.messages ? right : left;
      const c = heap[child]!;
      if (c.messages >= e.messages) break;
      heap[i] = c;
      c.at = i;
      i = child;
    }
    heap[i] = e;
    e.at = i;
  }
}

/** A TopTopics fed by every message `broker` accepts from now on. */
export function countTopTopics(broker: Broker): TopTopics {
  const topTopics = new TopTopics();
  broker.publishHooks.push((m) => topTopics.add(m.topic, m.payload.byteLength));
  return topTopics;
}
