/**
 * The uplink's timing and pacing logic on a manual clock, with an in-memory log and a
 * scripted cloud (test/helpers/fake-uplink.ts): backoff, failover across endpoints, the
 * ack watchdog, DISCONNECT with Server Reference, the rate limit, the cloud's Receive
 * Maximum and quota replies, the properties a message carries, and the counters. No
 * test here sleeps; the same behaviour over real sockets is in test/uplink*.test.ts.
 */
import { describe, expect, test } from "bun:test";
import { ACK_HOLD_MS } from "../../src/sync/uplink-link.ts";
import { settle, uplinkHarness } from "../helpers/fake-uplink.ts";

const user = (p: { properties?: { userProperties?: Record<string, string | string[]> } }) =>
  p.properties?.userProperties ?? {};

describe("uplink backoff and failover (manual clock)", () => {
  test("a cloud that refuses is retried with a doubling delay capped at backoff.max_ms; each attempt is counted", async () => {
    const h = uplinkHarness({}, { start: false });
    h.cloud.down.add("mqtt://a.example:1883");
    h.link.start(0);
    await settle();
    expect(h.cloud.attempts.length).toBe(1);
    // Delays 100, 200, 400, 800, 1600, 1600 (jitter 0).
    const times: number[] = [];
    const t0 = h.clock.now();
    for (let i = 0; i < 6; i++) {
      const before = h.cloud.attempts.length;
      while (h.cloud.attempts.length === before) await h.advance(50);
      times.push(h.clock.now() - t0);
    }
    expect(times).toEqual([100, 300, 700, 1500, 3100, 4700]);
    const s = h.link.status();
    expect(s.connectAttempts).toBe(7);
    expect(s.reconnects).toBe(0); // no connection was ever up
    expect(s.state).toBe("backoff");
    expect(s.lastError).toMatch(/^connect: connect ECONNREFUSED/);
  });

  test("urls: a refused endpoint fails over to the next at once; status shows which is in use and each one's last error", async () => {
    const h = uplinkHarness({ url: undefined, urls: ["mqtt://a:1883", "mqtt://b:1883", "mqtt://c:1883"] }, {
      start: false,
    });
    h.cloud.down.add("mqtt://a:1883");
    h.cloud.down.add("mqtt://b:1883");
    h.link.start(0);
    await h.advance(250); // two failovers at min_ms each, no growing backoff
    expect(h.cloud.attempts).toEqual(["mqtt://a:1883", "mqtt://b:1883", "mqtt://c:1883"]);
    const s = h.link.status();
    expect(s.state).toBe("connected");
    expect(s.url).toBe("mqtt://c:1883");
    expect(s.endpoints.map((e) => [e.url, e.lastError !== undefined, e.attempts])).toEqual([
      ["mqtt://a:1883", true, 1],
      ["mqtt://b:1883", true, 1],
      ["mqtt://c:1883", false, 1],
    ]);
    expect(s.connectAttempts).toBe(3);
    // The same client id at every endpoint, so a cluster keeps the session.
    expect(h.cloud.lastOptions!.clientId).toBe("ferry-edge1-cloud");
    expect(h.cloud.lastOptions!.cleanStart).toBe(false);
  });

  test("primary-first: after the connection to a secondary ends, the primary is tried first again", async () => {
    const h = uplinkHarness({ url: "mqtt://a:1883", urls: ["mqtt://b:1883"] }, { start: false });
    h.cloud.down.add("mqtt://a:1883");
    h.link.start(0);
    await h.advance(150);
    expect(h.link.status().url).toBe("mqtt://b:1883");
    h.cloud.down.delete("mqtt://a:1883");
    h.cloud.current!.drop();
    await h.advance(2000);
    expect(h.cloud.attempts).toEqual(["mqtt://a:1883", "mqtt://b:1883", "mqtt://a:1883"]);
    expect(h.link.status().reconnects).toBe(1);
  });

  test("round-robin: every new connection goes to the next endpoint", async () => {
    const h = uplinkHarness({ url: undefined, urls: ["mqtt://a:1", "mqtt://b:1"], endpoint_policy: "round-robin" });
    await settle();
    for (let i = 0; i < 3; i++) {
      h.cloud.current!.drop();
      await h.advance(2000);
    }
    expect(h.cloud.attempts).toEqual(["mqtt://a:1", "mqtt://b:1", "mqtt://a:1", "mqtt://b:1"]);
  });

  test("ack watchdog: in flight and unacknowledged for ack_timeout_seconds, the link moves to the next endpoint and re-sends with DUP", async () => {
    const h = uplinkHarness({ url: undefined, urls: ["mqtt://a:1", "mqtt://b:1"], ack_timeout_seconds: 5 });
    await settle();
    for (let i = 0; i < 3; i++) h.publish("sensors/x", String(i));
    const first = h.cloud.current!;
    expect(first.sent.length).toBe(3);
    await h.advance(5000);
    expect(h.link.status().reconnects).toBe(0); // 5 s is not more than 5 s
    await h.advance(1000);
    expect(h.link.status().reconnects).toBe(1);
    expect(h.link.status().lastError).toMatch(/no acknowledgement/);
    await h.advance(200);
    const second = h.cloud.current!;
    expect(second.url).toBe("mqtt://b:1");
    expect(second.sent.map((p) => [new TextDecoder().decode(p.payload), p.dup])).toEqual([
      ["0", true],
      ["1", true],
      ["2", true],
    ]);
    expect(h.link.status().endpoints[0]!.lastError).toMatch(/no acknowledgement/);
    second.ackAll();
    await settle();
    expect(h.link.status().cursor).toBe(3);
  });

  test("a cloud that keeps acknowledging slowly is not cut by the watchdog", async () => {
    const h = uplinkHarness({ ack_timeout_seconds: 5, max_inflight: 1 });
    await settle();
    for (let i = 0; i < 10; i++) h.publish("sensors/x", String(i));
    for (let i = 0; i < 10; i++) {
      await h.advance(4000);
      h.cloud.current!.ackAll();
      await settle();
    }
    expect(h.link.status().reconnects).toBe(0);
    expect(h.link.status().acknowledged).toBe(10);
  });

  test("DISCONNECT 0x9C with a Server Reference: the next connection goes there; 0x9D without one: the next endpoint", async () => {
    const h = uplinkHarness({ url: undefined, urls: ["mqtt://a:1883", "mqtt://b:1883"] });
    await settle();
    h.cloud.current!.drop("cloud sent DISCONNECT 0x9c", { reasonCode: 0x9c, serverReference: "elsewhere:2883" });
    await h.advance(150);
    expect(h.cloud.attempts).toEqual(["mqtt://a:1883", "mqtt://elsewhere:2883"]);
    expect(h.link.status().url).toBe("mqtt://elsewhere:2883");
    h.cloud.current!.drop("cloud sent DISCONNECT 0x9d", { reasonCode: 0x9d });
    await h.advance(150);
    // After the referenced server, the list resumes after the endpoint that sent us away.
    expect(h.cloud.attempts.at(-1)).toBe("mqtt://b:1883");
  });
});

