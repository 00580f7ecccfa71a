import { describe, expect, test } from "bun:test";
import { TopTopics } from "../../src/admin/top-topics.ts";

describe("top topics (Space-Saving on a heap)", () => {
  test("over more topics than slots, every count bounds the true one and no heavy topic is missed", () => {
    // 300 topics, a skewed seeded stream: a few hot topics and a long tail.
    let seed = 7;
    const random = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;
    const t = new TopTopics(32);
    const truth = new Map<string, number>();
    const n = 50_000;
    for (let i = 0; i < n; i++) {
      const topic = `d/${Math.floor(300 * random() ** 3)}`;
      truth.set(topic, (truth.get(topic) ?? 0) + 1);
      t.add(topic, 2);
    }
    expect(t.total).toBe(n);
    expect(t.tracked).toBe(32);
    const top = t.top(32);
    for (const e of top) {
      const real = truth.get(e.topic)!;
      expect(e.messages).toBeGreaterThanOrEqual(real);
      expect(e.messages - e.error).toBeLessThanOrEqual(real);
      expect(e.bytes).toBeGreaterThanOrEqual(2 * real);
    }
    // Space-Saving's guarantee: a topic seen more than n / capacity times is tracked.
    const tracked = new Set(top.map((e) => e.topic));
    for (const [topic, count] of truth) if (count > n / 32) expect(tracked.has(topic)).toBe(true);
    // Sorted by count, the hottest first.
    expect(top.map((e) => e.messages)).toEqual([...top.map((e) => e.messages)].sort((a, b) => b - a));
    expect(top[0]!.topic).toBe("d/0");
  });

  test("a newcomer replaces the least counted topic", () => {
    const t = new TopTopics(2);
    for (let i = 0; i < 3; i++) t.add("a", 1);
    t.add("b", 1);
    t.add("c", 1); // evicts b (1 message), inherits it as its error
    expect(t.top(2)).toEqual([
      { topic: "a", messages: 3, bytes: 3, error: 0 },
      { topic: "c", messages: 2, bytes: 2, error: 1 },
    ]);
  });
});
