/**
 * The hand-written PUBLISH/PUBACK/PUBREC/PUBREL/PUBCOMP/PINGREQ/PINGRESP codec
 * (src/mqtt/fast-path.ts) against mqtt-packet, which it replaces on the hot path:
 * decoded packets must be the very objects mqtt-packet makes (class, key order,
 * values, types), encoded packets the very bytes mqtt-packet.generate makes, and
 * malformed input must be refused the same way. Seeded, so a failure reproduces.
 */
import { describe, expect, test } from "bun:test";
import mqttPacket from "mqtt-packet";
import MqttPacketObject from "mqtt-packet/packet.js";
import { encode, encodeWithMqttPacket, PacketReader } from "../../src/mqtt/codec.ts";
import { decodeFast, encodeFast } from "../../src/mqtt/fast-path.ts";
import type { Packet, ProtocolVersion } from "../../src/mqtt/packets.ts";
import { MqttError, RC } from "../../src/mqtt/reason-codes.ts";
import { topicNameProblem } from "../../src/mqtt/topic.ts";
import { checkPacket } from "../../src/mqtt/validate-packet.ts";
import { prng as seededRng } from "../helpers/fuzz-packets.ts";

const MAX = 4 * 1024 * 1024;

/** mulberry32 from the fuzz helpers: the same sequence for the same seed. */
const prng = (seed: number): () => number => seededRng(seed).next;
const rand = prng(0x5eed_c0de);
const int = (n: number) => Math.floor(rand() * n);
const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;

const TOPIC_PARTS = ["a", "sensors", "floor-3", "温度", "é", "日本語/テスト", "😀", "$SYS", "x y", ""] as const;
function randomTopic(): string {
  const n = 1 + int(4);
  const parts: string[] = [];
  for (let i = 0; i < n; i++) parts.push(pick(TOPIC_PARTS));
  return parts.join("/");
}
function randomBytes(n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = int(256);
  return b;
}
const PAYLOAD_SIZES = [0, 1, 2, 63, 64, 100, 127, 128, 200, 1000, 16383, 16384] as const;

type Outcome = { packets: Packet[] } | { error: string; code: number };

/** Everything a reader makes of `chunks`: its packets, or the error that stopped it. */
function run(reader: PacketReader, chunks: Uint8Array[]): Outcome {
  const packets: Packet[] = [];
  try {
    for (const c of chunks) packets.push(...reader.push(c));
  } catch (e) {
    if (!(e instanceof MqttError)) throw e;
    return { error: e.message, code: e.reasonCode };
  }
  return { packets };
}

/** Deep equality plus what toStrictEqual does not look at: key order and Buffer-ness. */
function expectSamePackets(actual: Packet[], expected: Packet[]): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    expect(a).toStrictEqual(e);
    expect(Object.getPrototypeOf(a)).toBe(Object.getPrototypeOf(e));
    expect(Object.keys(a)).toEqual(Object.keys(e));
    const ap = (a as { payload?: unknown }).payload;
    const ep = (e as { payload?: unknown }).payload;
    expect(Buffer.isBuffer(ap)).toBe(Buffer.isBuffer(ep));
    expect(typeof ap).toBe(typeof ep);
  }
}

/** Old (mqtt-packet) and new (fast path) readers must agree on `chunks` exactly. */
function expectSameDecoding(chunks: Uint8Array[]): Outcome {
  const expected = run(new PacketReader(MAX, { fastPath: false }), chunks);
  const actual = run(new PacketReader(MAX), chunks);
  if ("error" in expected) {
    expect(actual).toEqual(expected);
  } else {
    expect("packets" in actual ? "packets" : (actual as { error: string }).error).toBe("packets");
    expectSamePackets((actual as { packets: Packet[] }).packets, expected.packets);
  }
  return actual;
}

function connectBytes(version: ProtocolVersion): Buffer {
  return mqttPacket.generate({
    cmd: "connect",
    protocolId: version === 3 ? "MQIsdp" : "MQTT",
    protocolVersion: version,
    clientId: "c",
    clean: true,
    keepalive: 30,
  });
}

/** mqtt-packet's own decoding of one frame under `version`, as the reference. */
function referenceDecode(frame: Uint8Array, version: number): Packet[] {
  const parser = mqttPacket.parser({ protocolVersion: version });
  const out: Packet[] = [];
  parser.on("packet", (p) => out.push(p));
  parser.on("error", (e: Error) => {
    throw e;
  });
  parser.parse(Buffer.from(frame));
  return out;
}

/** Call decodeFast on one whole frame as PacketReader does. */
function fast(frame: Uint8Array, version: number): Packet | undefined {
  let body = 2;
  while ((frame[body - 1]! & 0x80) !== 0) body++;
  const buf = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
  return decodeFast(buf, frame[0]!, body, frame.byteLength - body, version);
}

function randomPublish(payloadSize: number = pick(PAYLOAD_SIZES)): Packet {
  const qos = int(3) as 0 | 1 | 2;
  const p: Packet = {
    cmd: "publish",
    topic: randomTopic(),
    payload: randomBytes(payloadSize),
    qos,
    dup: qos > 0 && rand() < 0.3,
    retain: rand() < 0.3,
  };
  if (qos > 0) p.messageId = int(65536);
  return p;
}

function randomAck(version: ProtocolVersion): Packet {
  const cmd = pick(["puback", "pubrec", "pubrel", "pubcomp"] as const);
  const codes = cmd === "puback" || cmd === "pubrec" ? [0, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99] : [0, 0x92];
  const p = { cmd, messageId: int(65536) } as Packet & { reasonCode?: number };
  if (version === 5) p.reasonCode = pick(codes);
  return p;
}

// ---- decoding --------------------------------------------------------------------------

