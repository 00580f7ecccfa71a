/**
 * The configuration schema's verdicts, message for message: these are what zod 4 gave for
 * the same schema (recorded before src/config/mini-zod.ts replaced it), covering every kind
 * of issue — wrong types, ranges, integers, enums and literal unions, patterns, unknown
 * keys, missing keys, lists — and when a refinement runs: after failed checks (a pattern,
 * a range, an unknown key) it still does, after a wrong type it does not.
 */
import { describe, expect, test } from "bun:test";
import { ConfigError, validateConfig } from "../../src/config/load.ts";
import { configSchema } from "../../src/config/schema.ts";

const CASES: Array<[unknown, string[]]> = [
  [{}, []],
  [{ "mqtt": { "max_packet_size": 1.5 } }, ["mqtt.max_packet_size: must be an int, not a number (got 1.5)"]],
  [{ "mqtt": { "max_packet_size": "x" } }, ['mqtt.max_packet_size: must be a number, not a string (got "x")']],
  [{ "mqtt": { "max_packet_size": 10 } }, ["mqtt.max_packet_size: must be at least 64 (got 10)"]],
  [{ "mqtt": { "max_packet_size": 1000000000000 } }, [
    "mqtt.max_packet_size: must be at most 268435460 (got 1000000000000)",
  ]],
  [{ "mqtt": null }, ["mqtt: must be an object ({ ... }), not null (got null)"]],
  [{ "mqtt": [] }, ["mqtt: must be an object ({ ... }), not a list"]],
  [{ "mqtt": 5 }, ["mqtt: must be an object ({ ... }), not a number (got 5)"]],
  [{ "mqtt": { "nope": 1 } }, [
    "mqtt.nope: unknown key (known here: max_packet_size, max_topic_length, max_topic_levels, receive_maximum, max_inflight, max_queued_bytes, max_queued_messages, stalled_subscriber_ms, queue_qos0_messages, topic_alias_maximum, server_keep_alive, max_session_expiry, max_connections, max_buffered_bytes, connect_timeout_ms, retain_available, sys_interval)",
  ]],
  [{ "nope": 1, "zzz": 2 }, [
    "nope: unknown key (known here: listeners, tls, data_dir, edge_id, uplinks, log_level, log, mqtt, auth, acl, admin, limits, storage)",
    "zzz: unknown key (known here: listeners, tls, data_dir, edge_id, uplinks, log_level, log, mqtt, auth, acl, admin, limits, storage)",
  ]],
  [{ "listeners": { "mqtt_port": -1 } }, ["listeners.mqtt_port: must be at least 0 (got -1)"]],
  [{ "listeners": { "ws_port": "a" } }, ['listeners.ws_port: must be a number, not a string (got "a")']],
  [{ "listeners": { "ws_port": null } }, []],
  [{ "listeners": { "ws_port": 70000 } }, ["listeners.ws_port: must be at most 65535 (got 70000)"]],
  [{ "storage": { "durability": "comit" } }, [
    'storage.durability: must be one of "commit", "periodic", "memory" (got "comit"); did you mean "commit"?',
  ]],
  [{ "storage": { "durability": 3 } }, ['storage.durability: must be one of "commit", "periodic", "memory" (got 3)']],
  [{ "log_level": "verbose" }, [
    'log_level: must be one of "debug", "info", "warn", "error", "silent" (got "verbose")',
  ]],
  [{ "log_level": null }, ['log_level: must be one of "debug", "info", "warn", "error", "silent" (got null)']],
  [{ "edge_id": "a/b" }, ["edge_id: must be 1 to 128 characters without '/', '+', '#' or spaces (got \"a/b\")"]],
  [{ "edge_id": "" }, ["edge_id: must be 1 to 128 characters without '/', '+', '#' or spaces (got \"\")"]],
  [{ "edge_id": 5 }, ["edge_id: must be a string, not a number (got 5)"]],
  [{ "data_dir": 7 }, ["data_dir: must be a string, not a number (got 7)"]],
  [{ "uplinks": {} }, ["uplinks: must be a list, not an object"]],
  [{ "uplinks": [1] }, ["uplinks[0]: must be an object ({ ... }), not a number (got 1)"]],
  [{ "uplinks": [{}] }, ["uplinks[0].name: required (a string)"]],
  [{ "uplinks": [{ "name": "x" }] }, ["uplinks[0].url: an uplink needs url or urls"]],
  [{ "uplinks": [{ "name": "bad name", "url": "http://x" }] }, [
    "uplinks[0].name: must be 1 to 64 letters, digits, '_' or '-' (got \"bad name\")",
    'uplinks[0].url: must be a URL mqtt://HOST[:PORT], mqtts://, ws:// or wss://, e.g. mqtts://cloud.example:8883 (got "http://x")',
  ]],
  [{ "uplinks": [{ "name": "a", "url": "mqtt://u:p@h" }] }, [
    "uplinks[0].url: no user:password@ in the URL (it is logged); use username and password_file",
  ]],
  [{ "uplinks": [{ "name": "a", "urls": [] }] }, ["uplinks[0].urls: must be at least 1 entries"]],
  [{ "uplinks": [{ "name": "a", "urls": ["mqtt://h", 3] }] }, [
    "uplinks[0].urls[1]: must be a string, not a number (got 3)",
  ]],
  [{ "uplinks": [{ "name": "a", "url": "mqtt://h", "protocol_version": 3 }] }, [
    "uplinks[0].protocol_version: must be one of 4, 5 (got 3)",
  ]],
  [{ "uplinks": [{ "name": "a", "url": "mqtt://h", "forward": [{ "filter": "a", "qos": 5 }] }] }, [
    "uplinks[0].forward[0].qos: must be one of 0, 1, 2 (got 5)",
  ]],
  [{ "uplinks": [{ "name": "a", "url": "mqtt://h", "forward": [{ "filter": "" }] }] }, [
    'uplinks[0].forward[0].filter: must be at least 1 characters (got "")',
  ]],
  [{ "uplinks": [{ "name": "a", "url": "mqtt://h", "forward": [{}] }] }, [
    "uplinks[0].forward[0].filter: required (a string)",
  ]],
  [{ "uplinks": [{ "name": "a", "url": "mqtt://h", "downlink": [{ "filter": "c", "topic": "$SYS/x" }] }] }, [
    "uplinks[0].downlink[0].topic: a downlink cannot publish to a $ topic",
  ]],
  [{ "uplinks": [{ "name": "a", "url": "mqtt://h", "tls": { "reject_unauthorized": "no" } }] }, [
    'uplinks[0].tls.reject_unauthorized: must be a boolean, not a string (got "no")',
  ]],
  [{ "uplinks": [{ "name": "a", "url": "mqtt://h", "tls": { "bogus": 1 } }] }, [
    "uplinks[0].tls.bogus: unknown key (known here: ca, cert, key, reject_unauthorized)",
  ]],
  [{ "uplinks": [{ "name": "a", "url": "mqtt://h", "backoff": { "jitter": 2 } }] }, [
    "uplinks[0].backoff.jitter: must be at most 1 (got 2)",
  ]],
  [{ "uplinks": [{ "name": "a", "url": "mqtt://h", "rate": { "messages_per_second": -1 } }] }, [
    "uplinks[0].rate.messages_per_second: must be at least 0 (got -1)",
  ]],
  [{ "uplinks": [{ "name": "a", "url": "mqtt://h", "endpoint_policy": "random" }] }, [
    'uplinks[0].endpoint_policy: must be one of "primary-first", "round-robin" (got "random")',
  ]],
  [{ "uplinks": [{ "name": "a", "url": "mqtt://h", "downlink_acl": { "user": "x" } }] }, [
    "uplinks[0].downlink_acl.user: unknown key (known here: username, client_id)",
  ]],
  [{ "admin": { "host": "0.0.0.0" } }, [
    "admin.token: required when the admin API listens on 0.0.0.0, which is not a loopback address",
  ]],
  [{ "admin": { "host": "0.0.0.0", "token": "short" } }, ['admin.token: must be at least 16 characters (got "short")']],
  [{ "admin": { "allowed_hosts": ["a b"] } }, ['admin.allowed_hosts[0]: a host name without port, or * (got "a b")']],
  [{ "admin": { "port": null, "host": "0.0.0.0" } }, []],
  [{ "acl": { "rules": [{ "action": "read", "topic": "a", "permission": "allow" }] } }, [
    'acl.rules[0].action: must be one of "publish", "subscribe", "all" (got "read")',
  ]],
  [{ "acl": { "rules": [{ "action": "publish", "topic": "", "permission": "maybe" }] } }, [
    'acl.rules[0].topic: must be at least 1 characters (got "")',
    'acl.rules[0].permission: must be one of "allow", "deny" (got "maybe")',
  ]],
  [{ "acl": { "default": "maybe" } }, ['acl.default: must be one of "allow", "deny" (got "maybe")']],
  [{ "tls": { "ciphers": "a b" } }, ["tls.ciphers: an OpenSSL cipher list: names separated by ':' (got \"a b\")"]],
  [{ "tls": { "cert": 5 } }, ["tls.cert: must be a string, not a number (got 5)"]],
  [{ "auth": { "allow_anonymous": "yes" } }, ['auth.allow_anonymous: must be a boolean, not a string (got "yes")']],
  [{ "limits": { "flapping": { "window_seconds": 0 } } }, [
    "limits.flapping.window_seconds: must be at least 1 (got 0)",
  ]],
  [{ "limits": { "max_output_bytes": 10 } }, ["limits.max_output_bytes: must be at least 4096 (got 10)"]],
  [{ "mqtt": { "server_keep_alive": 0 } }, ["mqtt.server_keep_alive: must be at least 1 (got 0)"]],
  [[], ["(root): must be an object ({ ... }), not a list"]],
  [null, ["(root): must be an object ({ ... }), not null (got null)"]],
  ["x", ['(root): must be an object ({ ... }), not a string (got "x")']],
  [5, ["(root): must be an object ({ ... }), not a number (got 5)"]],
  [{ "storage": { "max_bytes": -5, "flush_interval_ms": 5 } }, [
    "storage.flush_interval_ms: must be at least 10 (got 5)",
    "storage.max_bytes: must be at least 0 (got -5)",
  ]],
  [{ "mqtt": { "receive_maximum": 0, "max_inflight": 70000 } }, [
    "mqtt.receive_maximum: must be at least 1 (got 0)",
    "mqtt.max_inflight: must be at most 65535 (got 70000)",
  ]],
  [{ "listeners": { "host": 5, "mqtt_port": 1.5 } }, [
    "listeners.host: must be a string, not a number (got 5)",
    "listeners.mqtt_port: must be an int, not a number (got 1.5)",
  ]],
  [{
    "uplinks": [{
      "name": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
      "url": "mqtt://h",
    }],
  }, [
    "uplinks[0].name: must be 1 to 64 letters, digits, '_' or '-' (got \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\")",
  ]],
  [{ "uplinks": [{ "name": "a", "url": "mqtt://h" }, { "name": "a", "url": "mqtt://h" }] }, []],
  [{ "uplinks": [{ "name": "bad name" }] }, [
    "uplinks[0].name: must be 1 to 64 letters, digits, '_' or '-' (got \"bad name\")",
    "uplinks[0].url: an uplink needs url or urls",
  ]],
  [{ "admin": { "host": "0.0.0.0", "nope": 1 } }, [
    "admin.nope: unknown key (known here: host, port, token, generate_token, allowed_hosts, history_interval_seconds)",
    "admin.token: required when the admin API listens on 0.0.0.0, which is not a loopback address",
  ]],
  [{ "edge_id": "", "mqtt": { "max_topic_length": 0 } }, [
    "edge_id: must be 1 to 128 characters without '/', '+', '#' or spaces (got \"\")",
    "mqtt.max_topic_length: must be at least 1 (got 0)",
  ]],
];

function problemsOf(input: unknown): string[] {
  try {
    validateConfig(input);
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
}

describe("configuration schema", () => {
  test("every case gets the problems zod reported, in the same order", () => {
    for (const [input, problems] of CASES) {
      expect([JSON.stringify(input), problemsOf(input)]).toEqual([JSON.stringify(input), problems]);
    }
  });

  test("defaults: absent objects get their own defaults, each parse a fresh copy", () => {
    const a = validateConfig({});
    const b = validateConfig({ uplinks: [{ name: "u", url: "mqtt://h" }] });
    expect(a.mqtt.max_packet_size).toBe(1_048_576);
    expect(a.listeners.ws_port).toBeNull();
    expect(a.uplinks).toEqual([]);
    expect(a.uplinks).not.toBe(validateConfig({}).uplinks);
    const u = b.uplinks[0]!;
    expect(u.tls).toEqual({ reject_unauthorized: true });
    expect(u.forward).toEqual([]);
    expect(u.protocol_version).toBe(5);
    // An optional key that was absent stays absent.
    expect("client_id" in u).toBe(false);
    expect(configSchema.safeParse({ log_level: "debug" }).success).toBe(true);
  });
});
