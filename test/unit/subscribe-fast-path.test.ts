/**
 * SUBSCRIBE decoded by hand (src/mqtt/subscribe-fast-path.ts) against mqtt-packet: the
 * same object (class, key order, values) for every SUBSCRIBE it takes, and everything
 * unusual left to mqtt-packet and validate-packet.ts, so malformed SUBSCRIBEs are refused
 * as before with the same reason code and message. Seeded, so a failure reproduces.
 */
import { describe, expect, test } from "bun:test";
import mqttPacket from "mqtt-packet";
import MqttPacketObject from "mqtt-packet/packet.js";
import { PacketReader } from "../../src/mqtt/codec.ts";
import { decodeFast } from "../../src/mqtt/fast-path.ts";
import { encodeSuback } from "../../src/mqtt/subscribe-fast-path.ts";
import type { Packet } from "../../src/mqtt/packets.ts";
import { MqttError } from "../../src/mqtt/reason-codes.ts";
import { prng } from "../helpers/fuzz-packets.ts";

const MAX = 1024 * 1024;
const rand = prng(0x5ab5_c12b).next;
const int = (n: number) => Math.floor(rand() * n);
const FILTER_PARTS = ["a", "sensors", "+", "#", "温度", "😀", "$SYS", "x y", "", "$share", "g"] as const;
const randomFilter = () => Array.from({ length: 1 + int(4) }, () => FILTER_PARTS[int(FILTER_PARTS.length)]).join("/");

type Outcome = { packets: Packet[] } | { error: string; code: number };
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

/** The fast-path reader and the mqtt-packet-only reader agree on `chunks`, packet for packet (key order too). */
function expectSame(chunks: Uint8Array[]): Outcome {
  const expected = run(new PacketReader(MAX, { fastPath: false }), chunks);
  const actual = run(new PacketReader(MAX), chunks);
  if ("error" in expected) {
    expect(actual).toEqual(expected);
    return actual;
  }
  expect("packets" in actual).toBe(true);
  const a = (actual as { packets: Packet[] }).packets;
  expect(a.length).toBe(expected.packets.length);
  for (let i = 0; i < a.length; i++) {
    expect(a[i]).toStrictEqual(expected.packets[i]!);
    expect(Object.getPrototypeOf(a[i])).toBe(Object.getPrototypeOf(expected.packets[i]));
    expect(Object.keys(a[i]!)).toEqual(Object.keys(expected.packets[i]!));
    const subs = (p: Packet) => (p as { subscriptions?: object[] }).subscriptions ?? [];
    expect(subs(a[i]!).map((s) => Object.keys(s))).toEqual(subs(expected.packets[i]!).map((s) => Object.keys(s)));
  }
  return actual;
}

function connect(version: 3 | 4 | 5, bridge = false): Uint8Array {
  const bytes = mqttPacket.generate({
    cmd: "connect",
    protocolId: version === 3 ? "MQIsdp" : "MQTT",
    protocolVersion: version,
    clientId: "c",
    clean: true,
    keepalive: 0,
  });
  if (bridge) bytes[8] = bytes[8]! | 0x80; // the protocol level's bridge bit
  return bytes;
}

/** `decodeFast` on one whole frame, as PacketReader calls it. */
function fast(frame: Uint8Array, version: number, bridge = false): Packet | undefined {
  let body = 2;
  while ((frame[body - 1]! & 0x80) !== 0) body++;
  const buf = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
  return decodeFast(buf, frame[0]!, body, frame.byteLength - body, version, true, bridge);
}

