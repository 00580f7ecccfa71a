/**
 * The busiest topics, counted in bounded memory with the Space-Saving algorithm
 * (Metwally et al.): at most `capacity` topics are tracked; a new topic replaces the
 * least counted one and inherits its count as an error bound. Heavy hitters are always
 * kept; counts of rarely seen topics may be overestimated by at most `error`.
 */
import type { Broker } from "../core/broker.ts";

interface Entry {
  messages: number;
  bytes: number;
  /** Upper bound on how much of `messages` belongs to topics this entry replaced. */
  error: number;
}

export interface TopTopic {
  topic: string;
  messages: number;
  bytes: number;
  error: number;
}

export class TopTopics {
  #entries = new Map<string, Entry>();
  #total = 0;

  constructor(readonly capacity = 128) {}

  /** Count one message. O(1) for tracked topics; O(capacity) when a new topic evicts one. */
  add(topic: string, bytes: number): void {
    this.#total++;
    const e = this.#entries.get(topic);
    if (e) {
      e.messages++;
      e.bytes += bytes;
      return;
    }
    if (this.#entries.size < this.capacity) {
      this.#entries.set(topic, { messages: 1, bytes, error: 0 });
      return;
    }
    let minTopic = "";
    let min: Entry | undefined;
    for (const [t, entry] of this.#entries) {
      if (!min || entry.messages < min.messages) {
        min = entry;
        minTopic = t;
      }
    }
    this.#entries.delete(minTopic);
    this.#entries.set(topic, { messages: min!.messages + 1, bytes: min!.bytes + bytes, error: min!.messages });
  }

  /** Messages counted since start, on every topic. */
  get total(): number {
    return this.#total;
  }

  get tracked(): number {
    return this.#entries.size;
  }

  top(n: number): TopTopic[] {
    return [...this.#entries].map(([topic, e]) => ({ topic, ...e }))
      .sort((a, b) => b.messages - a.messages || (a.topic < b.topic ? -1 : 1))
      .slice(0, n);
  }
}

/** A TopTopics fed by every message `broker` accepts from now on. */
export function countTopTopics(broker: Broker): TopTopics {
  const topTopics = new TopTopics();
  broker.publishHooks.push((m) => topTopics.add(m.topic, m.payload.byteLength));
  return topTopics;
}
