/**
 * Strictness over real sockets (issue 18): raw bytes to a real broker, and the exact bytes
 * it answers with before it closes. v5 faults after CONNACK get a bare DISCONNECT with the
 * reason code (E0 01 81 Malformed Packet, E0 01 82 Protocol Error); v5 faults in CONNECT a
 * CONNACK with it; 3.1 and 3.1.1 faults a close and nothing else.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startBroker, type TestBroker } from "./helpers/broker.ts";
import { barrier, connect } from "./helpers/clients.ts";
import { RawClient } from "./helpers/raw-client.ts";

let broker: TestBroker;
beforeAll(async () => {
  broker = await startBroker();
});
afterAll(() => broker.stop());

const MALFORMED = "e00181";
const PROTOCOL_ERROR = "e00182";

// ---- byte builders ------------------------------------------------------------------------

const hex = (s: string): number[] => [...Buffer.from(s.replace(/\s+/g, ""), "hex")];
const u16 = (n: number) => [n >> 8, n & 0xff];
const varint = (n: number): number[] => {
  const out: number[] = [];
  do {
    let d = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) d |= 0x80;
    out.push(d);
  } while (n > 0);
  return out;
};
/** A length-prefixed string (spec 1.5.4) from text or raw bytes. */
const str = (s: string | number[]) => {
  const b = typeof s === "string" ? [...Buffer.from(s, "utf8")] : s;
  return [...u16(b.length), ...b];
};
/** A v5 property block: Property Length, then the properties. */
const props = (...bytes: number[]) => [...varint(bytes.length), ...bytes];
const frame = (first: number, body: number[]) => [first, ...varint(body.length), ...body];

interface ConnectFields {
  name?: string;
  level: 3 | 4 | 5 | number;
  flags: number;
  properties?: number[];
  clientId?: string | number[];
  /** Everything after the client id, as bytes. */
  rest?: number[];
}
function connectFrame(f: ConnectFields): number[] {
  const name = f.name ?? (f.level === 3 ? "MQIsdp" : "MQTT");
  return frame(0x10, [
    ...str(name),
    f.level,
    f.flags,
    ...u16(60),
    ...(f.level === 5 ? f.properties ?? [0] : []),
    ...str(f.clientId ?? "strict"),
    ...(f.rest ?? []),
  ]);
}

let ids = 0;

/** Connect, send `bytes`, and return what came back after the CONNACK once the broker closed. */
async function replyTo(version: 4 | 5, bytes: number[], clientId = `strict-${++ids}`): Promise<string> {
  const c = await RawClient.connected(broker.port, version, { clientId });
  const seen = c.receivedHex().length;
  c.sendBytes(bytes);
  await c.waitClosed();
  return c.receivedHex().slice(seen);
}

/** Send a CONNECT on a fresh socket and return everything the broker sent before closing. */
async function connectReply(bytes: number[], version: 3 | 4 | 5 = 4): Promise<string> {
  const c = await RawClient.open(broker.port, version);
  c.sendBytes(bytes);
  await c.waitClosed();
  return c.receivedHex();
}

/** Topic "topic", QoS 1, packet id 0x1234, the given v5 property block, payload "payload". */
const qos1Publish = (block: number[]) => frame(0x32, [...str("topic"), 0x12, 0x34, ...block, ...hex("7061796c6f6164")]);

// ---- 1. property blocks ------------------------------------------------------------------

