/**
 * Hostile and broken input over real sockets: garbage, malformed framing, oversized
 * packets, illegal topics and aliases, slow readers and silent sockets. Each fault must
 * close only the connection that caused it, with the v5 reason code where one exists,
 * be counted in metrics.protocolErrors, and leave the broker serving everybody else.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import mqttPacket from "mqtt-packet";
import net from "node:net";
import { startBroker, type TestBroker } from "./helpers/broker.ts";
import { type InProcessBroker, inProcessBroker } from "./helpers/in-process-broker.ts";
import { connect, eventually } from "./helpers/clients.ts";
import { RawClient } from "./helpers/raw-client.ts";

let broker: TestBroker;
beforeAll(async () => {
  broker = await startBroker({ mqtt: { max_packet_size: 1024, topic_alias_maximum: 5 } });
});
afterAll(() => broker.stop());

const metrics = () => broker.server.broker.metrics;

/** Run `fn` and return how many protocol errors the broker counted meanwhile. */
async function protocolErrorsDuring(fn: () => Promise<void>): Promise<number> {
  const before = metrics().protocolErrors;
  await fn();
  return metrics().protocolErrors - before;
}

/** Expect a v5 DISCONNECT with `code`, then the close; nothing else in between. */
async function expectDisconnect(c: RawClient, code: number): Promise<void> {
  const d = await c.next("disconnect");
  expect(d.reasonCode).toBe(code);
  await c.waitClosed();
}

/** The broker still routes messages between two new clients. */
async function brokerStillServes(): Promise<void> {
  const sub = await connect(broker.url);
  const pub = await connect(broker.url, { protocolVersion: 5 });
  const topic = `alive/${Math.random().toString(36).slice(2)}`;
  await sub.client.subscribeAsync(topic, { qos: 1 });
  await pub.client.publishAsync(topic, "still here", { qos: 1 });
  const [m] = await sub.waitFor(1);
  expect(m!.payload).toBe("still here");
  await Promise.all([sub.end(), pub.end()]);
}

function publish(topic: string, properties?: mqttPacket.IPublishPacket["properties"]): mqttPacket.IPublishPacket {
  const p: mqttPacket.IPublishPacket = {
    cmd: "publish",
    topic,
    payload: Buffer.from("x"),
    qos: 0,
    retain: false,
    dup: false,
  };
  if (properties) p.properties = properties;
  return p;
}

describe("bytes that are not MQTT", () => {
  test("garbage before CONNECT closes that connection, and the broker keeps serving others [MQTT-3.1.0-1]", async () => {
    const errors = await protocolErrorsDuring(async () => {
      // An HTTP request sent to the MQTT port: 'G' (0x47) is PUBACK with reserved flags set.
      const http = await RawClient.open(broker.port);
      http.sendBytes([
        ...Buffer.from("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\n\r\n"),
      ]);
      // Bytes that frame as a complete PINGREQ: well-formed, but not CONNECT.
      const ping = await RawClient.open(broker.port);
      ping.sendBytes([0xc0, 0x00, 0xde, 0xad, 0xbe, 0xef]);
      await Promise.all([http.waitClosed(), ping.waitClosed()]);
      // Neither was answered with anything: a CONNACK only ever follows a CONNECT.
      expect(http.packets).toEqual([]);
      expect(ping.packets).toEqual([]);
    });
    expect(errors).toBe(2);
    await brokerStillServes();
  });

  test("garbage shorter than the length it claims is refused from its first byte, without waiting for the rest [MQTT-2.1.3-1]", async () => {
    // 'h' (0x68) is PUBREL with flags 1000 (must be 0010); 'e' claims 101 more bytes that never come.
    // The fixed header alone proves this is not MQTT, so the broker need not hold the socket open
    // until the connect timeout.
    const errors = await protocolErrorsDuring(async () => {
      const c = await RawClient.open(broker.port);
      c.sendBytes([...Buffer.from("hello\n")]);
      await c.waitClosed(5000);
    });
    expect(errors).toBe(1);
  });

  test("a Remaining Length longer than four bytes is malformed and closes the connection (spec 1.5.5) [MQTT-4.13.1-1]", async () => {
    const errors = await protocolErrorsDuring(async () => {
      // Before CONNECT: a CONNECT whose Remaining Length has five continuation bytes.
      const early = await RawClient.open(broker.port);
      early.sendBytes([0x10, 0xff, 0xff, 0xff, 0xff, 0x7f]);
      await early.waitClosed();
      expect(early.packets).toEqual([]);

      // After CONNECT, a v5 client is told why: 0x81 Malformed Packet.
      const v5 = await RawClient.connected(broker.port, 5);
      v5.sendBytes([0x30, 0x80, 0x80, 0x80, 0x80, 0x01]);
      await expectDisconnect(v5, 0x81);

      const v4 = await RawClient.connected(broker.port, 4);
      v4.sendBytes([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]);
      await v4.waitClosed();
      expect(v4.packets.filter((p) => p.cmd === "disconnect")).toEqual([]);
    });
    expect(errors).toBe(3);
    await brokerStillServes();
  });
});

