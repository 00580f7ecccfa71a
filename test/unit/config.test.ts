import { describe, expect, test } from "bun:test";
import { ConfigError, parseConfig } from "../../src/config/load.ts";

describe("config", () => {
  test("an empty file gives the documented defaults", () => {
    const c = parseConfig("");
    expect(c.listeners.mqtt_port).toBe(1883);
    expect(c.data_dir).toBe("./data");
    expect(c.storage.durability).toBe("commit");
  });

  test("comments are allowed, and // inside strings survives", () => {
    const c = parseConfig(`{
      // where data goes
      "data_dir": "/var/lib/ferry//x", /* block */
      "listeners": { "mqtt_port": 0 }
    }`);
    expect(c.data_dir).toBe("/var/lib/ferry//x");
    expect(c.listeners.mqtt_port).toBe(0);
  });

  test("every problem is reported with its key", () => {
    try {
      parseConfig(`{ "mqtt": { "max_inflight": 0, "nope": true }, "storage": { "durability": "fast" } }`);
      throw new Error("expected a ConfigError");
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      const problems = (err as ConfigError).problems.join("\n");
      expect(problems).toContain("mqtt.max_inflight");
      expect(problems).toContain("nope");
      expect(problems).toContain("storage.durability");
    }
  });

  test("invalid JSON is a ConfigError naming the file", () => {
    expect(() => parseConfig("{", "ferry.json")).toThrow(/^ferry.json:1:2: not valid JSON/);
  });
});

/** The one problem parseConfig reports for `text`, as printed. */
function problemsOf(text: string, file = "ferry.jsonc"): string[] {
  try {
    parseConfig(text, file);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

describe("config errors have positions, words and suggestions", () => {
  test("a trailing comma is accepted, as by VS Code and most JSONC tools", () => {
    const c = parseConfig(`{\n  "mqtt": { "max_inflight": 5, },\n  "data_dir": "/tmp/x",\n}`);
    expect(c.mqtt.max_inflight).toBe(5);
  });

  test("a syntax error names the file, line and column", () => {
    expect(problemsOf(`{\n  "mqtt": {\n    "max_inflight" 5\n  }\n}`)).toEqual([
      "ferry.jsonc:3:20: not valid JSON: ':' expected",
    ]);
  });

  test("an unknown key is reported at its position with a did-you-mean", () => {
    expect(problemsOf(`{\n  "mqtt": { "max_pakcet_size": 4096 }\n}`)).toEqual([
      'ferry.jsonc:2:13 mqtt.max_pakcet_size: unknown key; did you mean "max_packet_size"?',
    ]);
    expect(problemsOf(`{ "storage": { "durability": "comit" } }`)[0]).toBe(
      'ferry.jsonc:1:30 storage.durability: must be one of "commit", "periodic", "memory" (got "comit"); did you mean "commit"?',
    );
  });

  test("a bad value says what is allowed in words, not zod's or a regex", () => {
    const [range] = problemsOf(`{ "listeners": { "mqtt_port": 70000 } }`);
    expect(range).toBe("ferry.jsonc:1:31 listeners.mqtt_port: must be at most 65535 (got 70000)");
    const [url] = problemsOf(`{ "uplinks": [{ "name": "cloud", "url": "http://cloud:1883" }] }`);
    expect(url).toStartWith("ferry.jsonc:1:41 uplinks[0].url: must be a URL mqtt://HOST[:PORT]");
    expect(url).toContain('(got "http://cloud:1883")');
    expect(url).not.toContain("/^(");
  });

  test("problems are listed in file order", () => {
    const lines = problemsOf(`{\n  "log_level": "loud",\n  "mqtt": { "receive_maximum": 0 },\n  "zzz": 1\n}`);
    expect(lines.map((l) => l.split(" ")[0])).toEqual(["ferry.jsonc:2:16", "ferry.jsonc:3:32", "ferry.jsonc:4:3"]);
  });
});

describe("config topic filters and placeholders", () => {
  test("an ACL rule whose filter MQTT would refuse is an error", () => {
    const [p] = problemsOf(`{ "acl": { "rules": [{ "action": "publish", "topic": "a/#/b", "permission": "deny" }] } }`);
    expect(p).toContain("acl.rules[0].topic: '#' must be alone in the last level: 'a/#/b'");
    // %u and %c are filled in, so they are fine inside a level.
    expect(problemsOf(`{ "acl": { "rules": [{ "action": "all", "topic": "users/%u/+/%c", "permission": "allow" }] } }`))
      .toEqual([]);
  });

  test("forward and downlink filters, templates and placeholders are checked", () => {
    const uplink = (rules: string) => `{ "uplinks": [{ "name": "c", "url": "mqtt://cloud", ${rules} }] }`;
    expect(problemsOf(uplink(`"forward": [{ "filter": "a/#/b" }]`))[0]).toContain(
      "uplinks[0].forward[0].filter: '#' must be alone in the last level",
    );
    expect(problemsOf(uplink(`"forward": [{ "filter": "a/#", "topic": "up/\${nope}/\${topic}" }]`))[0]).toContain(
      "uplinks[0].forward[0].topic: unknown placeholder '${nope}'",
    );
    expect(problemsOf(uplink(`"forward": [{ "filter": "a/#", "topic": "up/+/\${topic}" }]`))[0]).toContain(
      "uplinks[0].forward[0].topic: topic name contains a wildcard",
    );
    expect(problemsOf(uplink(`"downlink": [{ "filter": "cmd/\${edge_id}/#", "topic": "\${clientid}/x" }]`))[0])
      .toContain("uplinks[0].downlink[0].topic: unknown placeholder '${clientid}'");
    expect(problemsOf(uplink(`"forward": [{ "filter": "a/#", "strip": "\${edge_id" }]`))[0]).toContain(
      "uplinks[0].forward[0].strip: placeholder '${edge_id' is not closed",
    );
    expect(problemsOf(uplink(
      `"forward": [{ "filter": "a/#", "topic": "edge/\${edge_id}/\${topic}", "strip": "\${edge_id}/" }],
       "downlink": [{ "filter": "cmd/\${edge_id}/#", "topic": "cmd/\${topic}", "strip": "cmd/\${edge_id}/" }]`,
    ))).toEqual([]);
  });
});

describe("config files that are empty", () => {
  test("a file of only comments gives the defaults too", () => {
    expect(parseConfig("// nothing set yet\n/* all defaults */\n").listeners.mqtt_port).toBe(1883);
  });
});