describe("v5 property blocks are checked on every packet type [MQTT 5.0 2.2.2.2]", () => {
  test("the issue's PUBLISH whose Correlation Data has no value gets exactly E0 01 81 and is not stored", async () => {
    const sub = await connect(broker.url, { protocolVersion: 5 });
    await sub.client.subscribeAsync("topic", { qos: 1 });
    const errorsBefore = broker.server.broker.metrics.protocolErrors;
    const reply = await replyTo(5, hex("32 12 0005 746F706963 1234 01 09 7061796C6F6164"));
    expect(reply).toBe(MALFORMED);
    expect(broker.server.broker.metrics.protocolErrors - errorsBefore).toBe(1);
    await barrier(sub);
    expect(sub.messages).toEqual([]);
    await sub.end();
  });

  test("the issue's SUBSCRIBE carrying a Payload Format Indicator gets E0 01 81 and no SUBACK", async () => {
    expect(await replyTo(5, hex("82 09 0001 02 0100 0001 70 00"))).toBe(MALFORMED);
  });

  const publishCases: Array<[string, number[], string]> = [
    ["an unknown property identifier (0x7F)", props(0x7f, 0x00), MALFORMED],
    ["a Message Expiry Interval cut short by the Property Length", props(0x02, 0x00, 0x00), MALFORMED],
    ["a Property Length beyond the end of the packet", [0x40, 0x01, 0x00], MALFORMED],
    ["a Reason String, which PUBLISH does not allow", props(0x1f, ...str("why")), MALFORMED],
    ["a Session Expiry Interval, which PUBLISH does not allow", props(0x11, 0, 0, 0, 1), MALFORMED],
    ["a Content Type with U+0000 [MQTT-1.5.4-2]", props(0x03, ...str([0x61, 0x00])), MALFORMED],
    [
      "a User Property name with an encoded surrogate [MQTT-1.5.4-1]",
      props(0x26, ...str([0xed, 0xa0, 0x80]), ...str("v")),
      MALFORMED,
    ],
    ["Content Type twice", props(0x03, ...str("a"), 0x03, ...str("b")), PROTOCOL_ERROR],
    ["Correlation Data twice", props(0x09, ...str("a"), 0x09, ...str("b")), PROTOCOL_ERROR],
    ["a Response Topic with a wildcard [MQTT-3.3.2-14]", props(0x08, ...str("reply/#")), PROTOCOL_ERROR],
    ["a Payload Format Indicator of 2", props(0x01, 0x02), PROTOCOL_ERROR],
    ["a Subscription Identifier [MQTT-3.3.4-6]", props(0x0b, 0x01), PROTOCOL_ERROR],
  ];
  for (const [what, block, expected] of publishCases) {
    test(`a QoS 1 PUBLISH with ${what} gets ${expected.toUpperCase()} and no PUBACK`, async () => {
      expect(await replyTo(5, qos1Publish(block))).toBe(expected);
    });
  }

  test("a PUBLISH with two User Properties of the same name is accepted and acknowledged", async () => {
    const c = await RawClient.connected(broker.port, 5, { clientId: "strict-user-props" });
    const seen = c.receivedHex().length;
    c.sendBytes(qos1Publish(props(0x26, ...str("k"), ...str("1"), 0x26, ...str("k"), ...str("2"))));
    await c.next("puback");
    // PUBACK 0x1234: Success (40 02 12 34) or No matching subscribers (40 04 12 34 10 00).
    expect(c.receivedHex().slice(seen)).toMatch(/^40021234$|^400412341000$/);
    c.close();
  });

  // PUBACK/PUBCOMP for ids Ferry never sent, PUBREC likewise, PUBREL after a real QoS 2 PUBLISH.
  const ackCases: Array<[string, number[]]> = [
    ["PUBACK with a Content Type", frame(0x40, [0, 1, 0x00, ...props(0x03, ...str("a"))])],
    ["PUBREC with a Reason String cut short", frame(0x50, [0, 1, 0x80, ...props(0x1f, 0x00, 0x05, 0x61)])],
    ["PUBCOMP with an unknown property", frame(0x70, [0, 1, 0x00, ...props(0x55, 0x00)])],
    ["PUBACK with bytes after its properties", frame(0x40, [0, 1, 0x00, 0x00, 0xff])],
  ];
  for (const [what, bytes] of ackCases) {
    test(`a ${what} gets E0 01 81 and the close, not a hang`, async () => {
      expect(await replyTo(5, bytes)).toBe(MALFORMED);
    });
  }

  test("a PUBREL with a duplicated Reason String gets E0 01 82 and no PUBCOMP", async () => {
    const c = await RawClient.connected(broker.port, 5, { clientId: "strict-pubrel" });
    c.sendBytes(frame(0x34, [...str("q2/strict"), 0, 9, 0x00, 0x61]));
    await c.next("pubrec");
    const seen = c.receivedHex().length;
    c.sendBytes(frame(0x62, [0, 9, 0x00, ...props(0x1f, ...str("a"), 0x1f, ...str("b"))]));
    await c.waitClosed();
    expect(c.receivedHex().slice(seen)).toBe(PROTOCOL_ERROR);
  });

  test("SUBSCRIBE and UNSUBSCRIBE: a duplicated Subscription Identifier is 0x82, one in UNSUBSCRIBE 0x81", async () => {
    expect(await replyTo(5, frame(0x82, [0, 1, ...props(0x0b, 1, 0x0b, 2), ...str("a"), 0]))).toBe(PROTOCOL_ERROR);
    expect(await replyTo(5, frame(0xa2, [0, 1, ...props(0x0b, 1), ...str("a")]))).toBe(MALFORMED);
    expect(await replyTo(5, frame(0xa2, [0, 1, ...props(0x26, ...str("k")), ...str("a")]))).toBe(MALFORMED);
  });

  test("AUTH with a property AUTH does not allow gets E0 01 81", async () => {
    expect(await replyTo(5, frame(0xf0, [0x18, ...props(0x23, 0, 1)]))).toBe(MALFORMED);
  });

  test("CONNECT: a property given twice gets CONNACK 0x82, one CONNECT does not allow CONNACK 0x81", async () => {
    const twice = connectFrame({ level: 5, flags: 0x02, properties: props(0x21, 0, 10, 0x21, 0, 20) });
    expect(await connectReply(twice, 5)).toBe("2003008200");
    const alias = connectFrame({ level: 5, flags: 0x02, properties: props(0x23, 0, 1) });
    expect(await connectReply(alias, 5)).toBe("2003008100");
    const willDelayOutsideWill = connectFrame({ level: 5, flags: 0x02, properties: props(0x18, 0, 0, 0, 1) });
    expect(await connectReply(willDelayOutsideWill, 5)).toBe("2003008100");
    // Will Properties have their own table: a Topic Alias is not one of them.
    const will = connectFrame({
      level: 5,
      flags: 0x06,
      rest: [...props(0x23, 0, 1), ...str("will/t"), ...str("w")],
    });
    expect(await connectReply(will, 5)).toBe("2003008100");
  });
});

