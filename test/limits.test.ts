/**
 * Abuse limits, each tripping and then recovering once its window or ban has passed:
 * connection rate and connection count per address, flapping client ids, password
 * guessing, publish rate, and the per-session queue memory bound. Those that wait for a
 * window or a ban run in process on a manual clock (helpers/in-process-broker.ts); the
 * rest over real sockets. The clients are on loopback, so `limits.exempt_loopback` is off.
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import type { IConnackPacket } from "mqtt-packet";
import { BanList, ipOf, isLoopback, TokenBucket } from "../src/auth/limits.ts";
import { validateConfig } from "../src/config/load.ts";
import { startBroker } from "./helpers/broker.ts";
import { inProcessBroker } from "./helpers/in-process-broker.ts";
import { barrier, connect, eventually } from "./helpers/clients.ts";
import { writePasswordFile } from "./helpers/password-file.ts";
import { rawConnect } from "./helpers/raw-client.ts";

setDefaultTimeout(20_000);

const noExempt = { exempt_loopback: false };

const code = (ack: IConnackPacket) => ack.reasonCode ?? ack.returnCode;

describe("loopback clients", () => {
  test("are not exempt by default: behind a local proxy or TLS terminator every client is on loopback", async () => {
    // exempt_loopback undefined: the schema's default, not the test helpers' exemption.
    const b = await startBroker({ limits: { exempt_loopback: undefined, connection_rate_per_ip: 2 } });
    try {
      expect(validateConfig({}).limits.exempt_loopback).toBe(false);
      const results = await Promise.all(
        Array.from({ length: 4 }, (_, i) => rawConnect(b.port, 5, { clientId: `loop-${i}` })),
      );
      const codes = results.map((r) => code(r.ack)).sort();
      expect(codes).toEqual([0, 0, 0x9f, 0x9f]);
      for (const r of results) r.raw.close();
    } finally {
      await b.stop();
    }
  });
});

describe("connections per address", () => {
  test("connection_rate_per_ip: the excess gets CONNACK 0x9F (3.1.1: code 3) and a close; a second later it is fine again", async () => {
    const b = await inProcessBroker({ limits: { ...noExempt, connection_rate_per_ip: 3 } });
    try {
      const results = await Promise.all(
        Array.from({ length: 6 }, (_, i) => b.attempt(5, { clientId: `rate-${i}` })),
      );
      const codes = results.map((r) => code(r.ack));
      expect(codes.filter((c) => c === 0)).toHaveLength(3);
      expect(codes.filter((c) => c === 0x9f)).toHaveLength(3);
      for (const r of results.filter((r) => code(r.ack) === 0x9f)) await r.raw.waitClosed();
      expect(b.broker.metrics.refusedConnectionRate).toBe(3);
      const v4 = await b.attempt(4, { clientId: "rate-v4" });
      expect(code(v4.ack)).toBe(3);
      await b.advance(1100);
      const again = await b.attempt(5, { clientId: "rate-later" });
      expect(code(again.ack)).toBe(0);
      for (const r of [...results, v4, again]) r.raw.close();
    } finally {
      await b.stop();
    }
  });

  test("a refused connection that sends nothing is closed within a second", async () => {
    const b = await inProcessBroker({ limits: { ...noExempt, connection_rate_per_ip: 1 } });
    try {
      const first = b.open(5, "127.0.0.1:1");
      const silent = b.open(5, "127.0.0.1:2");
      await b.advance(1000);
      await silent.waitClosed(100);
      expect(first.closed).toBe(false);
      first.close();
    } finally {
      await b.stop();
    }
  });

  test("max_connections_per_ip: one more gets 0x97 (3.1.1: code 3); after one leaves there is room again", async () => {
    const b = await startBroker({ limits: { ...noExempt, max_connections_per_ip: 2, connection_rate_per_ip: 0 } });
    try {
      const one = await rawConnect(b.port, 5, { clientId: "cap-1" });
      const two = await rawConnect(b.port, 4, { clientId: "cap-2" });
      expect([code(one.ack), code(two.ack)]).toEqual([0, 0]);
      const three = await rawConnect(b.port, 5, { clientId: "cap-3" });
      expect(code(three.ack)).toBe(0x97);
      await three.raw.waitClosed();
      const four = await rawConnect(b.port, 4, { clientId: "cap-4" });
      expect(code(four.ack)).toBe(3);
      await four.raw.waitClosed();
      expect(b.server.broker.metrics.refusedConnectionsPerIp).toBe(2);
      one.raw.close();
      await eventually(() => b.server.broker.clients.size === 1, 2000, "the first client to be gone");
      const five = await rawConnect(b.port, 5, { clientId: "cap-5" });
      expect(code(five.ack)).toBe(0);
      two.raw.close();
      five.raw.close();
    } finally {
      await b.stop();
    }
  });

  test("loopback clients are exempt with limits.exempt_loopback: true", async () => {
    const b = await startBroker({
      limits: { exempt_loopback: true, connection_rate_per_ip: 1, max_connections_per_ip: 1 },
    });
    try {
      const all = await Promise.all(
        Array.from({ length: 4 }, (_, i) => rawConnect(b.port, 5, { clientId: `exempt-${i}` })),
      );
      expect(all.map((r) => code(r.ack))).toEqual([0, 0, 0, 0]);
      for (const r of all) r.raw.close();
    } finally {
      await b.stop();
    }
  });
});

describe("bans", () => {
  test("flapping: a client id connecting more than max_connects times in the window is banned (0x8A / code 5) until the ban ends", async () => {
    const b = await inProcessBroker({
      limits: {
        ...noExempt,
        connection_rate_per_ip: 0,
        flapping: { max_connects: 3, window_seconds: 10, ban_seconds: 1 },
      },
    });
    try {
      for (let i = 0; i < 3; i++) {
        const r = await b.attempt(5, { clientId: "flappy" });
        expect(code(r.ack)).toBe(0);
        r.raw.close();
      }
      const banned = await b.attempt(5, { clientId: "flappy" });
      expect(code(banned.ack)).toBe(0x8a);
      await banned.raw.waitClosed();
      const bannedV4 = await b.attempt(4, { clientId: "flappy" });
      expect(code(bannedV4.ack)).toBe(5);
      // Other client ids are not affected.
      const other = await b.attempt(5, { clientId: "steady" });
      expect(code(other.ack)).toBe(0);
      expect(b.broker.metrics.bansFlapping).toBe(1);
      await b.advance(1100);
      const back = await b.attempt(5, { clientId: "flappy" });
      expect(code(back.ack)).toBe(0);
      other.raw.close();
      back.raw.close();
    } finally {
      await b.stop();
    }
  });

  test("password guessing: more than auth_failures.max failures ban the address, even for the right password, until the ban ends", async () => {
    const passwordFile = await writePasswordFile({ victim: "right" });
    const b = await inProcessBroker({
      auth: { password_file: passwordFile, allow_anonymous: false },
      limits: { ...noExempt, connection_rate_per_ip: 0, auth_failures: { max: 2, window_seconds: 10, ban_seconds: 1 } },
    });
    try {
      for (let i = 0; i < 3; i++) {
        const r = await b.attempt(5, {
          clientId: `guess-${i}`,
          username: "victim",
          password: Buffer.from(`guess-${i}`),
        });
        expect(code(r.ack)).toBe(0x86);
      }
      const right = await b.attempt(5, {
        clientId: "guess-ok",
        username: "victim",
        password: Buffer.from("right"),
      });
      expect(code(right.ack)).toBe(0x8a);
      expect(b.broker.metrics.bansAuthFailures).toBe(1);
      await b.advance(1100);
      const later = await b.attempt(4, {
        clientId: "guess-later",
        username: "victim",
        password: Buffer.from("right"),
      });
      expect(code(later.ack)).toBe(0);
      later.raw.close();
    } finally {
      await b.stop();
    }
  });
});

describe("per-client rates and memory", () => {
  test("max_publish_rate: a v5 client publishing faster gets DISCONNECT 0x96; one at the allowed rate stays", async () => {
    // On a manual clock: the allowed rate is kept by advancing time, not by sleeping.
    const b = await inProcessBroker({ limits: { ...noExempt, connection_rate_per_ip: 0, max_publish_rate: 20 } });
    try {
      const fast = await b.connected(5, { clientId: "fast" });
      for (let i = 0; i < 60; i++) {
        fast.send({ cmd: "publish", topic: "rate/x", payload: "x", qos: 0, retain: false, dup: false });
      }
      const d = await fast.next("disconnect");
      expect(d.reasonCode).toBe(0x96);
      await fast.waitClosed();
      expect(b.broker.metrics.disconnectedMessageRate).toBe(1);
      // The same client, reconnected, starts with a fresh allowance.
      const again = await b.connected(5, { clientId: "fast" });
      for (let i = 0; i < 10; i++) {
        again.send({
          cmd: "publish",
          topic: "rate/x",
          payload: "x",
          qos: 1,
          messageId: i + 1,
          retain: false,
          dup: false,
        });
      }
      for (let i = 0; i < 10; i++) await again.next("puback");
      expect(again.closed).toBe(false);
      again.close();
      // 3.1.1 has no DISCONNECT from the server: the connection is closed.
      const fast4 = await b.connected(4, { clientId: "fast4" });
      for (let i = 0; i < 60; i++) {
        fast4.send({ cmd: "publish", topic: "rate/x", payload: "x", qos: 0, retain: false, dup: false }, 4);
      }
      await fast4.waitClosed();
      // Within the rate (a burst of one second's worth, then 10/s), a client is left alone.
      const polite = await b.connected(5, { clientId: "polite" });
      for (let i = 0; i < 30; i++) {
        polite.send({
          cmd: "publish",
          topic: "rate/x",
          payload: "x",
          qos: 1,
          messageId: i + 1,
          retain: false,
          dup: false,
        });
        await polite.next("puback");
        if (i >= 15) await b.advance(100);
      }
      expect(polite.closed).toBe(false);
      polite.close();
    } finally {
      await b.stop();
    }
  });

  test("max_queued_bytes bounds what an offline session holds; after it drains, it queues again", async () => {
    const b = await startBroker({ mqtt: { max_queued_bytes: 4096 } });
    try {
      const opts = {
        clientId: "slow",
        clean: false,
        protocolVersion: 5 as const,
        properties: { sessionExpiryInterval: 300 },
      };
      const sub = await connect(b.url, opts);
      await sub.client.subscribeAsync("bulk/#", { qos: 1 });
      await sub.end();
      const pub = await connect(b.url);
      const kb = "k".repeat(1024);
      for (let i = 0; i < 10; i++) await pub.client.publishAsync(`bulk/${i}`, kb, { qos: 1 });
      const core = b.server.broker;
      // The first message always fits; the bound allows 4 KiB in all.
      expect(core.sessions.get("slow")!.queuedBytes).toBeLessThanOrEqual(4096);
      expect(core.metrics.droppedQueueBytes).toBe(6);
      const back = await connect(b.url, opts);
      await back.waitFor(4);
      await barrier(back);
      expect(back.messages.map((m) => m.topic)).toEqual(["bulk/0", "bulk/1", "bulk/2", "bulk/3"]);
      await back.end();
      await pub.client.publishAsync("bulk/again", kb, { qos: 1 });
      expect(core.sessions.get("slow")!.queuedCount).toBe(1);
      await pub.end();
    } finally {
      await b.stop();
    }
  });
});

describe("limit building blocks", () => {
  test("TokenBucket allows a second's worth at once, then refills", () => {
    const t = new TokenBucket(2, 0);
    expect([t.take(0), t.take(0), t.take(0)]).toEqual([true, true, false]);
    expect(t.take(500)).toBe(true);
    expect(t.isFull(2000)).toBe(true);
  });

  test("BanList bans on one event over the limit, forgets old events, and lifts the ban", () => {
    const bans = new BanList({ max: 2, windowSeconds: 10, banSeconds: 5 });
    expect([bans.record("k", 0), bans.record("k", 1000), bans.record("k", 20_000)]).toEqual([false, false, false]);
    expect(bans.record("k", 21_000)).toBe(false);
    expect(bans.record("k", 22_000)).toBe(true);
    expect(bans.bannedUntil("k", 26_000)).toBe(27_000);
    expect(bans.bannedUntil("k", 27_000)).toBeUndefined();
  });

  test("BanList memory is bounded", () => {
    const bans = new BanList({ max: 5, windowSeconds: 60, banSeconds: 60 }, 100);
    for (let i = 0; i < 1000; i++) bans.record(`id-${i}`, i);
    expect(bans.size.keys).toBeLessThanOrEqual(100);
  });

  test("addresses: ports are stripped, loopback is recognised", () => {
    expect(ipOf(undefined, "10.0.0.1:5555")).toBe("10.0.0.1");
    expect(ipOf(undefined, "::1:5555")).toBe("::1");
    expect(ipOf(undefined, "[fe80::1]:5555")).toBe("fe80::1");
    expect(ipOf("::1", "whatever")).toBe("::1");
    expect([isLoopback("127.0.0.1"), isLoopback("127.8.0.1"), isLoopback("::1"), isLoopback("::ffff:127.0.0.1")])
      .toEqual([true, true, true, true]);
    expect([isLoopback("10.0.0.1"), isLoopback("::ffff:10.0.0.1")]).toEqual([false, false]);
  });
});
