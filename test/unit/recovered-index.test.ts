/**
 * The compact forms behind issue 13: retained messages recovered as a sorted stub table,
 * and topic-tree levels that keep their first child and value without a Map.
 */
import { describe, expect, test } from "bun:test";
import { isResident, RetainedIndex } from "../../src/core/retained-index.ts";
import { TopicTree } from "../../src/core/topic-tree.ts";
import type { Message, RecoveredRetained } from "../../src/store/store.ts";

const msg = (topic: string): Message => ({
  offset: 0,
  topic,
  payload: new Uint8Array([1]),
  qos: 1,
  retain: true,
  receivedAt: 0,
  origin: "",
});

function recovered(topics: string[]): RecoveredRetained {
  return {
    topics,
    qos: Uint8Array.from(topics, () => 1),
    bytes: Uint32Array.from(topics, (_, i) => i),
    expiresAt: Float64Array.from(topics, (_, i) => (i === 0 ? 1234 : NaN)),
  };
}

describe("RetainedIndex with recovered stubs", () => {
  // Out of order on purpose (the memory store gives insertion order), with a $ topic, a
  // topic with characters outside the BMP, and prefixes of one another.
  const topics = ["b/1", "a", "a/b/c", "$SYS/up", "a/b", "ab/c", "x/😀/z", "a/b/d", "a/\uffff"];

  test("stubs match as messages would: exact, + and #, $ topics skipped by leading wildcards [MQTT-4.7.2-1]", () => {
    const stubs = new RetainedIndex();
    stubs.load(recovered(topics));
    const live = new RetainedIndex();
    for (const t of topics) live.set(t, msg(t));
    const filters = ["a", "a/#", "a/+", "a/b/+", "+/b/#", "#", "+/+", "$SYS/#", "x/+/z", "b/1", "nothing/#", "ab/#"];
    for (const f of filters) {
      const got = stubs.match(f).map((e) => e.topic).sort();
      expect([f, got]).toEqual([f, live.match(f).map((e) => e.topic).sort()]);
    }
    expect(stubs.size).toBe(topics.length);
    expect(stubs.residentCount).toBe(0);
    expect(stubs.get("b/1")).toEqual({ topic: "b/1", qos: 1, bytes: 0, expiresAt: 1234 });
    expect(stubs.get("a/b")).toEqual({ topic: "a/b", qos: 1, bytes: 4 });
    expect(stubs.get("a/b/e")).toBeUndefined();
  });

  test("a topic set or cleared while running overrides its stub", () => {
    const r = new RetainedIndex();
    r.load(recovered(topics));
    r.set("a/b", msg("a/b"));
    r.set("a/b/c", undefined);
    expect(r.size).toBe(topics.length - 1);
    expect(r.residentCount).toBe(1);
    const found = r.match("a/#");
    expect(found.map((e) => e.topic).sort()).toEqual(["a", "a/b", "a/b/d", "a/\uffff"]);
    expect(found.filter(isResident).map((e) => e.topic)).toEqual(["a/b"]);
    expect(r.get("a/b/c")).toBeUndefined();
    expect([...r.all()].map((e) => e.topic).sort()).toEqual(r.match("#").map((e) => e.topic).concat("$SYS/up").sort());
    // Cleared again: nothing comes back from the stub it replaced.
    r.set("a/b", undefined);
    expect(r.get("a/b")).toBeUndefined();
    expect(r.size).toBe(topics.length - 2);
  });
});

describe("TopicTree levels", () => {
  const match = (tree: TopicTree<string>, topic: string) => [...tree.matchAll(topic)].sort();

  test("a level's first child and value are kept inline; a second of each makes a map; removing keeps the rest", () => {
    const t = new TopicTree<string>();
    t.add("a/b", "k1", "ab1");
    t.add("a/b", "k1", "ab1'"); // replaced, not added
    expect(t.size).toBe(1);
    t.add("a/c", "k1", "ac1"); // second child of "a"
    t.add("a/b", "k2", "ab2"); // second value of "a/b"
    t.add("a/#", "k3", "hash");
    expect(t.size).toBe(4);
    expect(match(t, "a/b")).toEqual(["ab1'", "ab2", "hash"]);
    expect(match(t, "a/c")).toEqual(["ac1", "hash"]);
    expect(t.remove("a/b", "k1")).toBe(true);
    expect(t.remove("a/b", "k1")).toBe(false);
    expect(match(t, "a/b")).toEqual(["ab2", "hash"]);
    expect(t.remove("a/c", "k1")).toBe(true);
    expect(t.remove("a/b", "k2")).toBe(true);
    expect(match(t, "a/b")).toEqual(["hash"]);
    expect(t.remove("a/#", "k3")).toBe(true);
    expect(t.size).toBe(0);
    // Pruned back to nothing, and usable again.
    t.add("a/b", "k9", "again");
    expect(match(t, "a/b")).toEqual(["again"]);
  });
});