// ---- 2. CONNECT refusals ---------------------------------------------------------------------

describe("CONNECT refusals", () => {
  test("Will QoS 3 is malformed: 3.1.1 closes without a CONNACK, v5 gets CONNACK 0x81 [MQTT-3.1.2-14]", async () => {
    const rest = [...str("will/t"), ...str("w")];
    expect(await connectReply(connectFrame({ level: 4, flags: 0x02 | 0x04 | 0x18, rest }))).toBe("");
    const v5 = connectFrame({ level: 5, flags: 0x02 | 0x04 | 0x18, rest: [0, ...rest] });
    expect(await connectReply(v5, 5)).toBe("2003008100");
  });

  test("a user name or password present while its flag is 0 is malformed [MQTT-3.1.2-16] [MQTT-3.1.2-18]", async () => {
    expect(await connectReply(connectFrame({ level: 4, flags: 0x02, rest: str("user") }))).toBe("");
    expect(await connectReply(connectFrame({ level: 4, flags: 0x82, rest: [...str("user"), ...str("pw")] }))).toBe("");
    expect(await connectReply(connectFrame({ level: 5, flags: 0x02, rest: str("user") }), 5)).toBe("2003008100");
  });

  test("3.1.1: the Password Flag without the User Name Flag is closed as malformed, not CONNACK 5 [MQTT-3.1.2-22]", async () => {
    expect(await connectReply(connectFrame({ level: 4, flags: 0x42, rest: str("pw") }))).toBe("");
    // v5 allows a password without a user name (spec 3.1.2.9): not a malformed packet.
    const c = await RawClient.open(broker.port, 5);
    c.sendBytes(connectFrame({ level: 5, flags: 0x42, rest: str("pw") }));
    expect((await c.next("connack")).reasonCode).toBe(0);
    c.close();
  });

  const badNames: Array<[string, number[]]> = [
    ["U+0000", [0x61, 0x00, 0x62]],
    ["an encoded surrogate", [0x61, 0xed, 0xb0, 0x80]],
    ["an overlong encoding", [0xc0, 0x80]],
  ];
  for (const [what, name] of badNames) {
    test(`a user name with ${what} is malformed: 3.1.1 closed, v5 CONNACK 0x81 [MQTT-1.5.4-1] [MQTT-1.5.4-2]`, async () => {
      expect(await connectReply(connectFrame({ level: 4, flags: 0x82, rest: str(name) }))).toBe("");
      expect(await connectReply(connectFrame({ level: 5, flags: 0x82, rest: str(name) }), 5)).toBe("2003008100");
    });
  }

  test("3.1.1: a Will Topic with U+0000 or a surrogate is malformed (closed), not 'server unavailable'", async () => {
    for (const topic of [[0x77, 0x00], [0xed, 0xa0, 0x80]]) {
      const bytes = connectFrame({ level: 4, flags: 0x06, rest: [...str(topic), ...str("w")] });
      expect(await connectReply(bytes)).toBe("");
    }
  });

  test("3.1.1: an unknown protocol name closes without a CONNACK [MQTT-3.1.4-1]; a name with the other level gets 1", async () => {
    expect(await connectReply(connectFrame({ name: "MQTX", level: 4, flags: 0x02 }))).toBe("");
    expect(await connectReply(connectFrame({ name: "hj", level: 4, flags: 0x02 }))).toBe("");
    expect(await connectReply(connectFrame({ name: "MQTT", level: 3, flags: 0x02 }))).toBe("20020001");
    expect(await connectReply(connectFrame({ name: "MQIsdp", level: 4, flags: 0x02 }))).toBe("20020001");
  });

  test("MQTT 3.1: the reserved Connect Flag closes; an empty or 24-character client id gets return code 2", async () => {
    expect(await connectReply(connectFrame({ level: 3, flags: 0x03 }), 3)).toBe("");
    expect(await connectReply(connectFrame({ level: 3, flags: 0x02, clientId: "" }), 3)).toBe("20020002");
    expect(await connectReply(connectFrame({ level: 3, flags: 0x02, clientId: "x".repeat(24) }), 3)).toBe("20020002");
    const ok = await RawClient.open(broker.port, 3);
    ok.sendBytes(connectFrame({ level: 3, flags: 0x02, clientId: "x".repeat(23) }));
    expect((await ok.next("connack")).returnCode).toBe(0);
    ok.close();
  });

  test("a CONNACK never exceeds the client's Maximum Packet Size: optional properties go first [MQTT-3.1.2-24]", async () => {
    const full = await RawClient.open(broker.port, 5);
    full.sendBytes(connectFrame({ level: 5, flags: 0x02, clientId: "mps-full" }));
    await full.next("connack");
    const fullSize = full.receivedHex().length / 2;
    full.close();
    expect(fullSize).toBeGreaterThan(12);

    const small = await RawClient.open(broker.port, 5);
    small.sendBytes(connectFrame({ level: 5, flags: 0x02, clientId: "mps-12", properties: props(0x27, 0, 0, 0, 12) }));
    const ack = await small.next("connack");
    expect(ack.reasonCode).toBe(0);
    expect(small.receivedHex().length / 2).toBeLessThanOrEqual(12);
    // A DISCONNECT's Reason String goes too when it would not fit [MQTT-3.14.2-3]: taken
    // over, the client gets the bare E0 01 8E instead of one with "session taken over".
    const seen = small.receivedHex().length;
    const other = await RawClient.connected(broker.port, 5, { clientId: "mps-12" });
    await small.waitClosed();
    expect(small.receivedHex().slice(seen)).toBe("e0018e");
    other.close();

    // Even the bare CONNACK (5 bytes) does not fit in 4: closed without one.
    expect(await connectReply(connectFrame({ level: 5, flags: 0x02, properties: props(0x27, 0, 0, 0, 4) }), 5))
      .toBe("");
    // An assigned client id cannot be left out; if it does not fit, the refusal does.
    const assigned = connectFrame({ level: 5, flags: 0x02, clientId: "", properties: props(0x27, 0, 0, 0, 16) });
    expect(await connectReply(assigned, 5)).toBe("2003009500");
  });
});

