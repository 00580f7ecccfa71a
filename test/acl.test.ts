/**
 * Authorization over real sockets: ACL rules per user and client id with %u/%c, publish
 * and subscribe refused with the right codes, per-message checks under wide filters, the
 * computed default, Mosquitto's acl_file format, and reload.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Acl, filterCovers, filtersIntersect } from "../src/auth/acl.ts";
import { parseAclFile } from "../src/auth/acl-file.ts";
import { resolveAclDefault } from "../src/config/security-options.ts";
import { validateConfig } from "../src/config/load.ts";
import { startBroker, type TestBroker } from "./helpers/broker.ts";
import { barrier, connect, type TestClient } from "./helpers/clients.ts";
import { writePasswordFile } from "./helpers/password-file.ts";
import { RawClient } from "./helpers/raw-client.ts";

setDefaultTimeout(20_000);

/** The reason code of the PUBACK `publishAsync` resolved with. */
const ackCode = (p: unknown) => (p as { reasonCode?: number } | undefined)?.reasonCode;

let broker: TestBroker;
beforeAll(async () => {
  const passwordFile = await writePasswordFile({ alice: "a", bob: "b", "+": "plus", admin: "root" });
  broker = await startBroker({
    auth: { allow_anonymous: true, password_file: passwordFile },
    acl: {
      rules: [
        { action: "all", topic: "#", permission: "allow", username: "admin" },
        { action: "all", topic: "devices/%u/#", permission: "allow" },
        { action: "publish", topic: "clients/%c/out", permission: "allow" },
        { action: "subscribe", topic: "clients/%c/in", permission: "allow" },
        { action: "subscribe", topic: "public/#", permission: "allow" },
        { action: "publish", topic: "public/readonly", permission: "deny" },
        { action: "publish", topic: "public/#", permission: "allow" },
      ],
      // no acl.default: rules are configured, so it is "deny"
    },
  });
});
afterAll(() => broker.stop());

const as = (username: string | undefined, password: string | undefined, extra: Record<string, unknown> = {}) =>
  connect(broker.url, { ...(username !== undefined ? { username, password: password! } : {}), ...extra });

/** SUBACK codes for `topics`, whether or not the client library calls them failures. */
async function grants(c: TestClient, topics: string | string[], qos: 0 | 1 | 2 = 0): Promise<number[]> {
  try {
    return (await c.client.subscribeAsync(topics, { qos })).map((g) => g.qos);
  } catch (err) {
    const packet = (err as { packet?: { granted: Array<number | { qos: number }> } }).packet;
    if (!packet) throw err;
    return packet.granted.map((g) => (typeof g === "number" ? g : g.qos));
  }
}

/** What `c` received once everything `senders` sent before has been routed (see barrier). */
async function collect(c: TestClient, ...senders: TestClient[]): Promise<string[]> {
  await barrier(...senders, c);
  return c.messages.map((m) => `${m.topic}=${m.payload}`);
}