describe("SUBSCRIBE on the fast path", () => {
  test("is decoded by hand into mqtt-packet's own object (v3.1, v3.1.1, v5, bridge mode)", () => {
    for (const [version, bridge] of [[3, false], [4, false], [4, true], [5, false]] as const) {
      for (let i = 0; i < 300; i++) {
        const subscriptions = Array.from({ length: 1 + int(3) }, () => {
          const s: { topic: string; qos: 0 | 1 | 2; nl?: boolean; rap?: boolean; rh?: number } = {
            topic: randomFilter() || "a",
            qos: int(3) as 0 | 1 | 2,
          };
          if (version === 5) Object.assign(s, { nl: rand() < 0.5, rap: rand() < 0.5, rh: int(3) });
          return s;
        });
        const frame = mqttPacket.generate(
          { cmd: "subscribe", messageId: 1 + int(65535), subscriptions },
          { protocolVersion: version },
        );
        const mine = fast(frame, version, bridge);
        expect(mine).toBeInstanceOf(MqttPacketObject);
        expectSame([connect(version, bridge), frame]);
      }
    }
  });

  test("pipelined SUBSCRIBEs split across reads anywhere decode as mqtt-packet decodes them", () => {
    const frames = Array.from({ length: 20 }, (_, i) =>
      mqttPacket.generate({
        cmd: "subscribe",
        messageId: i + 1,
        subscriptions: [{ topic: `s/${i}/+`, qos: 1, nl: false, rap: false, rh: 0 }],
      }, { protocolVersion: 5 }));
    const all = Buffer.concat(frames);
    for (let cut = 1; cut < all.byteLength; cut += 7) {
      expectSame([connect(5), all.subarray(0, cut), all.subarray(cut)]);
    }
  });

  const leftToMqttPacket: Array<[string, 4 | 5, number[]]> = [
    ["v5 with a Subscription Identifier", 5, [0x82, 9, 0, 1, 2, 0x0b, 7, 0, 1, 0x61, 1]],
    ["v5 with a truncated Property Length", 5, [0x82, 3, 0, 1, 5]],
    ["no filter (v5)", 5, [0x82, 3, 0, 1, 0]],
    ["no filter (3.1.1)", 4, [0x82, 2, 0, 1]],
    ["an empty filter (3.1.1: a protocol error)", 4, [0x82, 5, 0, 1, 0, 0, 1]],
    ["an empty filter (v5: answered 0x8F)", 5, [0x82, 6, 0, 1, 0, 0, 0, 1]],
    ["a filter without its options byte", 4, [0x82, 5, 0, 1, 0, 1, 0x61]],
    ["a filter running past the packet", 4, [0x82, 6, 0, 1, 0, 5, 0x61, 1]],
    ["QoS 3", 4, [0x82, 6, 0, 1, 0, 1, 0x61, 3]],
    ["3.1.1 reserved option bits", 4, [0x82, 6, 0, 1, 0, 1, 0x61, 0x04]],
    ["v5 reserved option bits", 5, [0x82, 7, 0, 1, 0, 0, 1, 0x61, 0x40]],
    ["v5 Retain Handling 3", 5, [0x82, 7, 0, 1, 0, 0, 1, 0x61, 0x30]],
    ["ill-formed UTF-8", 4, [0x82, 7, 0, 1, 0, 2, 0xc3, 0x28, 1]],
    ["U+0000 in a filter", 4, [0x82, 8, 0, 1, 0, 3, 0x61, 0, 0x62, 1]],
    ["no packet identifier", 4, [0x82, 1, 0]],
  ];
  for (const [what, version, bytes] of leftToMqttPacket) {
    test(`is left to mqtt-packet and refused or decoded as before: ${what}`, () => {
      const frame = Uint8Array.from(bytes);
      expect(fast(frame, version)).toBeUndefined();
      expectSame([connect(version), frame]);
    });
  }

  test("a packet id of 0 is refused as before [MQTT-2.3.1-1]", () => {
    const out = expectSame([connect(4), Uint8Array.of(0x82, 6, 0, 0, 0, 1, 0x61, 1)]);
    expect("error" in out).toBe(true);
  });
});

describe("a one-code SUBACK encoded by hand", () => {
  test("is byte for byte what mqtt-packet.generate writes, in every version", () => {
    for (const version of [3, 4, 5] as const) {
      for (const messageId of [1, 2, 255, 256, 4660, 65535]) {
        for (const code of [0, 1, 2, 0x80, 0x87, 0x8f, 0x97]) {
          const expected = mqttPacket.generate({ cmd: "suback", messageId, granted: [code] }, {
            protocolVersion: version,
          });
          expect(Buffer.from(encodeSuback(messageId, code, version)).equals(expected)).toBe(true);
        }
      }
    }
  });
});