// ---- 3, 4. UTF-8 and empty filters ---------------------------------------------------------

describe("topic filters", () => {
  const badFilters: Array<[string, number[]]> = [
    ["U+0000", [0x61, 0x00]],
    ["an encoded surrogate", [0x61, 0x2f, 0xed, 0xa0, 0x80]],
    ["a truncated sequence", [0x61, 0xe2, 0x82]],
  ];
  for (const [what, filter] of badFilters) {
    test(`a SUBSCRIBE or UNSUBSCRIBE filter with ${what}: 3.1.1 closed, v5 E0 01 81 [MQTT-1.5.3-1] [MQTT-1.5.3-2]`, async () => {
      expect(await replyTo(4, frame(0x82, [0, 1, ...str(filter), 0]))).toBe("");
      expect(await replyTo(4, frame(0xa2, [0, 1, ...str(filter)]))).toBe("");
      expect(await replyTo(5, frame(0x82, [0, 1, 0, ...str(filter), 0]))).toBe(MALFORMED);
      expect(await replyTo(5, frame(0xa2, [0, 1, 0, ...str(filter)]))).toBe(MALFORMED);
    });
  }

  test("a PUBLISH topic with U+0000 or ill-formed UTF-8 is malformed too: v5 E0 01 81, 3.1.1 closed", async () => {
    for (const topic of [[0x61, 0x00], [0xed, 0xa0, 0x80], [0xff]]) {
      expect(await replyTo(5, frame(0x30, [...str(topic), 0x00, 0x78]))).toBe(MALFORMED);
      expect(await replyTo(4, frame(0x30, [...str(topic), 0x78]))).toBe("");
    }
  });

  test("3.1.1: an empty topic filter closes the connection [MQTT-4.7.3-1] [MQTT-4.8.0-1]; v5 gets 0x8F for it", async () => {
    expect(await replyTo(4, frame(0x82, [0, 1, ...str(""), 0]))).toBe("");
    expect(await replyTo(4, frame(0xa2, [0, 1, ...str("")]))).toBe("");
    const c = await RawClient.connected(broker.port, 5, { clientId: "strict-empty-filter" });
    c.sendBytes(frame(0x82, [0, 3, 0, ...str(""), 0, ...str("ok"), 1]));
    expect((await c.next("suback")).granted).toEqual([0x8f, 1]);
    expect(c.closed).toBe(false);
    c.close();
  });

  test("U+FEFF (EF BB BF) in a topic is an ordinary character, kept intact end to end [MQTT-1.5.4-3]", async () => {
    const topic = "\uFEFFbom/topic";
    const sub = await RawClient.connected(broker.port, 5, { clientId: "strict-bom-sub" });
    sub.sendBytes(frame(0x82, [0, 1, 0, ...str(topic), 0]));
    expect((await sub.next("suback")).granted).toEqual([0]);
    const pub = await RawClient.connected(broker.port, 5, { clientId: "strict-bom-pub" });
    pub.sendBytes(frame(0x30, [...str(topic), 0x00, 0x78]));
    const m = await sub.next("publish");
    expect(Buffer.from(m.topic, "utf8").subarray(0, 3).toString("hex")).toBe("efbbbf");
    expect(m.topic).toBe(topic);
    sub.close();
    pub.close();
  });
});