describe("ACL rules with %u and %c", () => {
  test("a user publishes and subscribes under devices/%u/# and nowhere else (v5: PUBACK and SUBACK 0x87)", async () => {
    const m = broker.server.broker.metrics;
    const [pubBefore, subBefore] = [m.aclDeniedPublish, m.aclDeniedSubscribe];
    const alice = await as("alice", "a", { protocolVersion: 5 });
    expect(await grants(alice, ["devices/alice/#", "devices/bob/#"], 1)).toEqual([1, 0x87]);
    const ok = await alice.client.publishAsync("devices/alice/temp", "21", { qos: 1 });
    expect(ackCode(ok) ?? 0).toBe(0);
    const denied = await alice.client.publishAsync("devices/bob/temp", "spoofed", { qos: 1 }).then(
      ackCode,
      (err: { code?: number }) => err.code,
    );
    expect(denied).toBe(0x87);
    expect(await collect(alice)).toEqual(["devices/alice/temp=21"]);
    expect(m.aclDeniedPublish - pubBefore).toBe(1);
    expect(m.aclDeniedSubscribe - subBefore).toBe(1);
    await alice.end();
  });

  test("3.1.1: a denied publish is acknowledged, dropped and counted; a denied subscription gets 0x80", async () => {
    const watcher = await as("bob", "b");
    await watcher.client.subscribeAsync("devices/bob/#");
    const alice = await as("alice", "a", { protocolVersion: 4 });
    const before = broker.server.broker.metrics.aclDeniedPublish;
    await alice.client.publishAsync("devices/bob/door", "open", { qos: 1 }); // PUBACK, as Mosquitto does
    expect(await grants(alice, "devices/bob/#")).toEqual([0x80]);
    expect(await collect(watcher)).toEqual([]);
    expect(broker.server.broker.metrics.aclDeniedPublish - before).toBe(1);
    await Promise.all([alice.end(), watcher.end()]);
  });

  test("%c: a client publishes only to clients/<its id>/out and subscribes only to clients/<its id>/in", async () => {
    const c = await connect(broker.url, { clientId: "sensor-7", protocolVersion: 5 });
    expect(await grants(c, ["clients/sensor-7/in", "clients/sensor-8/in", "clients/sensor-7/out"])).toEqual([
      0,
      0x87,
      0x87,
    ]);
    const reader = await as("admin", "root");
    await reader.client.subscribeAsync("clients/#");
    await c.client.publishAsync("clients/sensor-7/out", "mine", { qos: 1 });
    await c.client.publishAsync("clients/sensor-8/out", "not mine", { qos: 0 });
    expect(await collect(reader, c)).toEqual(["clients/sensor-7/out=mine"]);
    await Promise.all([c.end(), reader.end()]);
  });

  test("the first matching rule decides: public/readonly is denied before public/# allows", async () => {
    const c = await as("alice", "a", { protocolVersion: 5 });
    await c.client.subscribeAsync("public/#");
    await c.client.publishAsync("public/news", "hello", { qos: 1 });
    const code = await c.client.publishAsync("public/readonly", "x", { qos: 1 }).then(
      ackCode,
      (e: { code?: number }) => e.code,
    );
    expect(code).toBe(0x87);
    expect(await collect(c)).toEqual(["public/news=hello"]);
    await c.end();
  });

  test("a wide subscription is granted when an allow rule overlaps it, and each message is checked on the way out", async () => {
    const alice = await as("alice", "a", { protocolVersion: 5 });
    expect(await grants(alice, "devices/#")).toEqual([0]);
    const admin = await as("admin", "root");
    const before = broker.server.broker.metrics.aclDeniedDelivery;
    await admin.client.publishAsync("devices/alice/x", "for alice", { qos: 1 });
    await admin.client.publishAsync("devices/bob/x", "for bob", { qos: 1 });
    expect(await collect(alice)).toEqual(["devices/alice/x=for alice"]);
    expect(broker.server.broker.metrics.aclDeniedDelivery - before).toBe(1);
    // Retained messages are checked the same way.
    await admin.client.publishAsync("devices/bob/ret", "secret", { qos: 1, retain: true });
    const late = await as("alice", "a");
    await late.client.subscribeAsync("devices/+/ret");
    expect(await collect(late)).toEqual([]);
    await Promise.all([alice.end(), admin.end(), late.end()]);
  });

  test("a username or client id with a wildcard does not widen a %u/%c rule (CVE-2017-7650)", async () => {
    const plus = await as("+", "plus", { protocolVersion: 5 });
    expect(await grants(plus, ["devices/+/#", "devices/bob/#", "devices/+"])).toEqual([0x87, 0x87, 0x87]);
    const wild = await connect(broker.url, { clientId: "+", protocolVersion: 5 });
    expect(await grants(wild, ["clients/+/in", "clients/sensor-7/in"])).toEqual([0x87, 0x87]);
    await Promise.all([plus.end(), wild.end()]);
  });

  test("an anonymous client does not match %u rules", async () => {
    const anon = await connect(broker.url, { protocolVersion: 5 });
    expect(await grants(anon, ["devices/#", "public/x"])).toEqual([0x87, 0]);
    await anon.end();
  });

  test("a shared subscription is checked on its filter", async () => {
    const alice = await as("alice", "a", { protocolVersion: 5 });
    expect(await grants(alice, ["$share/g/devices/alice/#", "$share/g/devices/bob/#"])).toEqual([0, 0x87]);
    await alice.end();
  });
});

describe("acl.default and deny_reason", () => {
  test("no rules: allow; rules or an acl_file: deny; an explicit acl.default wins", () => {
    expect(resolveAclDefault(validateConfig({}))).toBe("allow");
    const rule = { action: "subscribe", topic: "x", permission: "deny" };
    expect(resolveAclDefault(validateConfig({ acl: { rules: [rule] } }))).toBe("deny");
    expect(resolveAclDefault(validateConfig({ acl: { acl_file: "/etc/ferry/acl" } }))).toBe("deny");
    expect(resolveAclDefault(validateConfig({ acl: { rules: [rule], default: "allow" } }))).toBe("allow");
  });

  test("deny_reason unspecified answers a denied v5 subscription with 0x80 (the Paho suite's expectation)", async () => {
    const b = await startBroker({
      acl: {
        default: "allow",
        deny_reason: "unspecified",
        rules: [{ action: "subscribe", topic: "test/nosubscribe", permission: "deny" }],
      },
    });
    const c = await connect(b.url, { protocolVersion: 5 });
    expect(await grants(c, ["test/nosubscribe", "test/other", "#"])).toEqual([0x80, 0, 0]);
    await c.end();
    await b.stop();
  });
});