describe("packet size", () => {
  test("CONNACK announces mqtt.max_packet_size as Maximum Packet Size", async () => {
    const c = await RawClient.open(broker.port, 5);
    c.send({ cmd: "connect", protocolId: "MQTT", protocolVersion: 5, clientId: "", clean: true, keepalive: 60 });
    const ack = await c.next("connack");
    expect(ack.properties?.maximumPacketSize).toBe(1024);
    c.close();
  });

  test("a packet larger than mqtt.max_packet_size is refused with 0x95 from its fixed header, before the body is sent [MQTT-3.2.2-15]", async () => {
    const errors = await protocolErrorsDuring(async () => {
      const v5 = await RawClient.connected(broker.port, 5);
      // A PUBLISH announcing 100,000 bytes; only the header and a few body bytes are ever sent.
      v5.sendBytes([0x30, 0xa0, 0x8d, 0x06, 0x00, 0x01, 0x61]);
      await expectDisconnect(v5, 0x95);

      const v4 = await RawClient.connected(broker.port, 4);
      v4.sendBytes([0x30, 0xa0, 0x8d, 0x06, 0x00, 0x01, 0x61]);
      await v4.waitClosed();

      // A CONNECT too large for the limit is refused just the same.
      const early = await RawClient.open(broker.port);
      early.sendBytes([0x10, 0xa0, 0x8d, 0x06, 0x00, 0x04]);
      await early.waitClosed();
    });
    expect(errors).toBe(3);
  });

  test("a packet of exactly mqtt.max_packet_size bytes is accepted", async () => {
    const sub = await connect(broker.url);
    await sub.client.subscribeAsync("size/exact");
    const c = await RawClient.connected(broker.port, 4);
    // Fixed header 3 bytes (0x30 + 2-byte length) + topic 2+10 + payload = 1024.
    const payload = Buffer.alloc(1024 - 3 - 12, 0x61);
    const bytes = mqttPacket.generate({ ...publish("size/exact"), payload }, { protocolVersion: 4 });
    expect(bytes.byteLength).toBe(1024);
    c.sendBytes(bytes);
    const [m] = await sub.waitFor(1);
    expect(m!.payload.length).toBe(payload.byteLength);
    expect(c.closed).toBe(false);
    c.close();
    await sub.end();
  });
});