describe("uplink pacing (manual clock)", () => {
  test("rate.messages_per_second: a second's burst, then the rate", async () => {
    const h = uplinkHarness({ rate: { messages_per_second: 10 } }, {
      backlog: Array.from({ length: 100 }, (_, i): [string, string] => ["sensors/r", String(i)]),
    });
    await settle();
    const acker = () => h.cloud.current?.ackAll();
    acker();
    expect(h.cloud.sent.length).toBe(10);
    for (let i = 0; i < 30; i++) {
      await h.advance(100);
      acker();
    }
    // 3 s later: 10 in the burst and 10/s since (±1 for the tick boundary).
    expect(h.cloud.sent.length).toBeGreaterThanOrEqual(39);
    expect(h.cloud.sent.length).toBeLessThanOrEqual(41);
  });

  test("rate.bytes_per_second: ~1 kB messages at 5 kB/s go at ~5 a second", async () => {
    const kb = "x".repeat(1000);
    const h = uplinkHarness({ rate: { bytes_per_second: 5000 } }, {
      backlog: Array.from({ length: 50 }, (_, i): [string, string] => ["sensors/b", `${i % 10}${kb}`]),
    });
    await settle();
    for (let i = 0; i < 20; i++) {
      h.cloud.current?.ackAll();
      await h.advance(100);
    }
    expect(h.cloud.sent.length).toBeGreaterThanOrEqual(14);
    expect(h.cloud.sent.length).toBeLessThanOrEqual(16);
  });

  test("slow start: a new connection with a backlog sends 8, then opens by one per acknowledgement up to max_inflight", async () => {
    const h = uplinkHarness({ max_inflight: 50 }, {
      backlog: Array.from({ length: 300 }, (_, i): [string, string] => ["sensors/s", String(i)]),
    });
    await settle();
    const c = h.cloud.current!;
    expect(c.unacked).toBe(8);
    for (let acked = 1; acked <= 45; acked++) {
      c.sent.find((s) => !s.acked)!.ack();
      await settle();
      expect(h.link.status().window).toBe(Math.min(50, 8 + acked));
      expect(c.unacked).toBeLessThanOrEqual(h.link.status().window);
    }
    expect(h.link.status().window).toBe(50);
  });

  /** A link draining a backlog of 600, acknowledged until its window has grown to `maxInflight` and is full. */
  async function drainingWithFullWindow(maxInflight: number) {
    const h = uplinkHarness({ max_inflight: maxInflight }, {
      backlog: Array.from({ length: 600 }, (_, i): [string, string] => ["sensors/s", String(i)]),
    });
    await settle();
    const c = h.cloud.current!;
    for (let round = 0; round < 6; round++) {
      c.ackAll();
      await settle();
    }
    return { h, c };
  }

  test("a full window is refilled once an eighth of it is free, in one go (one socket write, not one per acknowledgement)", async () => {
    const { h, c } = await drainingWithFullWindow(80);
    expect(h.link.status().window).toBe(80);
    expect(c.unacked).toBe(80);
    const sentBefore = c.sent.length;
    for (let i = 0; i < 9; i++) {
      c.sent.find((s) => !s.acked)!.ack();
      await settle();
    }
    expect(c.sent.length).toBe(sentBefore); // 71 in flight: more than 80 - 80/8
    c.sent.find((s) => !s.acked)!.ack();
    await settle();
    expect(c.sent.length).toBe(sentBefore + 10);
    expect(c.unacked).toBe(80);
    // In order all the same.
    expect(c.sent.map((s) => new TextDecoder().decode(s.payload))).toEqual(
      Array.from({ length: c.sent.length }, (_, i) => String(i)),
    );
  });

  test("draining with a full window, an acknowledgement that frees too little to refill holds the cloud's reads (ACK_HOLD_MS); one that refills does not", async () => {
    const { c } = await drainingWithFullWindow(80);
    expect(c.unacked).toBe(80);
    c.holds.length = 0;
    const sentBefore = c.sent.length;
    // 79 and down to 71 in flight: no refill, so each of these asks for a hold.
    for (let i = 0; i < 9; i++) {
      c.sent.find((s) => !s.acked)!.ack();
      await settle();
      expect(c.holds.length).toBe(i + 1);
    }
    expect(c.holds.every((x) => x.ms === ACK_HOLD_MS && x.sent === sentBefore)).toBe(true);
    // 70 in flight: this one refills (10 more go out) and asks for no hold.
    c.sent.find((s) => !s.acked)!.ack();
    await settle();
    expect(c.sent.length).toBe(sentBefore + 10);
    expect(c.holds.length).toBe(9);
  });

  test("no read hold once the backlog is sent (the last acknowledgements), for live traffic, or for a small window", async () => {
    // The end of a drain: the window holds the last messages and nothing waits behind them.
    const end = uplinkHarness({ max_inflight: 80 }, {
      backlog: Array.from({ length: 80 }, (_, i): [string, string] => ["sensors/s", String(i)]),
    });
    await settle();
    for (let round = 0; round < 6 && end.cloud.sent.length < 80; round++) {
      end.cloud.current!.ackAll();
      await settle();
    }
    const c = end.cloud.current!;
    expect(c.sent.length).toBe(80);
    c.holds.length = 0;
    while (c.unacked > 0) {
      c.sent.find((s) => !s.acked)!.ack();
      await settle();
    }
    expect(c.holds).toEqual([]);
    expect(end.log.messages.length).toBe(80);

    // Live: messages one at a time, acknowledged as they go.
    const live = uplinkHarness({ max_inflight: 80 });
    await settle();
    for (let i = 0; i < 50; i++) {
      live.publish("sensors/s", String(i));
      await settle();
      live.cloud.current!.ackAll();
      await settle();
    }
    expect(live.cloud.sent.length).toBe(50);
    expect(live.cloud.current!.holds).toEqual([]);

    // A window of 8: an eighth of it is one message, every acknowledgement refills.
    const small = uplinkHarness({ max_inflight: 8 }, {
      backlog: Array.from({ length: 100 }, (_, i): [string, string] => ["sensors/s", String(i)]),
    });
    await settle();
    for (let i = 0; i < 40; i++) {
      small.cloud.current!.sent.find((s) => !s.acked)!.ack();
      await settle();
    }
    expect(small.cloud.current!.holds).toEqual([]);
  });

  test("the cloud's Receive Maximum caps the messages in flight below max_inflight", async () => {
    const h = uplinkHarness({ max_inflight: 100 }, { start: false });
    h.cloud.receiveMaximum = 3;
    h.link.start(0);
    await settle();
    for (let i = 0; i < 20; i++) h.publish("sensors/x", String(i));
    expect(h.cloud.current!.unacked).toBe(3);
    expect(h.link.status().window).toBe(3);
    let maxSeen = 0;
    while (h.link.status().acknowledged < 20) {
      maxSeen = Math.max(maxSeen, h.cloud.current!.unacked);
      h.cloud.current!.sent.find((s) => !s.acked)!.ack();
      await settle();
    }
    expect(maxSeen).toBe(3);
  });

  test("0x97 Quota exceeded: no disconnect; the message is sent again after a hold, first arrivals stay in order", async () => {
    const h = uplinkHarness({ max_inflight: 10 });
    await settle();
    for (let i = 0; i < 5; i++) h.publish("sensors/q", String(i));
    const c = h.cloud.current!;
    expect(c.sent.length).toBe(5);
    c.sent[0]!.ack(0x97);
    for (const s of c.sent.slice(1)) s.ack(0x97);
    await settle();
    expect(h.link.status().reconnects).toBe(0);
    expect(h.link.status().quotaBackoffs).toBe(5);
    expect(h.link.status().window).toBe(1);
    expect(c.sent.length).toBe(5); // holding back
    await h.advance(999);
    expect(c.sent.length).toBe(5);
    // The hold doubles with each reply (1 s, 2 s, … capped at backoff.max_ms = 1.6 s).
    await h.advance(1700);
    expect(c.sent.length).toBe(6);
    expect(new TextDecoder().decode(c.sent[5]!.payload)).toBe("0");
    // Acknowledged now: one at a time, in order, and the window opens again.
    for (let i = 0; i < 4; i++) {
      c.sent.at(-1)!.ack();
      await settle();
    }
    expect(c.sent.slice(5).map((s) => new TextDecoder().decode(s.payload))).toEqual(["0", "1", "2", "3", "4"]);
    c.ackAll();
    await settle();
    expect(h.link.status().cursor).toBe(5);
    expect(h.link.status().acknowledged).toBe(5);
    expect(h.cloud.connections.length).toBe(1);
  });
});