describe("fast-path decoding equals mqtt-packet's", () => {
  test("covered packets are decoded by hand (not left to mqtt-packet) into mqtt-packet's own objects", () => {
    for (const version of [3, 4, 5] as const) {
      for (let i = 0; i < 500; i++) {
        const packet = rand() < 0.6 ? randomPublish() : randomAck(version);
        const frame = mqttPacket.generate(packet, { protocolVersion: version });
        const mine = fast(frame, version);
        expect(mine).toBeDefined();
        expect(mine).toBeInstanceOf(MqttPacketObject);
        expectSamePackets([mine!], referenceDecode(frame, version));
      }
      const ping = Uint8Array.of(0xc0, 0x00);
      expect(fast(ping, version)).toBeDefined();
      expectSamePackets([fast(ping, version)!], referenceDecode(ping, version));
    }
  });

  test("v5 acknowledgements of Remaining Length 2 (Reason Code 0 implied), 3 (no Property Length) and 4 (no properties)", () => {
    for (const type of [4, 5, 6, 7]) {
      const first = (type << 4) | (type === 6 ? 2 : 0);
      const code = type < 6 ? 0x10 : 0x92;
      for (
        const frame of [
          Uint8Array.of(first, 2, 0x12, 0x34),
          Uint8Array.of(first, 3, 0xff, 0xff, code),
          Uint8Array.of(first, 4, 0xff, 0xff, code, 0),
        ]
      ) {
        const mine = fast(frame, 5)!;
        expect(mine).toBeDefined();
        expectSamePackets([mine], referenceDecode(frame, 5));
        expect(mine.messageId).toBe(frame[1] === 2 ? 0x1234 : 0xffff);
        expect((mine as { reasonCode?: number }).reasonCode).toBe(frame[1] === 2 ? 0 : code);
        expect(mine.length).toBe(frame[1]);
      }
      // v3.1.1 has no Reason Code: the field is absent, not 0.
      const v4 = fast(Uint8Array.of(first, 2, 0, 7), 4)!;
      expect("reasonCode" in v4).toBe(false);
    }
  });

  test("what the fast path leaves to mqtt-packet: v5 properties, odd lengths, unknown reason codes", () => {
    const withProps = mqttPacket.generate(
      {
        cmd: "publish",
        topic: "t",
        payload: Buffer.from("x"),
        qos: 1,
        messageId: 9,
        dup: false,
        retain: false,
        properties: { contentType: "a" },
      },
      { protocolVersion: 5 },
    );
    expect(fast(withProps, 5)).toBeUndefined();
    const ackProps = mqttPacket.generate({
      cmd: "puback",
      messageId: 3,
      reasonCode: 0x10,
      properties: { reasonString: "r" },
    }, {
      protocolVersion: 5,
    });
    expect(fast(ackProps, 5)).toBeUndefined();
    expect(fast(Uint8Array.of(0x40, 3, 0, 1, 0x55), 5)).toBeUndefined(); // not a PUBACK reason code
    expect(fast(Uint8Array.of(0x60 | 2, 3, 0, 1, 0x10), 5)).toBeUndefined(); // not a PUBREL reason code
    expect(fast(Uint8Array.of(0x40, 3, 0, 1, 0x10), 4)).toBeUndefined(); // v3.1.1 PUBACK with a stray byte
    expect(fast(Uint8Array.of(0x40, 4, 0, 1, 0x10, 1), 5)).toBeUndefined(); // Property Length 1 (truncated)
    expect(fast(Uint8Array.of(0x40, 4, 0, 1, 0x10, 0), 4)).toBeUndefined(); // v3.1.1
    expect(fast(Uint8Array.of(0x40, 1, 0), 4)).toBeUndefined();
    expect(fast(Uint8Array.of(0xc0, 1, 0), 4)).toBeUndefined(); // PINGREQ with a body
    expect(fast(Uint8Array.of(0x30, 4, 0, 1, 0x61, 1), 5)).toBeUndefined(); // v5 Property Length 1
    expect(fast(Uint8Array.of(0x30, 3, 0, 1, 0x61), 5)).toBeUndefined(); // v5 Property Length missing
    expect(fast(Uint8Array.of(0xe0, 0), 4)).toBeUndefined(); // DISCONNECT
  });

  for (const version of [3, 4, 5] as const) {
    test(`v${version}: a stream of random packets split at every byte gives the same packets`, () => {
      const frames: Uint8Array[] = [connectBytes(version)];
      for (let i = 0; i < 40; i++) {
        const r = rand();
        const packet = r < 0.5
          ? randomPublish(pick([0, 1, 5, 64, 127, 128, 300]))
          : r < 0.9
          ? randomAck(version)
          : ({ cmd: "pingreq" } as Packet);
        frames.push(mqttPacket.generate(packet, { protocolVersion: version }));
      }
      if (version === 5) {
        // Also some the fast path hands over: they must interleave cleanly with the rest.
        frames.push(
          mqttPacket.generate({ cmd: "puback", messageId: 7, reasonCode: 0x80, properties: { reasonString: "no" } }, {
            protocolVersion: 5,
          }),
        );
        frames.push(mqttPacket.generate(
          {
            cmd: "publish",
            topic: "p/q",
            payload: Buffer.from("v"),
            qos: 2,
            messageId: 1,
            dup: false,
            retain: true,
            properties: { userProperties: { k: "v" } },
          },
          { protocolVersion: 5 },
        ));
      }
      frames.push(mqttPacket.generate({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "a/#", qos: 1 }] }, {
        protocolVersion: version,
      }));
      const stream = Buffer.concat(frames);
      const whole = expectSameDecoding([stream]);
      expect("packets" in whole && whole.packets.length).toBe(frames.length);
      for (let cut = 1; cut < stream.byteLength; cut++) {
        expectSameDecoding([stream.subarray(0, cut), stream.subarray(cut)]);
      }
      // And one byte at a time.
      const bytes: Uint8Array[] = [];
      for (let i = 0; i < stream.byteLength; i++) bytes.push(stream.subarray(i, i + 1));
      expectSameDecoding(bytes);
    });
  }

  test("the version a CONNECT announces applies to the packets right behind it in the same chunk", () => {
    const publish = mqttPacket.generate(
      { cmd: "publish", topic: "t", payload: Buffer.from("hello"), qos: 1, messageId: 5, dup: false, retain: false },
      { protocolVersion: 5 },
    );
    const out = expectSameDecoding([Buffer.concat([connectBytes(5), publish])]);
    const p = (out as { packets: Packet[] }).packets[1] as Packet & { payload: Buffer };
    // Read as v5, the Property Length byte is not taken for payload.
    expect(p.payload.toString()).toBe("hello");
    // Without a CONNECT, the parser's initial version (4) applies: the 0x00 is payload.
    const v4 = expectSameDecoding([publish]);
    expect(((v4 as { packets: Packet[] }).packets[0] as Packet & { payload: Buffer }).payload.byteLength).toBe(6);
  });

  test("payloads across every Remaining Length size, up to 2 MB, decode the same whole and split", () => {
    for (const version of [4, 5] as const) {
      for (const size of [0, 127, 128, 16383, 16384, 2_097_151, 2 * 1024 * 1024]) {
        const frame = mqttPacket.generate(randomPublish(size), { protocolVersion: version });
        const prefix = version === 5 ? [connectBytes(5)] : [];
        expectSameDecoding([...prefix, frame]);
        for (const cut of [1, 2, 3, 4, 5, frame.byteLength >> 1, frame.byteLength - 1]) {
          expectSameDecoding([...prefix, frame.subarray(0, cut), frame.subarray(cut)]);
        }
      }
    }
  });

  test("a small payload is copied out of the received bytes, a large one stays a view of them (both paths)", () => {
    const small = (qos: 0 | 1, payload: Buffer) =>
      mqttPacket.generate({ cmd: "publish", topic: "a/b", payload, qos, messageId: 2, dup: false, retain: false });
    const chunk = Buffer.concat([small(1, Buffer.from("xyz")), small(0, Buffer.alloc(0))]);
    const big = small(0, Buffer.alloc(1000, 7));
    for (const fastPath of [false, true]) {
      const [p, empty] = new PacketReader(MAX, { fastPath }).push(chunk) as (Packet & { payload: Buffer })[];
      // Three bytes must not keep the whole read alive.
      expect(p!.payload.buffer).not.toBe(chunk.buffer);
      expect(p!.payload.buffer.byteLength).toBe(3);
      expect(Buffer.isBuffer(p!.payload)).toBe(true);
      expect(p!.payload.toString()).toBe("xyz");
      // An empty payload is a fresh, empty Buffer of its own in both.
      expect(empty!.payload.buffer).not.toBe(chunk.buffer);
      expect(Buffer.isBuffer(empty!.payload)).toBe(true);
      // Most of the read: no copy.
      const [q] = new PacketReader(MAX, { fastPath }).push(big) as (Packet & { payload: Buffer })[];
      expect(q!.payload.buffer).toBe(big.buffer);
      expect(q!.payload.byteOffset).toBe(big.byteOffset + big.byteLength - 1000);
    }
    // Bytes held over from a previous push are copied (the adapter may reuse its buffer).
    const a = chunk.subarray(0, 6);
    const b = chunk.subarray(6);
    for (const fastPath of [false, true]) {
      const reader = new PacketReader(MAX, { fastPath });
      expect(reader.push(new Uint8Array(a))).toEqual([]);
      const copyOfB = new Uint8Array(b);
      const [p] = reader.push(copyOfB) as (Packet & { payload: Buffer })[];
      expect(p!.payload.buffer).not.toBe(copyOfB.buffer);
      expect(p!.payload.toString()).toBe("xyz");
    }
  });

  test("v5 properties (mqtt-packet's path): small payloads and Correlation Data are copied, a Will payload too", () => {
    const connect = mqttPacket.generate({
      cmd: "connect",
      protocolVersion: 5,
      clientId: "c",
      clean: true,
      keepalive: 0,
      will: { topic: "w", payload: Buffer.from("bye"), qos: 0, retain: false },
    } as Packet, { protocolVersion: 5 });
    const publish = mqttPacket.generate({
      cmd: "publish",
      topic: "a",
      payload: Buffer.from("hi"),
      qos: 0,
      dup: false,
      retain: false,
      properties: { correlationData: Buffer.from("cd"), contentType: "t" },
    }, { protocolVersion: 5 });
    const chunk = Buffer.concat([connect, publish, Buffer.alloc(4096)]).subarray(
      0,
      connect.byteLength + publish.byteLength,
    );
    const [c, p] = new PacketReader(MAX).push(chunk) as Array<Packet & Record<string, unknown>>;
    const will = (c as unknown as { will: { payload: Buffer } }).will;
    expect(will.payload.toString()).toBe("bye");
    expect(will.payload.buffer).not.toBe(chunk.buffer);
    const pub = p as unknown as { payload: Buffer; properties: { correlationData: Buffer } };
    expect(pub.payload.toString()).toBe("hi");
    expect(pub.payload.buffer).not.toBe(chunk.buffer);
    expect(pub.properties.correlationData.buffer).not.toBe(chunk.buffer);
  });

  test("a packet arriving in pieces is parsed once, from a buffer of its own size", () => {
    const payload = randomBytes(300_000);
    const frame = mqttPacket.generate({ cmd: "publish", topic: "t", payload, qos: 0, dup: false, retain: false });
    for (const piece of [1, 7, 4096, 65536]) {
      const reader = new PacketReader(MAX);
      let got: Packet[] = [];
      // One byte at a time only for the start: the whole packet byte by byte is slow in a test.
      const cuts = piece === 1 ? [...Array(50).keys()].map((i) => i + 1).concat([frame.byteLength]) : [];
      if (cuts.length === 0) { for (let i = piece; i < frame.byteLength; i += piece) cuts.push(i); }
      let at = 0;
      for (const cut of [...cuts, frame.byteLength]) {
        if (cut <= at) continue;
        got = got.concat(reader.push(new Uint8Array(frame.subarray(at, cut))));
        at = cut;
        if (at < frame.byteLength) {
          expect(got).toEqual([]);
          // Never more than twice what arrived, nor more than the packet.
          expect(reader.bufferedBytes).toBeLessThanOrEqual(Math.min(2 * at, frame.byteLength));
        }
      }
      expect(reader.bufferedBytes).toBe(0);
      const [p] = got as (Packet & { payload: Buffer })[];
      expect(p!.payload.equals(payload)).toBe(true);
      expect(p!.payload.buffer.byteLength).toBe(frame.byteLength);
    }
  });
});