describe("fixed header", () => {
  // [type/flags byte, rest...]: each is complete and well-framed, only the first byte is wrong.
  const bad: Array<[string, number[]]> = [
    ["reserved packet type 0", [0x00, 0x00]],
    ["SUBSCRIBE with flags 0000 (must be 0010)", [0x80, 0x06, 0x00, 0x01, 0x00, 0x01, 0x61, 0x00]],
    ["PUBREL with flags 0000 (must be 0010)", [0x60, 0x02, 0x00, 0x01]],
    ["PINGREQ with flags 0001", [0xc1, 0x00]],
    ["PUBLISH with both QoS bits set [MQTT-3.3.1-4]", [0x36, 0x05, 0x00, 0x01, 0x61, 0x00, 0x01]],
  ];
  for (const [what, bytes] of bad) {
    test(`${what}: a v5 connection gets DISCONNECT 0x81 and is closed [MQTT-2.1.3-1]`, async () => {
      const errors = await protocolErrorsDuring(async () => {
        const c = await RawClient.connected(broker.port, 5);
        c.sendBytes(bytes);
        await expectDisconnect(c, 0x81);
      });
      expect(errors).toBe(1);
    });

    test(`${what}: a 3.1.1 connection is closed, and so is one that sends it before CONNECT [MQTT-2.1.3-1]`, async () => {
      const errors = await protocolErrorsDuring(async () => {
        const c = await RawClient.connected(broker.port, 4);
        c.sendBytes(bytes);
        await c.waitClosed();
        const early = await RawClient.open(broker.port);
        early.sendBytes(bytes);
        await early.waitClosed();
        expect(early.packets).toEqual([]);
      });
      expect(errors).toBe(2);
    });
  }

  test("AUTH (type 15) on a 3.1.1 connection, where the type is reserved, closes it", async () => {
    const errors = await protocolErrorsDuring(async () => {
      const c = await RawClient.connected(broker.port, 4);
      c.sendBytes([0xf0, 0x00]);
      await c.waitClosed();
    });
    expect(errors).toBe(1);
    await brokerStillServes();
  });
});

