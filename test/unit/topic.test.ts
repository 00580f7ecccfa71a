import { describe, expect, test } from "bun:test";
import { parseSubscriptionFilter, topicFilterProblem, topicMatches, topicNameProblem } from "../../src/mqtt/topic.ts";
import { TopicTree } from "../../src/core/topic-tree.ts";
import { RetainedIndex } from "../../src/core/retained-index.ts";
import type { Message } from "../../src/store/store.ts";

const limits = { maxTopicLength: 64, maxTopicLevels: 4 };

describe("topic validation", () => {
  test("topic names refuse wildcards, empty names and U+0000 [MQTT-3.3.2-2] [MQTT-4.7.3-1] [MQTT-4.7.3-2]", () => {
    expect(topicNameProblem("a/b", limits)).toBeUndefined();
    expect(topicNameProblem("a/+", limits)).toBeDefined();
    expect(topicNameProblem("a/#", limits)).toBeDefined();
    expect(topicNameProblem("", limits)).toBeDefined();
    expect(topicNameProblem("a\u0000b", limits)).toBeDefined();
  });

  test("a lone surrogate (no UTF-8 form) is refused, a genuine U+FFFD and surrogate pairs are not [MQTT-1.5.4-1]", () => {
    for (const bad of ["a\uD800", "\uDC00b", "a\uD800b", "\uDBFF\uDBFF"]) {
      expect(topicNameProblem(bad, limits)).toContain("surrogate");
      expect(topicFilterProblem(bad, limits)).toContain("surrogate");
    }
    for (const ok of ["\uFFFD", "a/😀", "\uD83D\uDE00/x"]) {
      expect(topicNameProblem(ok, limits)).toBeUndefined();
      expect(topicFilterProblem(ok, limits)).toBeUndefined();
    }
    // The pair counts 4 bytes towards the length limit.
    expect(topicNameProblem("😀".repeat(16), limits)).toBeUndefined();
    expect(topicNameProblem("😀".repeat(16) + "x", limits)).toContain("longer");
  });

  test("filters accept + and # only as whole levels, # only last [MQTT-4.7.1-1] [MQTT-4.7.1-2]", () => {
    for (const ok of ["#", "+", "a/+/b", "a/#", "+/+", "/", "a//b"]) {
      expect(topicFilterProblem(ok, limits)).toBeUndefined();
    }
    for (const bad of ["a/#/b", "a+", "a/b#", "#/a", "", "a/++"]) expect(topicFilterProblem(bad, limits)).toBeDefined();
  });

  test("length and depth limits apply to names and filters", () => {
    expect(topicNameProblem("x".repeat(65), limits)).toContain("longer");
    expect(topicNameProblem("a/b/c/d/e", limits)).toContain("deeper");
    expect(topicFilterProblem("a/b/c/#/", limits)).toBeDefined();
  });

  test("$share/group/filter splits into group and filter; malformed shares are refused [MQTT-4.8.2-1] [MQTT-4.8.2-2]", () => {
    expect(parseSubscriptionFilter("$share/g1/a/+")).toEqual({ filter: "a/+", group: "g1" });
    expect(parseSubscriptionFilter("a/b")).toEqual({ filter: "a/b" });
    expect(typeof parseSubscriptionFilter("$share/g1")).toBe("string");
    expect(typeof parseSubscriptionFilter("$share//a")).toBe("string");
    expect(typeof parseSubscriptionFilter("$share/g+/a")).toBe("string");
  });

  test("topicMatches follows the wildcard rules, and leading wildcards skip $ topics [MQTT-4.7.2-1]", () => {
    expect(topicMatches("a/+/c", "a/b/c")).toBe(true);
    expect(topicMatches("a/#", "a")).toBe(true);
    expect(topicMatches("a/+", "a/b/c")).toBe(false);
    expect(topicMatches("#", "$SYS/x")).toBe(false);
    expect(topicMatches("$SYS/#", "$SYS/x")).toBe(true);
  });
});

describe("TopicTree", () => {
  const match = (tree: TopicTree<string>, topic: string) => {
    const out: string[] = [];
    tree.match(topic, (v) => out.push(v));
    return out.sort();
  };

  test("matches exact, + and # filters, including # on the parent level", () => {
    const t = new TopicTree<string>();
    t.add("a/b", "1", "exact");
    t.add("a/+", "1", "plus");
    t.add("a/#", "1", "hash");
    t.add("#", "1", "all");
    t.add("+/+/c", "1", "deep");
    expect(match(t, "a/b")).toEqual(["all", "exact", "hash", "plus"]);
    expect(match(t, "a")).toEqual(["all", "hash"]);
    expect(match(t, "a/x/c")).toEqual(["all", "deep", "hash"]);
  });

  test("leading wildcards do not match $ topics, explicit $ filters do", () => {
    const t = new TopicTree<string>();
    t.add("#", "1", "all");
    t.add("+/x", "1", "plus");
    t.add("$SYS/#", "1", "sys");
    expect(match(t, "$SYS/x")).toEqual(["sys"]);
  });

  test("remove prunes and size tracks entries", () => {
    const t = new TopicTree<string>();
    t.add("a/b/c", "k1", "v1");
    t.add("a/b/c", "k2", "v2");
    expect(t.size).toBe(2);
    expect(t.remove("a/b/c", "k1")).toBe(true);
    expect(t.remove("a/b/c", "k1")).toBe(false);
    expect(match(t, "a/b/c")).toEqual(["v2"]);
    t.remove("a/b/c", "k2");
    expect(t.size).toBe(0);
    expect(match(t, "a/b/c")).toEqual([]);
  });
});

describe("RetainedIndex", () => {
  const msg = (topic: string): Message => ({
    offset: 0,
    topic,
    payload: new Uint8Array(),
    qos: 0,
    retain: true,
    receivedAt: 0,
    origin: "",
  });

  test("wildcard lookups return matching retained topics and skip $ topics for leading wildcards", () => {
    const r = new RetainedIndex();
    for (const t of ["a", "a/b", "a/b/c", "x/b", "$SYS/up"]) r.set(t, msg(t));
    const topics = (f: string) => r.match(f).map((m) => m.topic).sort();
    expect(topics("a/#")).toEqual(["a", "a/b", "a/b/c"]);
    expect(topics("+/b")).toEqual(["a/b", "x/b"]);
    expect(topics("#")).toEqual(["a", "a/b", "a/b/c", "x/b"]);
    expect(topics("$SYS/#")).toEqual(["$SYS/up"]);
    r.set("a/b", undefined);
    expect(topics("a/#")).toEqual(["a", "a/b/c"]);
    expect(r.size).toBe(4);
  });
});