// ---- malformed input ---------------------------------------------------------------------

describe("malformed input is refused as before", () => {
  const cases: [string, number[]][] = [
    ["topic length beyond the packet", [0x30, 0x03, 0x00, 0x05, 0x61]],
    ["topic length beyond the packet by one", [0x32, 0x05, 0x00, 0x02, 0x61, 0x00, 0x01]],
    ["no room for a topic length", [0x30, 0x01, 0x00]],
    ["PUBLISH with nothing at all", [0x30, 0x00]],
    ["v5 PUBACK with an unknown reason code", [0x40, 0x03, 0x00, 0x01, 0x55]],
    ["v5 PUBCOMP with a PUBACK-only reason code", [0x70, 0x03, 0x00, 0x01, 0x10]],
    ["v5 PUBLISH with a truncated property", [0x30, 0x05, 0x00, 0x01, 0x61, 0x02, 0x01]],
  ];
  for (const version of [4, 5] as const) {
    for (const [what, bytes] of cases) {
      test(`v${version}: ${what}`, () => {
        const prefix = version === 5 ? [connectBytes(5)] : [];
        const chunk = Uint8Array.from(bytes);
        const whole = expectSameDecoding([...prefix, chunk]);
        for (let cut = 1; cut < chunk.byteLength; cut++) {
          expectSameDecoding([...prefix, chunk.subarray(0, cut), chunk.subarray(cut)]);
        }
        if ("error" in whole) expect(whole.code).toBe(RC.MALFORMED_PACKET);
      });
    }
  }

  test("a QoS>0 PUBLISH or an acknowledgement without room for a packet identifier is Malformed (spec 3.3.2.2, 3.4.2)", () => {
    const bad = [
      [0x32, 0x03, 0x00, 0x01, 0x61], // QoS 1, topic "a", then nothing
      [0x34, 0x04, 0x00, 0x01, 0x61, 0x07], // QoS 2, one byte of packet id
      [0x40, 0x00],
      [0x50, 0x01, 0x00],
      [0x62, 0x00],
      [0x70, 0x01, 0x09],
    ];
    for (const version of [4, 5] as const) {
      for (const bytes of bad) {
        const prefix = version === 5 ? [connectBytes(5)] : [];
        const out = expectSameDecoding([...prefix, Uint8Array.from(bytes)]) as { error: string; code: number };
        expect(out.code).toBe(RC.MALFORMED_PACKET);
        // v5 QoS 2 with one byte of packet id: mqtt-packet reads that byte as a Property
        // Length and refuses the packet itself.
        const why = version === 5 && bytes[0] === 0x34
          ? "Cannot parse property code type"
          : "without a packet identifier";
        expect(out.error).toContain(why);
      }
    }
  });

  test("what mqtt-packet accepts and the core refuses still reaches the core unchanged: wildcards", () => {
    const limits = { maxTopicLength: 1000, maxTopicLevels: 100 };
    const topics = [
      [0x61, 0x2f, 0x2b], // "a/+" [MQTT-3.3.2-2]
      [0x23], // "#"
    ];
    for (const t of topics) {
      const frame = Uint8Array.from([0x30, 2 + t.length + 1, 0x00, t.length, ...t, 0x21]);
      const out = expectSameDecoding([frame]);
      const p = (out as { packets: Packet[] }).packets[0] as Packet & { topic: string };
      expect(fast(frame, 4)).toBeDefined();
      expect(topicNameProblem(p.topic, limits)).toBeDefined();
    }
  });

  test("a topic that is not acceptable UTF-8 is left to mqtt-packet, and both paths refuse it as Malformed [MQTT-1.5.4-1] [MQTT-1.5.4-2]", () => {
    const topics = [
      [0xc3, 0x28], // ill-formed UTF-8 (mqtt-packet decodes it to U+FFFD)
      [0xed, 0xa0, 0x80], // an encoded surrogate, not allowed in UTF-8
      [0x61, 0x00, 0x62], // U+0000
      [0xc0, 0xaf], // an overlong "/"
      [0xf4, 0x90, 0x80, 0x80], // beyond U+10FFFF
      [0x61, 0xe2, 0x82], // cut short
    ];
    for (const version of [4, 5] as const) {
      for (const t of topics) {
        const prefix = version === 5 ? [connectBytes(5)] : [];
        const body = [0x00, t.length, ...t, ...(version === 5 ? [0] : []), 0x21];
        const frame = Uint8Array.from([0x30, body.length, ...body]);
        expect(fast(frame, version)).toBeUndefined();
        const out = expectSameDecoding([...prefix, frame]) as { error: string; code: number };
        expect(out.code).toBe(RC.MALFORMED_PACKET);
      }
    }
    // A genuine U+FFFD, U+FEFF and other well-formed characters stay on the fast path.
    for (const t of ["\uFFFD", "\uFEFFa", "温度/😀", "a\u0001b"]) {
      const bytes = [...Buffer.from(t)];
      const frame = Uint8Array.from([0x30, 2 + bytes.length + 1, 0x00, bytes.length, ...bytes, 0x21]);
      expect((fast(frame, 4) as Packet & { topic: string }).topic).toBe(t);
      expectSameDecoding([frame]);
    }
  });

  test("a packet id of 0 decodes as mqtt-packet decodes it", () => {
    expectSameDecoding([Uint8Array.of(0x32, 0x05, 0x00, 0x01, 0x61, 0x00, 0x00)]);
    expectSameDecoding([Uint8Array.of(0x40, 0x02, 0x00, 0x00)]);
  });

  test("a Remaining Length in more bytes than needed decodes as mqtt-packet decodes it", () => {
    expectSameDecoding([Uint8Array.of(0x30, 0x85, 0x80, 0x00, 0x00, 0x01, 0x61, 0x62, 0x63)]);
    expectSameDecoding([Uint8Array.of(0x40, 0x82, 0x00, 0x00, 0x01)]);
    expectSameDecoding([Uint8Array.of(0xc0, 0x80, 0x00)]);
  });
});