describe("acl_file (Mosquitto format)", () => {
  test("parses topic, user and pattern lines, with deny lines first", () => {
    const { rules, problems } = parseAclFile(
      [
        "# anonymous clients",
        "topic read public/#",
        "user alice",
        "topic readwrite alice/#",
        "topic deny alice/secret",
        "pattern write devices/%u/%c",
        "bogus line",
      ].join("\n"),
    );
    expect(problems).toEqual([expect.stringContaining("line 7")]);
    expect(rules).toEqual([
      { topic: "alice/secret", username: "alice", action: "all", permission: "deny" },
      { topic: "public/#", anonymous: true, action: "subscribe", permission: "allow" },
      { topic: "alice/#", username: "alice", action: "all", permission: "allow" },
      { topic: "devices/%u/%c", action: "publish", permission: "allow" },
    ]);
  });

  test("a broker with an acl_file enforces it, and reload() applies a changed file", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ferry-acl-"));
    const aclFile = join(dir, "acl");
    writeFileSync(aclFile, "topic read public/#\nuser alice\ntopic alice/#\ntopic deny alice/secret\n");
    const passwordFile = await writePasswordFile({ alice: "a" }, dir);
    const b = await startBroker({
      auth: { password_file: passwordFile, allow_anonymous: true, reload_check_seconds: 0 },
      acl: { acl_file: aclFile },
    });
    try {
      const alice = await connect(b.url, { username: "alice", password: "a", protocolVersion: 5 });
      expect(await grants(alice, ["alice/#", "alice/secret", "public/#"])).toEqual([0, 0x87, 0x87]);
      const anon = await connect(b.url, { protocolVersion: 5 });
      expect(await grants(anon, ["public/#", "alice/#"])).toEqual([0, 0x87]);

      writeFileSync(aclFile, "topic read public/#\nuser alice\ntopic read public/#\n");
      await b.server.reload();
      expect(await grants(alice, ["alice/x", "public/#"])).toEqual([0x87, 0]);
      await Promise.all([alice.end(), anon.end()]);
    } finally {
      await b.stop();
    }
  });
});

describe("filter arithmetic", () => {
  test("filterCovers: every topic of the filter matches the rule", () => {
    expect(filterCovers("a/#", "a/b/+")).toBe(true);
    expect(filterCovers("a/#", "a")).toBe(true);
    expect(filterCovers("a/+", "a/b")).toBe(true);
    expect(filterCovers("a/+", "a/+")).toBe(true);
    expect(filterCovers("a/+", "a/#")).toBe(false);
    expect(filterCovers("a/b", "a/+")).toBe(false);
    expect(filterCovers("#", "$SYS/x")).toBe(false); // [MQTT-4.7.2-1]
    expect(filterCovers("$SYS/#", "$SYS/broker/+")).toBe(true);
  });

  test("filtersIntersect: some topic matches both", () => {
    expect(filtersIntersect("a/+/c", "a/b/#")).toBe(true);
    expect(filtersIntersect("a/b", "a/c")).toBe(false);
    expect(filtersIntersect("#", "$SYS/#")).toBe(false);
    expect(filtersIntersect("a", "a/#")).toBe(true);
    expect(filtersIntersect("a", "a/b")).toBe(false);
  });

  test("read checks are cached per client and reset when the rules change", () => {
    const acl = new Acl([{ action: "subscribe", topic: "x/#", permission: "allow" }], "deny");
    const who = { username: undefined, clientId: "c" };
    expect(acl.allowsRead(who, "x/1")).toBe(true);
    acl.replace([{ action: "subscribe", topic: "x/#", permission: "deny" }], "deny");
    expect(acl.allowsRead(who, "x/1")).toBe(false);
  });
});

test("a raw 3.1.1 subscriber never sees a denied publish (no PUBLISH on the wire)", async () => {
  const raw = await RawClient.connected(broker.port, 4, {
    clientId: "raw-watch",
    username: "bob",
    password: Buffer.from("b"),
  });
  raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "devices/bob/#", qos: 1 }] }, 4);
  expect((await raw.next("suback")).granted).toEqual([1]);
  const alice = await as("alice", "a", { protocolVersion: 4 });
  await alice.client.publishAsync("devices/bob/lock", "open", { qos: 1 });
  await raw.roundTrip();
  expect(raw.packets.filter((p) => p.cmd === "publish" && p.topic === "devices/bob/lock")).toHaveLength(0);
  raw.close();
  await alice.end();
});