describe("PUBLISH topic rules", () => {
  for (const topic of ["a/+/c", "a/#", "#", "+"]) {
    test(`a PUBLISH to '${topic}' (a wildcard) gets DISCONNECT 0x90 on v5 and is closed on 3.1.1 [MQTT-3.3.2-2]`, async () => {
      const sub = await connect(broker.url);
      await sub.client.subscribeAsync("#");
      const errors = await protocolErrorsDuring(async () => {
        const v5 = await RawClient.connected(broker.port, 5);
        v5.send(publish(topic), 5);
        await expectDisconnect(v5, 0x90);
        const v4 = await RawClient.connected(broker.port, 4);
        v4.send(publish(topic), 4);
        await v4.waitClosed();
      });
      expect(errors).toBe(2);
      await brokerStillServes();
      // Nothing was routed from either publish (the catch-all sees only the liveness probe).
      expect(sub.messages.filter((m) => m.payload === "x")).toEqual([]);
      await sub.end();
    });
  }

  test("Topic Alias 0 gets DISCONNECT 0x94 [MQTT-3.3.2-8]", async () => {
    const errors = await protocolErrorsDuring(async () => {
      const c = await RawClient.connected(broker.port, 5);
      c.send(publish("alias/zero", { topicAlias: 0 }), 5);
      await expectDisconnect(c, 0x94);
    });
    expect(errors).toBe(1);
  });

  test("a Topic Alias above the announced Topic Alias Maximum gets DISCONNECT 0x94 [MQTT-3.3.2-9]", async () => {
    const errors = await protocolErrorsDuring(async () => {
      const c = await RawClient.open(broker.port, 5);
      c.send({ cmd: "connect", protocolId: "MQTT", protocolVersion: 5, clientId: "", clean: true, keepalive: 60 });
      const ack = await c.next("connack");
      const max = ack.properties?.topicAliasMaximum;
      expect(max).toBe(5);
      c.send(publish("alias/high", { topicAlias: max! }), 5); // the maximum itself is fine
      c.send(publish("alias/high", { topicAlias: max! + 1 }), 5);
      await expectDisconnect(c, 0x94);
    });
    expect(errors).toBe(1);
  });

  test("a QoS 1 PUBLISH or a SUBSCRIBE with Packet Identifier 0 gets DISCONNECT 0x82 [MQTT-2.3.1-1]", async () => {
    const c = await RawClient.connected(broker.port, 5);
    c.send({ ...publish("id/zero"), qos: 1, messageId: 0 }, 5);
    await expectDisconnect(c, 0x82);
    const s = await RawClient.connected(broker.port, 5);
    s.send({ cmd: "subscribe", messageId: 0, subscriptions: [{ topic: "id/zero", qos: 0 }] }, 5);
    await expectDisconnect(s, 0x82);
    await brokerStillServes();
  });

  test("an empty topic without any topic alias is a Protocol Error: DISCONNECT 0x82 (spec 3.3.2.3.4)", async () => {
    const c = await RawClient.connected(broker.port, 5);
    c.send(publish(""), 5);
    await expectDisconnect(c, 0x82);
  });

  test("an empty topic with an alias never set on this connection gets DISCONNECT 0x82 [MQTT-3.3.2-7]", async () => {
    const errors = await protocolErrorsDuring(async () => {
      // The alias is set on one connection; mappings do not carry over to another.
      const first = await RawClient.connected(broker.port, 5, { clientId: "alias-carry" });
      first.send(publish("alias/set", { topicAlias: 1 }), 5);
      first.send({ cmd: "pingreq" }, 5);
      await first.next("pingresp");
      first.send({ cmd: "disconnect", reasonCode: 0 }, 5);
      await first.waitClosed();

      const second = await RawClient.connected(broker.port, 5, { clientId: "alias-carry" });
      second.send(publish("", { topicAlias: 1 }), 5);
      await expectDisconnect(second, 0x82);
    });
    expect(errors).toBe(1);
  });

  test("an alias set by a PUBLISH with a topic resolves later empty-topic publishes on the same connection", async () => {
    const sub = await connect(broker.url);
    await sub.client.subscribeAsync("alias/ok");
    const c = await RawClient.connected(broker.port, 5);
    c.send(publish("alias/ok", { topicAlias: 2 }), 5);
    c.send({ ...publish("", { topicAlias: 2 }), payload: Buffer.from("via alias") }, 5);
    const msgs = await sub.waitFor(2);
    expect(msgs.map((m) => [m.topic, m.payload])).toEqual([["alias/ok", "x"], ["alias/ok", "via alias"]]);
    expect(c.closed).toBe(false);
    c.close();
    await sub.end();
  });

  test("a Subscription Identifier in a client's PUBLISH gets DISCONNECT 0x82 [MQTT-3.3.4-6]", async () => {
    const errors = await protocolErrorsDuring(async () => {
      const c = await RawClient.connected(broker.port, 5);
      c.send(publish("subid/in/publish", { subscriptionIdentifier: 7 }), 5);
      await expectDisconnect(c, 0x82);
    });
    expect(errors).toBe(1);
  });
});