// Ferry's own client for mqtt:// takes the PUBLISH bytes the link encodes; MQTT.js (ws://) objects.
for (const client of ["encoded", "objects"] as const) {
  describe(`what a forwarded message carries (manual clock, ${client})`, () => {
    const harness = (uplink: Record<string, unknown> = {}, opts: Parameters<typeof uplinkHarness>[1] = {}) =>
      uplinkHarness(uplink, { ...opts, client });

    test("dedup key (edge id, log id, offset) is the same on a re-send; ferry-replay marks the backlog, not live messages", async () => {
      const h = harness({}, { start: false, backlog: [["sensors/old", "0"], ["sensors/old", "1"]] });
      h.link.start(0);
      await settle();
      h.publish("sensors/new", "2");
      const c = h.cloud.current!;
      expect(c.sent.map((p) => [p.topic, user(p)["ferry-offset"], user(p)["ferry-replay"]])).toEqual([
        ["site/edge1/sensors/old", "1", "true"],
        ["site/edge1/sensors/old", "2", "true"],
        ["site/edge1/sensors/new", "3", undefined],
      ]);
      for (const p of c.sent) {
        expect(user(p)["ferry-edge-id"]).toBe("edge1");
        expect(user(p)["ferry-log-id"]).toBe("log1");
        expect(user(p)["ferry-clock"]).toBe("unknown");
        expect(user(p)["ferry-received-at"]).toBe(new Date(h.clock.now()).toISOString());
      }
      c.drop();
      await h.advance(200);
      const again = h.cloud.current!.sent;
      expect(again.map((p) => [user(p)["ferry-offset"], user(p)["ferry-replay"], p.dup])).toEqual([
        ["1", "true", true],
        ["2", "true", true],
        ["3", "true", true],
      ]);
    });

    test("envelope json (for 3.1.1): the payload is wrapped with the dedup key, capture time, clock state and replay marker; binary as base64", async () => {
      const h = harness({ protocol_version: 4, envelope: "json" }, {
        start: false,
        backlog: [["sensors/e", "21.5"]],
      });
      h.link.start(0);
      await settle();
      const m = h.log.append(undefined, "sensors/e", "");
      m.payload = new Uint8Array([0xff, 0x00, 0x80]);
      h.link.onLogged(m);
      const [first, second] = h.cloud.current!.sent.map((p) => JSON.parse(new TextDecoder().decode(p.payload)));
      expect(first).toEqual({
        ferry: {
          edge_id: "edge1",
          log_id: "log1",
          offset: 1,
          received_at: new Date(h.clock.now()).toISOString(),
          clock: "unknown",
          replay: true,
        },
        encoding: "utf8",
        payload: "21.5",
      });
      expect(second.ferry.offset).toBe(2);
      expect(second.ferry.replay).toBe(false);
      expect(second.encoding).toBe("base64");
      expect([...Buffer.from(second.payload, "base64")]).toEqual([0xff, 0x00, 0x80]);
      expect(h.cloud.current!.sent[0]!.properties).toBeUndefined();
    });

    test("a publisher cannot fake the replay marker or the dedup key", async () => {
      const h = harness();
      await settle();
      const m = h.log.append(undefined, "sensors/x", "1");
      m.properties = { userProperties: { "ferry-replay": "true", "ferry-offset": "999" } };
      h.link.onLogged(m);
      const p = h.cloud.current!.sent[0]!;
      expect(user(p)["ferry-replay"]).toBeUndefined();
      expect(user(p)["ferry-offset"]).toBe("1");
    });

    test("MQTT 3.1.1: no properties at all", async () => {
      const h = harness({ protocol_version: 4 });
      await settle();
      h.publish("sensors/x", "1");
      expect(h.cloud.current!.sent[0]!.properties).toBeUndefined();
    });

    test("a remote topic that renders invalid (${clientid} = 'evil/#') is skipped, counted and logged; the queue moves on", async () => {
      const h = harness({ forward: [{ filter: "sensors/#", topic: "d/${clientid}/${topic}" }] });
      await settle();
      h.publish("sensors/a", "1", "evil/#");
      h.publish("sensors/a", "2", "good");
      const c = h.cloud.current!;
      expect(c.sent.map((p) => p.topic)).toEqual(["d/good/sensors/a"]);
      c.ackAll();
      await settle();
      const s = h.link.status();
      expect(s.droppedInvalid).toBe(1);
      expect(s.cursor).toBe(2);
      expect(h.log.lines.some((l) => l.startsWith("warn") && l.includes("invalid"))).toBe(true);
    });
  });
}