test("a genuine U+FFFD (EF BF BD) is a character: in a client id, a filter and a topic it is accepted and delivered", async () => {
  const topic = "fffd/\uFFFD";
  const sub = await RawClient.connected(broker.port, 5, { clientId: "strict-\uFFFD" });
  sub.sendBytes(frame(0x82, [0, 1, 0, ...str(topic), 0]));
  expect((await sub.next("suback")).granted).toEqual([0]);
  const pub = await RawClient.connected(broker.port, 4, { clientId: "strict-fffd-pub" });
  pub.sendBytes(frame(0x30, [...str(topic), 0x78]));
  expect((await sub.next("publish")).topic).toBe(topic);
  sub.close();
  pub.close();
});

// ---- 5. PUBREC with an error ------------------------------------------------------------------

describe("QoS 2 towards a v5 client", () => {
  for (
    const [what, pubrec] of [["0x80", (id: number) => frame(0x50, [...u16(id), 0x80])], [
      "0x87 and a Reason String",
      (id: number) => frame(0x50, [...u16(id), 0x87, ...props(0x1f, ...str("no"))]),
    ]] as const
  ) {
    test(`a PUBREC with reason code ${what} ends the flow: no PUBREL [MQTT 5.0 4.3.3]`, async () => {
      const c = await RawClient.connected(broker.port, 5, { clientId: `strict-pubrec-${what.length}` });
      c.sendBytes(frame(0x82, [0, 1, 0, ...str("q2/refused"), 2]));
      await c.next("suback");
      const pub = await connect(broker.url, { protocolVersion: 5 });
      await pub.client.publishAsync("q2/refused", "one", { qos: 2 });
      const first = await c.next("publish");
      c.sendBytes(pubrec(first.messageId!));
      await c.roundTrip();
      expect(c.packets.filter((p) => p.cmd === "pubrel")).toEqual([]);
      // The flow is over: its in-flight slot is free and the next message flows normally.
      await pub.client.publishAsync("q2/refused", "two", { qos: 2 });
      const second = await c.next("publish");
      expect(second.payload.toString()).toBe("two");
      c.sendBytes(frame(0x50, [...u16(second.messageId!)]));
      expect((await c.next("pubrel")).messageId).toBe(second.messageId);
      expect(c.closed).toBe(false);
      c.close();
      await pub.end();
    });
  }
});

