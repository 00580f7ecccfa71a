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
    expect(() => parseConfig("{", "ferry.json")).toThrow(/ferry.json: not valid JSON/);
  });
});