// ---- strict refusals (issue 18) -------------------------------------------------------------

describe("strict refusals are the same on the fast path and through mqtt-packet", () => {
  const connect5 = connectBytes(5);
  const bytesOf = (h: string) => [...Buffer.from(h.replace(/\s+/g, ""), "hex")];
  const hex = (h: string) => Uint8Array.from(bytesOf(h));
  /** A frame from its first byte and its body (the Remaining Length is counted here; all < 128). */
  const pkt = (first: number, body: string) => Uint8Array.from([first, bytesOf(body).length, ...bytesOf(body)]);
  // [what, version the stream speaks, frame, reason code]
  const cases: Array<[string, 4 | 5, Uint8Array, number]> = [
    [
      "the issue's PUBLISH with Correlation Data and no value",
      5,
      hex("32 12 0005 746F706963 1234 01 09 7061796C6F6164"),
      RC.MALFORMED_PACKET,
    ],
    [
      "the issue's SUBSCRIBE with a Payload Format Indicator",
      5,
      hex("82 09 0001 02 0100 0001 70 00"),
      RC.MALFORMED_PACKET,
    ],
    ["PUBLISH with a Reason String", 5, pkt(0x30, "0001 61 04 1f 0001 78 00 21"), RC.MALFORMED_PACKET],
    ["PUBLISH with an unknown property", 5, pkt(0x30, "0001 61 01 7f 21"), RC.MALFORMED_PACKET],
    ["PUBLISH with Content Type twice", 5, pkt(0x30, "0001 61 08 03 0001 61 03 0001 62 21"), RC.PROTOCOL_ERROR],
    ["PUBLISH with a wildcard Response Topic", 5, pkt(0x30, "0001 61 04 08 0001 23 21"), RC.PROTOCOL_ERROR],
    ["PUBLISH with Topic Alias twice", 5, pkt(0x30, "0001 61 06 23 0001 23 0002 21"), RC.PROTOCOL_ERROR],
    ["PUBLISH without a Property Length", 5, pkt(0x30, "0001 61"), RC.MALFORMED_PACKET],
    ["PUBACK with a Content Type", 5, pkt(0x40, "0001 00 04 03 0001 61"), RC.MALFORMED_PACKET],
    ["PUBREL with an unknown property", 5, pkt(0x62, "0001 00 02 55 00"), RC.MALFORMED_PACKET],
    ["PUBCOMP with its Property Length past the end", 5, pkt(0x70, "0001 00 05"), RC.MALFORMED_PACKET],
    ["PUBREC with bytes after its properties", 5, pkt(0x50, "0001 80 00 ff"), RC.MALFORMED_PACKET],
    ["UNSUBSCRIBE with a Subscription Identifier", 5, pkt(0xa2, "0001 02 0b 01 0001 61"), RC.MALFORMED_PACKET],
    ["SUBSCRIBE with Subscription Identifier 0", 5, pkt(0x82, "0001 02 0b 00 0001 61 00"), RC.PROTOCOL_ERROR],
    ["SUBSCRIBE with a filter holding U+0000", 5, pkt(0x82, "0001 00 0002 6100 00"), RC.MALFORMED_PACKET],
    ["DISCONNECT with a Topic Alias", 5, pkt(0xe0, "00 03 23 0001"), RC.MALFORMED_PACKET],
    ["AUTH with a Topic Alias", 5, pkt(0xf0, "18 03 23 0001"), RC.MALFORMED_PACKET],
    ["CONNACK from a client", 5, pkt(0x20, "00 00 00"), RC.PROTOCOL_ERROR],
    ["SUBACK from a client", 5, pkt(0x90, "0001 00 00"), RC.PROTOCOL_ERROR],
    ["UNSUBACK from a client", 5, pkt(0xb0, "0001 00 00"), RC.PROTOCOL_ERROR],
    ["PINGRESP from a client", 5, pkt(0xd0, ""), RC.PROTOCOL_ERROR],
    ["3.1.1 PUBACK with a stray byte", 4, pkt(0x40, "0001 00"), RC.MALFORMED_PACKET],
    ["3.1.1 PINGREQ with a body", 4, pkt(0xc0, "00"), RC.MALFORMED_PACKET],
    ["3.1.1 DISCONNECT with a body", 4, pkt(0xe0, "00"), RC.MALFORMED_PACKET],
    ["3.1.1 SUBSCRIBE with an empty filter", 4, pkt(0x82, "0001 0000 00"), RC.PROTOCOL_ERROR],
    ["3.1.1 UNSUBSCRIBE with a surrogate in its filter", 4, pkt(0xa2, "0001 0003 eda080"), RC.MALFORMED_PACKET],
    ["3.1.1 PUBLISH topic with U+0000", 4, pkt(0x30, "0002 6100 21"), RC.MALFORMED_PACKET],
  ];
  for (const [what, version, frame, code] of cases) {
    test(`v${version}: ${what} gets 0x${code.toString(16)} on both paths, whole and split`, () => {
      const prefix = version === 5 ? [connect5] : [connectBytes(4)];
      const whole = expectSameDecoding([...prefix, frame]) as { error?: string; code: number };
      expect(whole.error).toBeDefined();
      expect(whole.code).toBe(code);
      for (let cut = 1; cut < frame.byteLength; cut++) {
        expectSameDecoding([...prefix, frame.subarray(0, cut), frame.subarray(cut)]);
      }
    });
  }

  const connects: Array<[string, Uint8Array, number, number | undefined]> = [
    ["3.1.1 Will QoS 3", pkt(0x10, "0004 4d515454 04 1e 003c 0001 63 0001 77 0001 78"), RC.MALFORMED_PACKET, 4],
    [
      "3.1.1 password without user name",
      pkt(0x10, "0004 4d515454 04 42 003c 0001 63 0002 7077"),
      RC.MALFORMED_PACKET,
      4,
    ],
    [
      "3.1.1 user name while its flag is 0",
      pkt(0x10, "0004 4d515454 04 02 003c 0001 63 0002 7577"),
      RC.MALFORMED_PACKET,
      4,
    ],
    ["3.1.1 user name with U+0000", pkt(0x10, "0004 4d515454 04 82 003c 0001 63 0002 7500"), RC.MALFORMED_PACKET, 4],
    [
      "v5 duplicate Receive Maximum",
      pkt(0x10, "0004 4d515454 05 02 003c 06 2100 0a 2100 0b 0001 63"),
      RC.PROTOCOL_ERROR,
      5,
    ],
    ["v5 Receive Maximum 0", pkt(0x10, "0004 4d515454 05 02 003c 03 2100 00 0001 63"), RC.PROTOCOL_ERROR, 5],
    ["v5 Authentication Data alone", pkt(0x10, "0004 4d515454 05 02 003c 04 16 0001 aa 0001 63"), RC.PROTOCOL_ERROR, 5],
    ["unknown protocol name", pkt(0x10, "0004 4d515458 04 02 003c 0001 63"), RC.MALFORMED_PACKET, undefined],
    ["MQTT with level 3", pkt(0x10, "0004 4d515454 03 02 003c 0001 63"), RC.UNSUPPORTED_PROTOCOL_VERSION, undefined],
    [
      "MQIsdp with level 4",
      pkt(0x10, "0006 4d5149736470 04 02 003c 0001 63"),
      RC.UNSUPPORTED_PROTOCOL_VERSION,
      undefined,
    ],
    ["protocol level 7", pkt(0x10, "0004 4d515454 07 02 003c 0001 63"), RC.UNSUPPORTED_PROTOCOL_VERSION, undefined],
  ];
  for (const [what, frame, code, level] of connects) {
    test(`CONNECT, ${what}: 0x${code.toString(16)}, with the protocol level ${level ?? "unknown"} for the CONNACK`, () => {
      const whole = expectSameDecoding([frame]) as { error?: string; code: number };
      expect(whole.code).toBe(code);
      let err: unknown;
      try {
        new PacketReader(MAX).push(frame);
      } catch (e) {
        err = e;
      }
      expect((err as MqttError).protocolVersion).toBe(level);
    });
  }

  test("everything the fast path decodes passes the strict check it skips", () => {
    for (const version of [3, 4, 5] as const) {
      for (let i = 0; i < 500; i++) {
        const packet = rand() < 0.6 ? randomPublish() : randomAck(version);
        const frame = mqttPacket.generate(packet, { protocolVersion: version });
        if (fast(frame, version) === undefined) continue;
        let body = 2;
        while ((frame[body - 1]! & 0x80) !== 0) body++;
        expect(() => checkPacket(frame, 0, body, frame.byteLength, version)).not.toThrow();
      }
    }
  });
});