// ---- 6. packets only a server sends; malformed DISCONNECT -----------------------------------

describe("packets a client may not send", () => {
  const serverOnly: Array<[string, number[]]> = [
    ["CONNACK", [0x20, 0x03, 0x00, 0x00, 0x00]],
    ["SUBACK", [0x90, 0x04, 0x00, 0x01, 0x00, 0x00]],
    ["UNSUBACK", [0xb0, 0x04, 0x00, 0x01, 0x00, 0x00]],
    ["PINGRESP", [0xd0, 0x00]],
  ];
  for (const [what, bytes] of serverOnly) {
    test(`${what} from a client gets E0 01 82 (v5) or a close (3.1.1)`, async () => {
      expect(await replyTo(5, bytes)).toBe(PROTOCOL_ERROR);
      const v4 = bytes[0] === 0x20 ? [0x20, 0x02, 0x00, 0x00] : bytes[0] === 0xd0 ? bytes : bytes.slice(0, 4);
      expect(await replyTo(4, [v4[0]!, v4.length - 2, ...v4.slice(2)])).toBe("");
    });
  }

  for (
    const [what, bytes] of [
      ["an unknown reason code", [0xe0, 0x01, 0x03]],
      ["a property DISCONNECT does not allow", [0xe0, 0x04, 0x00, ...props(0x23, 0, 1)]],
      ["a Property Length beyond the packet", [0xe0, 0x02, 0x00, 0x05]],
    ] as const
  ) {
    test(`a DISCONNECT with ${what} is answered E0 01 81 and the Will is published (spec 4.13)`, async () => {
      const watcher = await connect(broker.url);
      await watcher.client.subscribeAsync("strict/will");
      const c = await RawClient.connected(broker.port, 5, {
        clientId: `strict-bad-disconnect-${bytes.length}`,
        will: { topic: "strict/will", payload: Buffer.from("gone"), qos: 0, retain: false },
      });
      const seen = c.receivedHex().length;
      c.sendBytes([...bytes]);
      await c.waitClosed();
      expect(c.receivedHex().slice(seen)).toBe(MALFORMED);
      const [m] = await watcher.waitFor(1);
      expect(m!.payload).toBe("gone");
      await watcher.end();
    });
  }

  test("3.1.1: a DISCONNECT, PINGREQ or PUBACK with bytes after its fields is closed as malformed", async () => {
    expect(await replyTo(4, [0xe0, 0x01, 0x00])).toBe("");
    expect(await replyTo(4, [0xc0, 0x01, 0x00])).toBe("");
    expect(await replyTo(4, [0x40, 0x03, 0x00, 0x01, 0x00])).toBe("");
  });
});