describe("uplink counters (manual clock)", () => {
  test("oldest pending comes from the log: it climbs during an outage, when nothing is read ahead", async () => {
    const h = uplinkHarness({}, { start: false });
    h.cloud.down.add("mqtt://a.example:1883");
    h.link.start(0);
    h.publish("sensors/x", "0");
    await h.advance(10_000);
    h.publish("sensors/x", "1");
    await h.advance(20_000);
    const s = h.link.status();
    expect(s.state).not.toBe("connected");
    expect(s.oldestPendingMs).toBe(30_000);
    h.cloud.down.clear();
    await h.advance(2000);
    h.cloud.current!.ackAll();
    await h.advance(1000);
    expect(h.link.status().oldestPendingMs).toBe(0);
  });

  test("buffer drops are logged with their range, saved, and resumed from the saved counter", async () => {
    const h = uplinkHarness({ buffer: { max_messages: 5 } }, {
      start: false,
      saved: { "uplink/cloud/dropped-buffer": 100 },
    });
    h.cloud.down.add("mqtt://a.example:1883");
    h.link.start(0);
    for (let i = 0; i < 12; i++) h.publish("sensors/x", String(i));
    await h.advance(500);
    const s = h.link.status();
    expect(s.droppedBuffer).toBe(107);
    expect(h.log.counters["uplink/cloud/dropped-buffer"]).toBe(107);
    const lines = () => h.log.lines.filter((l) => l.includes("buffer.max_messages"));
    // The first skip is logged at once; later ones are gathered into one line per 10 s.
    expect(lines()).toHaveLength(1);
    expect(lines()[0]).toContain("skipped 1 message(s) at offsets 1-1");
    expect(s.cursor).toBe(7);
    await h.advance(10_000);
    expect(lines()).toHaveLength(2);
    expect(lines()[1]).toContain("skipped 6 message(s) at offsets 2-7 (dropped.buffer now 107)");
  });

  test("downlink: a command that maps to a $ topic (cmd/$SYS/... with strip) is refused with 0x90, counted and logged", async () => {
    const h = uplinkHarness({ downlink: [{ filter: "cmd/#", topic: "${topic}", strip: "cmd/" }] });
    await settle();
    const deliver = (topic: string) =>
      h.cloud.current!.deliver({ topic, payload: new Uint8Array(), qos: 1, retain: false, properties: undefined });
    expect(await deliver("cmd/$SYS/broker/uptime")).toBe(0x90);
    expect(await deliver("cmd/lamp")).toBe(0);
    expect(h.local.injected.map((m) => m.topic)).toEqual(["lamp"]);
    const s = h.link.status();
    expect(s.downlinkRefused).toBe(1);
    expect(s.downlinkReceived).toBe(1);
    expect(h.log.lines.some((l) => l.startsWith("warn") && l.includes("$SYS/broker/uptime"))).toBe(true);
  });

  test("downlink_acl: a command the local ACL denies gets PUBACK 0x87 (Not authorized) and is not published", async () => {
    const h = uplinkHarness({ downlink: [{ filter: "#", topic: "${topic}" }], downlink_acl: { username: "cmd" } });
    await settle();
    const deliver = (topic: string) =>
      h.cloud.current!.deliver({ topic, payload: new Uint8Array(), qos: 1, retain: false, properties: undefined });
    expect(await deliver("private/door")).toBe(0x87);
    expect(await deliver("lamp")).toBe(0);
    expect(h.local.injected.map((m) => m.topic)).toEqual(["lamp"]);
    expect(h.link.status().downlinkRefused).toBe(1);
    // Without downlink_acl, commands are not checked (as before).
    const open = uplinkHarness({ downlink: [{ filter: "#", topic: "${topic}" }] });
    await settle();
    expect(
      await open.cloud.current!.deliver({
        topic: "private/door",
        payload: new Uint8Array(),
        qos: 1,
        retain: false,
        properties: undefined,
      }),
    ).toBe(0);
  });

  test("config: a downlink rule whose topic template is a $ topic is refused at load", () => {
    expect(() => uplinkHarness({ downlink: [{ filter: "cmd/#", topic: "$SYS/${topic}" }] })).toThrow(/\$ topic/);
  });
});