describe("SUBSCRIBE filter rules", () => {
  const filters = ["filt/ok", "a/#/b", "filt/+/x", "a+", "filt/#", "#/a", "a/b+/c"];

  test("invalid filters get 0x8F in SUBACK while valid ones in the same packet are granted (v5) [MQTT-4.7.1-1] [MQTT-4.7.1-2] [MQTT-3.8.4-6]", async () => {
    const c = await RawClient.connected(broker.port, 5);
    c.send({ cmd: "subscribe", messageId: 3, subscriptions: filters.map((topic) => ({ topic, qos: 1 as const })) }, 5);
    const ack = await c.next("suback");
    expect(ack.messageId).toBe(3);
    expect(ack.granted).toEqual([1, 0x8f, 1, 0x8f, 1, 0x8f, 0x8f]);
    // The valid ones really are in place.
    const pub = await connect(broker.url);
    await pub.client.publishAsync("filt/ok", "m1", { qos: 1 });
    await pub.client.publishAsync("filt/y/x", "m2", { qos: 1 });
    const first = await c.next("publish");
    const second = await c.next("publish");
    expect([first.topic, second.topic]).toEqual(["filt/ok", "filt/y/x"]);
    expect(c.closed).toBe(false);
    c.close();
    await pub.end();
  });

  test("invalid filters get 0x80 in a 3.1.1 SUBACK while valid ones are granted [MQTT-4.7.1-1] [MQTT-4.7.1-2]", async () => {
    const c = await RawClient.connected(broker.port, 4);
    c.send({ cmd: "subscribe", messageId: 4, subscriptions: filters.map((topic) => ({ topic, qos: 2 as const })) }, 4);
    const ack = await c.next("suback");
    expect(ack.granted).toEqual([2, 0x80, 2, 0x80, 2, 0x80, 0x80]);
    const pub = await connect(broker.url);
    await pub.client.publishAsync("filt/deep/er", "m", { qos: 1 });
    const m = await c.next("publish");
    expect(m.topic).toBe("filt/deep/er");
    c.close();
    await pub.end();
  });
});

describe("empty SUBSCRIBE and UNSUBSCRIBE", () => {
  // Well-framed packets with a packet id (and v5 property length 0) but no topic filter.
  const cases: Array<[string, string, number[], number[]]> = [
    ["SUBSCRIBE", "[MQTT-3.8.3-2]", [0x82, 0x03, 0x00, 0x01, 0x00], [0x82, 0x02, 0x00, 0x01]],
    ["UNSUBSCRIBE", "[MQTT-3.10.3-2]", [0xa2, 0x03, 0x00, 0x01, 0x00], [0xa2, 0x02, 0x00, 0x01]],
  ];
  for (const [what, id, v5Bytes, v4Bytes] of cases) {
    test(`a ${what} with no topic filter is a protocol error: DISCONNECT 0x82 (v5), closed (3.1.1) ${id}`, async () => {
      const errors = await protocolErrorsDuring(async () => {
        const v5 = await RawClient.connected(broker.port, 5);
        v5.sendBytes(v5Bytes);
        await expectDisconnect(v5, 0x82);
        const v4 = await RawClient.connected(broker.port, 4);
        v4.sendBytes(v4Bytes);
        await v4.waitClosed();
        expect(v4.packets.filter((p) => p.cmd === "suback" || p.cmd === "unsuback")).toEqual([]);
      });
      expect(errors).toBe(2);
    });
  }
});

describe("topic limits", () => {
  let small: TestBroker;
  beforeAll(async () => {
    small = await startBroker({ mqtt: { max_topic_length: 32, max_topic_levels: 4 } });
  });
  afterAll(() => small.stop());

  const tooLong = `long/${"x".repeat(28)}`; // 33 bytes
  const tooDeep = "a/b/c/d/e"; // 5 levels
  const atLimit = ["l/".padEnd(32, "y"), "a/b/c/d"];

  for (
    const [what, topic] of [["longer than mqtt.max_topic_length", tooLong], [
      "deeper than mqtt.max_topic_levels",
      tooDeep,
    ]]
  ) {
    test(`a PUBLISH to a topic ${what} gets DISCONNECT 0x90 (v5) or is closed (3.1.1)`, async () => {
      const before = small.server.broker.metrics.protocolErrors;
      const v5 = await RawClient.connected(small.port, 5);
      v5.send(publish(topic!), 5);
      await expectDisconnect(v5, 0x90);
      const v4 = await RawClient.connected(small.port, 4);
      v4.send(publish(topic!), 4);
      await v4.waitClosed();
      expect(small.server.broker.metrics.protocolErrors - before).toBe(2);
    });

    test(`a SUBSCRIBE to a filter ${what} gets 0x8F (v5) or 0x80 (3.1.1) for that entry only`, async () => {
      for (const version of [5, 4] as const) {
        const c = await RawClient.connected(small.port, version);
        c.send({
          cmd: "subscribe",
          messageId: 9,
          subscriptions: [{ topic: topic!, qos: 0 }, { topic: atLimit[0]!, qos: 0 }, { topic: atLimit[1]!, qos: 1 }],
        }, version);
        const ack = await c.next("suback");
        expect(ack.granted).toEqual([version === 5 ? 0x8f : 0x80, 0, 1]);
        expect(c.closed).toBe(false);
        c.close();
      }
    });
  }

  test("topics exactly at the length and level limits are delivered", async () => {
    const sub = await connect(small.url);
    await sub.client.subscribeAsync(atLimit);
    const pub = await RawClient.connected(small.port, 5);
    for (const t of atLimit) pub.send(publish(t), 5);
    const msgs = await sub.waitFor(2);
    expect(msgs.map((m) => m.topic).sort()).toEqual([...atLimit].sort());
    pub.close();
    await sub.end();
  });
});