// ---- encoding ----------------------------------------------------------------------------

/** The fast encoding of `make()` must exist and equal generate's bytes; encode() too. */
function expectSameEncoding(make: () => Packet, version: ProtocolVersion, covered = true): void {
  const reference = mqttPacket.generate(make(), { protocolVersion: version });
  const mine = encodeFast(make(), version);
  if (covered) {
    expect(mine).toBeDefined();
    expect(Buffer.isBuffer(mine)).toBe(true);
    expect(Buffer.compare(mine!, reference)).toBe(0);
  } else {
    expect(mine).toBeUndefined();
  }
  expect(Buffer.compare(Buffer.from(encode(make(), version)), reference)).toBe(0);
}

describe("fast-path encoding is byte-identical to mqtt-packet.generate", () => {
  test("random PUBLISH packets, v3/v4 and v5 without properties", () => {
    for (const version of [3, 4, 5] as const) {
      for (let i = 0; i < 1000; i++) {
        const packet = randomPublish();
        if (rand() < 0.2) (packet as { dup: boolean }).dup = true; // DUP at QoS 0 too: same bytes as generate
        expectSameEncoding(() => packet, version);
      }
    }
  });

  test("payloads at every Remaining Length boundary, up to 2 MB, as Buffer, Uint8Array and string", () => {
    // Sizes chosen so the Remaining Length of a QoS 1 "t/ü" PUBLISH (2 + 4 + 2 bytes of header) lands on 127/128,
    // 16383/16384 and 2097151/2097152, plus the sizes named in the brief.
    const sizes = [0, 127, 128, 16383, 16384, 2 * 1024 * 1024];
    for (const rem of [127, 128, 16383, 16384, 2_097_151, 2_097_152]) sizes.push(rem - 8, rem - 9);
    for (const version of [4, 5] as const) {
      for (const size of sizes) {
        const payload = randomBytes(size);
        const make = (p: string | Buffer) => (): Packet => ({
          cmd: "publish",
          topic: "t/ü",
          payload: p,
          qos: 1,
          messageId: 4242,
          dup: false,
          retain: true,
        });
        expectSameEncoding(make(payload), version);
        // A plain Uint8Array as the core passes it (encode converts for mqtt-packet).
        const u8 = new Uint8Array(payload);
        const mine = encodeFast(make(u8 as unknown as Buffer)(), version)!;
        expect(Buffer.compare(mine, mqttPacket.generate(make(payload)(), { protocolVersion: version }))).toBe(0);
        expect(Buffer.compare(Buffer.from(encode(make(u8 as unknown as Buffer)(), version)), mine)).toBe(0);
        if (size < 20_000) expectSameEncoding(make("é".repeat(size >> 1)), version);
      }
    }
  });

  test("topics: multi-byte UTF-8, surrogate pairs, a lone surrogate, empty, 65535 bytes", () => {
    const topics = ["é", "温度/センサー", "😀/x", "a\ud800b", "", "x".repeat(65535), "é".repeat(32767) + "x"];
    for (const version of [4, 5] as const) {
      for (const topic of topics) {
        expectSameEncoding(
          () => ({ cmd: "publish", topic, payload: Buffer.from("p"), qos: 0, dup: false, retain: false }),
          version,
        );
      }
    }
  });

  test("v5 PUBLISH: absent or all-undefined properties are covered; what the fast path does not write goes to mqtt-packet", () => {
    const base = {
      cmd: "publish",
      topic: "a",
      payload: Buffer.from("b"),
      qos: 1,
      messageId: 1,
      dup: false,
      retain: false,
    } as const;
    expectSameEncoding(() => ({ ...base }), 5);
    expectSameEncoding(() => ({ ...base, properties: {} }), 5);
    expectSameEncoding(() => ({ ...base, properties: { contentType: undefined } }), 5);
    expectSameEncoding(() => ({ ...base, properties: { contentType: "text/plain" } }), 5);
    expectSameEncoding(() => ({ ...base, properties: { topicAlias: 3, messageExpiryInterval: 10 } }), 5);
    // Left to mqtt-packet: names a PUBLISH does not carry, values it refuses or converts.
    const left: Record<string, unknown>[] = [
      { reasonString: "r" },
      { payloadFormatIndicator: 1 },
      { messageExpiryInterval: -1 },
      { messageExpiryInterval: 1.5 },
      { topicAlias: 65536 },
      { subscriptionIdentifier: [] },
      { subscriptionIdentifier: 0x10000000 },
      { contentType: ["a", "b"] },
      { contentType: 7 },
      { contentType: null },
      { userProperties: {} },
      { userProperties: { k: 1 } },
      { userProperties: { k: [1] } },
      { userProperties: [{ k: "v" }] },
      { correlationData: 5 },
    ];
    for (const properties of left) {
      expect({ properties, fast: encodeFast({ ...base, properties } as Packet, 5) }).toEqual({
        properties,
        fast: undefined,
      });
    }
    // v3.1.1 has no properties: generate ignores them, and so does the fast path.
    expectSameEncoding(() => ({ ...base, properties: { contentType: "text/plain" } }), 4);
  });

  test("v5 PUBLISH properties are written by hand, byte for byte as mqtt-packet writes them, in the object's order", () => {
    const base = {
      cmd: "publish",
      topic: "t/ü",
      payload: Buffer.from("p"),
      qos: 1,
      messageId: 300,
      dup: false,
      retain: true,
    };
    const cases: Record<string, unknown>[] = [
      // What the uplink stamps on every forwarded message (src/sync/cloud-properties.ts).
      {
        userProperties: {
          "ferry-received-at": "2026-12-07T11:00:00.000Z",
          "ferry-clock": "synced",
          "ferry-edge-id": "edge-1",
          "ferry-log-id": "9f2c",
          "ferry-offset": "123456",
        },
      },
      // A delivery to a v5 subscriber: the publisher's properties, then Ferry's.
      {
        payloadFormatIndicator: true,
        contentType: "application/json",
        responseTopic: "reply/é",
        correlationData: Buffer.from([0, 1, 2, 255]),
        userProperties: { a: "1", "ключ": ["значение", "😀", ""], b: "" },
        messageExpiryInterval: 4294967295,
        subscriptionIdentifier: [1, 127, 128, 16383, 16384, 2097151, 2097152, 268435455],
        topicAlias: 65535,
      },
      { topicAlias: 1, subscriptionIdentifier: 42, payloadFormatIndicator: false, messageExpiryInterval: 0 },
      { correlationData: "text as bytes", contentType: "" },
      { userProperties: { ["k".repeat(300)]: "v".repeat(70_000 >> 2) }, contentType: undefined },
    ];
    for (const properties of cases) {
      for (const payload of [Buffer.alloc(0), Buffer.from("x"), randomBytes(20_000)]) {
        expectSameEncoding(() => ({ ...base, payload, properties } as Packet), 5);
      }
    }
    // Correlation Data as a plain Uint8Array, as the core holds it (mqtt-packet needs a Buffer).
    const u8 = encodeFast({ ...base, properties: { correlationData: new Uint8Array([9, 8, 7]) } } as Packet, 5)!;
    const reference = mqttPacket.generate(
      { ...base, properties: { correlationData: Buffer.from([9, 8, 7]) } } as Packet,
      {
        protocolVersion: 5,
      },
    );
    expect(Buffer.compare(u8, reference)).toBe(0);
    // Property lengths on both sides of a Variable Byte Integer step (127/128, 16383/16384 bytes).
    for (const n of [120, 121, 122, 123, 16_370, 16_376, 16_377, 16_378]) {
      expectSameEncoding(() => ({ ...base, properties: { contentType: "c".repeat(n) } } as Packet), 5);
      expectSameEncoding(() => ({ ...base, properties: { userProperties: { k: "v".repeat(n) } } } as Packet), 5);
    }
  });

  test("PUBACK/PUBREC/PUBREL/PUBCOMP in every version, with and without a reason code", () => {
    for (const version of [3, 4, 5] as const) {
      for (const cmd of ["puback", "pubrec", "pubrel", "pubcomp"] as const) {
        for (const reasonCode of [undefined, 0, 0x10, 0x80, 0x92, 0x97]) {
          for (const messageId of [0, 1, 255, 256, 0x1234, 65535, int(65536)]) {
            expectSameEncoding(() => ({ cmd, messageId, reasonCode }) as Packet, version);
          }
        }
        // Properties (a reason string) in v5 go to mqtt-packet; in v3/v4 they are ignored by both.
        const withProps = () =>
          ({ cmd, messageId: 9, reasonCode: 0x80, properties: { reasonString: "why" } }) as Packet;
        expectSameEncoding(withProps, version, version !== 5);
      }
    }
    // The brief's reading: v5 Success is a 2-byte body; any other code (and an absent one) a
    // Reason Code followed by a Property Length of 0, as generate writes it.
    expect([...encodeFast({ cmd: "puback", messageId: 1, reasonCode: 0 }, 5)!]).toEqual([0x40, 2, 0, 1]);
    expect([...encodeFast({ cmd: "puback", messageId: 1, reasonCode: 0x10 }, 5)!]).toEqual([0x40, 4, 0, 1, 0x10, 0]);
    expect([...encodeFast({ cmd: "puback", messageId: 1 }, 5)!]).toEqual([0x40, 4, 0, 1, 0, 0]);
    expect([...encodeFast({ cmd: "pubrel", messageId: 1 }, 4)!]).toEqual([0x62, 2, 0, 1]);
  });

  test("CONNACK: every version, return and reason codes, Session Present; v5 properties go to mqtt-packet", () => {
    for (const version of [3, 4, 5] as const) {
      for (const code of [0, 1, 2, 3, 4, 5, 0x80, 0x87, 0x8a, 0x97, 0x9f, 0xff]) {
        for (const sessionPresent of [false, true]) {
          expectSameEncoding(() => ({ cmd: "connack", returnCode: code, reasonCode: code, sessionPresent }), version);
        }
      }
      expectSameEncoding(
        () => ({
          cmd: "connack",
          returnCode: 0,
          reasonCode: 0,
          sessionPresent: false,
          properties: { topicAliasMaximum: 10 },
        }),
        version,
        version !== 5,
      );
    }
    expectSameEncoding(() => ({ cmd: "connack", reasonCode: 0, sessionPresent: true, properties: {} }), 5);
    expect([...encodeFast({ cmd: "connack", returnCode: 0, sessionPresent: true }, 4)!]).toEqual([0x20, 2, 1, 0]);
  });

  test("SUBACK and UNSUBACK: every version, one code to a few hundred; v5 properties go to mqtt-packet", () => {
    const codes = [0, 1, 2, 0x80, 0x87, 0x8f, 0x91, 0x9e, 0xa1, 0xa2];
    for (const version of [3, 4, 5] as const) {
      for (const n of [1, 2, 3, 125, 126, 127, 200, 20_000]) {
        const granted = Array.from({ length: n }, () => pick(codes));
        for (const messageId of [1, 256, 65535]) {
          expectSameEncoding(() => ({ cmd: "suback", messageId, granted }), version);
          expectSameEncoding(() => ({ cmd: "unsuback", messageId, granted }) as Packet, version);
        }
      }
      // 3.1.1's UNSUBACK has no codes (spec 3.11.3): whatever granted says is not written.
      if (version !== 5) expectSameEncoding(() => ({ cmd: "unsuback", messageId: 7 }) as Packet, version);
      expectSameEncoding(
        () => ({ cmd: "suback", messageId: 7, granted: [0], properties: { reasonString: "r" } }),
        version,
        version !== 5,
      );
    }
  });

  test("PINGRESP", () => {
    for (const version of [3, 4, 5] as const) expectSameEncoding(() => ({ cmd: "pingresp" }), version);
    // A fresh buffer each time: a caller may patch what it was given.
    expect(encodeFast({ cmd: "pingresp" }, 4)).not.toBe(encodeFast({ cmd: "pingresp" }, 4));
  });

  test("what generate refuses or mangles is left to it, and encode() behaves as before", () => {
    const odd: [string, () => Packet, ProtocolVersion][] = [
      [
        "QoS 1 without a messageId",
        () => ({ cmd: "publish", topic: "a", payload: Buffer.alloc(0), qos: 1, dup: false, retain: false }),
        4,
      ],
      ["messageId 65536", () => ({ cmd: "puback", messageId: 65536 }), 4],
      ["messageId -1", () => ({ cmd: "pubrec", messageId: -1 }), 5],
      [
        "messageId 1.5",
        () => ({ cmd: "publish", topic: "a", payload: "", qos: 2, messageId: 1.5, dup: false, retain: false }),
        4,
      ],
      ["PUBREL with DUP", () => ({ cmd: "pubrel", messageId: 1, dup: true }) as Packet, 4],
      ["reason code 256", () => ({ cmd: "puback", messageId: 1, reasonCode: 256 }), 5],
      [
        "QoS 3",
        () => ({ cmd: "publish", topic: "a", payload: "", qos: 3, dup: false, retain: false }) as unknown as Packet,
        4,
      ],
      [
        "a topic over 65535 bytes",
        () => ({ cmd: "publish", topic: "é".repeat(40000), payload: "", qos: 0, dup: false, retain: false }),
        4,
      ],
      [
        "a Buffer topic",
        () =>
          ({
            cmd: "publish",
            topic: Buffer.from("a"),
            payload: "",
            qos: 0,
            dup: false,
            retain: false,
          }) as unknown as Packet,
        4,
      ],
      [
        "null properties",
        () =>
          ({
            cmd: "publish",
            topic: "a",
            payload: "",
            qos: 0,
            dup: false,
            retain: false,
            properties: null,
          }) as unknown as Packet,
        5,
      ],
    ];
    for (const [what, make, version] of odd) {
      expect({ what, fast: encodeFast(make(), version) }).toEqual({ what, fast: undefined });
      let before: unknown;
      let after: unknown;
      try {
        before = [...encodeWithMqttPacket(make(), version)];
      } catch (e) {
        before = String(e);
      }
      try {
        after = [...encode(make(), version)];
      } catch (e) {
        after = String(e);
      }
      expect({ what, after }).toEqual({ what, after: before });
    }
  });
});