describe("slow consumers", () => {
  let flooded: TestBroker;
  beforeAll(async () => {
    flooded = await startBroker({ mqtt: { max_buffered_bytes: 256 * 1024 } });
  });
  afterAll(() => flooded.stop());

  test(
    "a subscriber that never reads does not grow broker memory: QoS 0 to it is dropped and counted, others still receive",
    async () => {
      const core = flooded.server.broker;
      const maxBuffered = core.options.maxBufferedBytes;
      const chunk = 16 * 1024;
      // Well past what the kernel's socket buffers can absorb on loopback, and past maxBuffered.
      const count = Math.ceil((40 * 1024 * 1024) / chunk);

      // A bare socket that subscribes and then stops reading: the broker's writes back up.
      const slow = net.connect(flooded.port, "127.0.0.1");
      await new Promise<void>((r) => slow.once("connect", () => r()));
      slow.on("error", () => {});
      const parser = mqttPacket.parser({ protocolVersion: 4 });
      const subacked = new Promise<void>((r) => parser.on("packet", (p) => p.cmd === "suback" && r()));
      slow.on("data", (d: Buffer) => parser.parse(d));
      slow.write(
        mqttPacket.generate({
          cmd: "connect",
          protocolId: "MQTT",
          protocolVersion: 4,
          clientId: "slow-reader",
          clean: true,
          keepalive: 0,
        }),
      );
      slow.write(
        mqttPacket.generate({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "flood/#", qos: 0 }] }),
      );
      await subacked;
      slow.pause();
      slow.removeAllListeners("data");

      const fast = await connect(flooded.url);
      await fast.client.subscribeAsync("flood/#", { qos: 1 });
      const bystander = await connect(flooded.url);
      await bystander.client.subscribeAsync("calm/topic");

      const droppedBefore = core.metrics.droppedSlowConsumer;
      const pub = await connect(flooded.url);
      const body = Buffer.alloc(chunk, 0x42);
      for (let i = 0; i < count; i++) {
        pub.client.publish("flood/data", body, { qos: 0 });
        // Let the publisher's socket drain now and then instead of queueing 48 MB in the client.
        if (i % 256 === 255) await new Promise<void>((r) => setImmediate(r));
      }
      // QoS 1 is never dropped: once it arrives every earlier publish has been routed.
      await pub.client.publishAsync("flood/data", "done", { qos: 1 });
      await eventually(() => fast.messages.some((m) => m.payload === "done"), 15_000, "the QoS 1 marker");

      const slowConn = [...core.clients].find((c) => c.clientId === "slow-reader");
      expect(slowConn?.state).toBe("connected");
      // What the broker holds for it is bounded by the limit plus one message, not by the flood.
      expect(slowConn!.conn.bufferedBytes()).toBeLessThanOrEqual(maxBuffered + chunk + 64);
      expect(core.metrics.droppedSlowConsumer - droppedBefore).toBeGreaterThan(0);

      await pub.client.publishAsync("calm/topic", "unaffected", { qos: 0 });
      const [m] = await bystander.waitFor(1);
      expect(m!.payload).toBe("unaffected");

      slow.destroy();
      await Promise.all([fast.end(true), bystander.end(), pub.end()]);
    },
    30_000,
  );
});

describe("connection churn", () => {
  test("sockets the broker closed are released at once, not pinned by the close guard timer", async () => {
    const { heapStats } = await import("bun:jsc");
    const liveSockets = () => {
      Bun.gc(true);
      return heapStats().objectTypeCounts.TCPSocket ?? 0;
    };
    const before = liveSockets();
    const n = 600;
    for (let i = 0; i < n; i += 50) {
      await Promise.all(Array.from({ length: 50 }, async () => {
        const c = await RawClient.open(broker.port);
        c.sendBytes([0x00, 0x00]); // refused at once: the broker closes its side
        await c.waitClosed();
        c.close();
      }));
    }
    await eventually(() => broker.server.broker.clients.size === 0, 5000, "the broker to drop the connections");
    // A pending 5 s guard timer per closed connection used to keep every socket reachable.
    expect(liveSockets() - before).toBeLessThan(n / 4);
  });
});

describe("connect timeout", () => {
  // On a manual clock (helpers/in-process-broker.ts): the timeout passes without sleeping.
  let quick: InProcessBroker;
  beforeAll(async () => {
    quick = await inProcessBroker({ mqtt: { connect_timeout_ms: 300 } });
  });
  afterAll(() => quick.stop());

  test("a socket that never sends CONNECT is closed after mqtt.connect_timeout_ms", async () => {
    const silent = quick.open();
    // Half a CONNECT: the fixed header promises more than ever arrives.
    const partial = quick.open();
    partial.sendBytes([0x10, 0x20, 0x00, 0x04]);
    await quick.advance(1000); // past the timeout and one sweep
    await Promise.all([silent.waitClosed(1000), partial.waitClosed(1000)]);
    expect(silent.packets).toEqual([]);
    expect(partial.packets).toEqual([]);
    expect(quick.broker.clients.size).toBe(0);
  });

  test("a client that sent CONNECT is not affected by the connect timeout", async () => {
    const c = await quick.connected(4);
    await quick.advance(1500); // past the 300 ms timeout and at least one sweep
    c.send({ cmd: "pingreq" }, 4);
    await c.next("pingresp");
    expect(c.closed).toBe(false);
    c.close();
  });
});

test("a client that keeps sending right after its protocol error still reads the DISCONNECT reason (no reset)", async () => {
  // Closing the instant the DISCONNECT is written makes the kernel answer the client's
  // next packets with RST, which discards the DISCONNECT the client had not read yet.
  const b = await startBroker({ mqtt: { receive_maximum: 2 } });
  try {
    const c = await RawClient.connected(b.port, 5);
    const publish = (id: number): mqttPacket.IPublishPacket => ({
      cmd: "publish",
      topic: "rm/x",
      payload: Buffer.from("x"),
      qos: 2,
      messageId: id,
      retain: false,
      dup: false,
    });
    c.send(publish(1), 5);
    c.send(publish(2), 5);
    await c.next("pubrec");
    await c.next("pubrec");
    c.pause();
    c.send(publish(3), 5); // over the Receive Maximum: DISCONNECT 0x93 [MQTT-3.3.4-7]
    // Keep talking for a while without reading, as a client answering earlier acks does:
    // for 50 ms after the offending PUBLISH, which is within the broker's linger however
    // late a loaded machine runs this loop (the broker reads the PUBLISH after it was sent).
    const until = Date.now() + 50;
    while (Date.now() < until) {
      c.send({ cmd: "pingreq" }, 5);
      await Bun.sleep(4);
    }
    c.resume();
    const d = await c.next("disconnect");
    expect(d.reasonCode).toBe(0x93);
    await c.waitClosed();
  } finally {
    await b.stop();
  }
});
