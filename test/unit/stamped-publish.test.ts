/**
 * The uplink's PUBLISH bytes, written from the message and Ferry's stamp (stamped-publish.ts),
 * are the bytes of the packet object the MQTT.js client is given, encoded by the codec and by
 * mqtt-packet itself.
 */
import { describe, expect, test } from "bun:test";
import { encode, encodeWithMqttPacket } from "../../src/mqtt/codec.ts";
import type { PublishPacket } from "../../src/mqtt/packets.ts";
import type { Message } from "../../src/store/store.ts";
import { type FerryStamp, PropertyStamper, type StampMode } from "../../src/sync/cloud-properties.ts";
import { type EncodableTopic, StampedPublishEncoder } from "../../src/sync/stamped-publish.ts";

const NOW = 1_765_000_000_000;

const message = (over: Partial<Message> = {}): Message => ({
  offset: 42,
  topic: "bench/1",
  payload: new Uint8Array(64).fill(7),
  qos: 1,
  retain: false,
  receivedAt: NOW - 5000,
  origin: "dev",
  ...over,
});

interface Case {
  topic: string;
  payload: Uint8Array;
  qos: 0 | 1 | 2;
  retain: boolean;
  dup: boolean;
  m: Message;
  stamp: FerryStamp;
}

/** The packet object path: what the MQTT.js client is given. */
function reference(c: Case, version: 4 | 5, via: "codec" | "mqtt-packet", mode: StampMode = "full"): Uint8Array {
  const packet = {
    cmd: "publish",
    topic: c.topic,
    payload: c.payload,
    qos: c.qos,
    retain: c.retain,
    dup: c.dup,
    messageId: 0,
  } as PublishPacket;
  if (version === 5) {
    packet.properties = new PropertyStamper(mode).properties(c.m, NOW, c.stamp) as PublishPacket["properties"];
  }
  return via === "codec" ? encode(packet, version) : encodeWithMqttPacket(packet, version);
}

function cases(): Case[] {
  const out: Case[] = [];
  const stamps: FerryStamp[] = [
    { edgeId: "edge1", logId: "k3x9", replay: false, clock: "synced" },
    { edgeId: "edge1", logId: "k3x9", replay: true, clock: "synced" },
    { edgeId: "edge1", logId: "k3x9", replay: true, clock: "unsynced" },
    { edgeId: "gw-ü-☁-😀", logId: "0", replay: false, clock: "unknown" },
    { edgeId: "", logId: "", replay: true, clock: "unknown" },
  ];
  const offsets = [0, 1, 9, 10, 99, 100, 12_345, 999_999, 1_000_000, 2 ** 40 + 7, Number.MAX_SAFE_INTEGER];
  const topics = ["site/edge1/bench/1", "s/☁/ü", "", `site/${"x".repeat(100)}`];
  const payloads = [new Uint8Array(0), new Uint8Array(64).fill(1), new Uint8Array(200_000).fill(2)];
  const received = [NOW - 5000, NOW - 5000, NOW - 4999, 0, 253_402_300_800_000]; // the last: year 10000
  let i = 0;
  for (const stamp of stamps) {
    for (const offset of offsets) {
      i++;
      const qos = (i % 3) as 0 | 1 | 2;
      const expiresAt = i % 4 === 0 ? NOW + 90_500 : i % 4 === 1 ? NOW - 10 : undefined;
      const m = message({ offset, receivedAt: received[i % received.length]!, qos, retain: i % 2 === 0 });
      if (expiresAt !== undefined) m.expiresAt = expiresAt;
      out.push({
        topic: topics[i % topics.length]!,
        payload: payloads[i % payloads.length]!,
        qos,
        retain: i % 5 === 0,
        dup: i % 7 === 0,
        m,
        stamp,
      });
    }
  }
  // A publisher's own properties: the general path, byte for byte the same.
  const withProps: Array<Message["properties"]> = [
    { contentType: "application/json" },
    { userProperties: { unit: "C", "ferry-replay": "true", "ferry-offset": "9" } },
    { payloadFormatIndicator: true, responseTopic: "r/1", correlationData: new Uint8Array([1, 2, 3]) },
  ];
  for (const properties of withProps) {
    out.push({
      topic: "site/edge1/p",
      payload: new Uint8Array([1]),
      qos: 1,
      retain: false,
      dup: false,
      m: message({ properties, expiresAt: NOW + 3000 }),
      stamp: stamps[1]!,
    });
  }
  return out;
}

describe("stamped PUBLISH bytes equal the packet object's", () => {
  for (const [version, mode] of [[5, "full"], [5, "dedup"], [5, "none"], [4, "full"]] as const) {
    test(`v${version}, stamp ${mode}: every stamp, offset, topic, payload size, QoS, DUP, RETAIN and expiry; publisher properties`, () => {
      const encoder = new StampedPublishEncoder(version, mode);
      let n = 0;
      for (const c of cases()) {
        const topic: EncodableTopic = { topic: c.topic };
        // Twice: the second time with the topic's bytes and the stamp's cached.
        for (let round = 0; round < 2; round++) {
          const bytes = encoder.encode(topic, c.payload, c.qos, c.retain, c.dup, c.m, NOW, c.stamp);
          expect(Buffer.from(bytes).equals(Buffer.from(reference(c, version, "codec", mode)))).toBe(true);
          expect(Buffer.from(bytes).equals(Buffer.from(reference(c, version, "mqtt-packet", mode)))).toBe(true);
          n++;
        }
      }
      expect(n).toBeGreaterThan(100);
    });
  }

  test.each(["full", "dedup"] as const)(
    "stamp %s: the cached bytes follow a change of clock state or log id between messages",
    (mode) => {
      const encoder = new StampedPublishEncoder(5, mode);
      const topic = { topic: "site/e/t" };
      const seq: FerryStamp[] = [
        { edgeId: "e", logId: "a", replay: false, clock: "unknown" },
        { edgeId: "e", logId: "a", replay: false, clock: "synced" },
        { edgeId: "e", logId: "b", replay: false, clock: "synced" },
        { edgeId: "e", logId: "b", replay: false, clock: "synced" },
      ];
      seq.forEach((stamp, i) => {
        const c: Case = {
          topic: topic.topic,
          payload: new Uint8Array([i]),
          qos: 1,
          retain: false,
          dup: false,
          m: message({ offset: i }),
          stamp,
        };
        const bytes = encoder.encode(topic, c.payload, 1, false, false, c.m, NOW, stamp);
        expect(Buffer.from(bytes).equals(Buffer.from(reference(c, 5, "codec", mode)))).toBe(true);
      });
    },
  );
});

describe("stamp modes", () => {
  const props = (mode: StampMode, m: Message, stamp: FerryStamp) =>
    new PropertyStamper(mode).properties(m, NOW, stamp)?.userProperties;
  const live: FerryStamp = { edgeId: "e", logId: "L", replay: false, clock: "synced" };
  const replay: FerryStamp = { ...live, replay: true };

  test("dedup: the key and the replay marker, nothing else of Ferry's", () => {
    expect(props("dedup", message(), live)).toEqual({
      "ferry-edge-id": "e",
      "ferry-log-id": "L",
      "ferry-offset": "42",
    });
    expect(props("dedup", message(), replay)).toEqual({
      "ferry-edge-id": "e",
      "ferry-log-id": "L",
      "ferry-offset": "42",
      "ferry-replay": "true",
    });
  });

  test("none: no User Properties of Ferry's, and a publisher's fake ferry-* values are dropped", () => {
    expect(props("none", message(), replay)).toBeUndefined();
    const m = message({ properties: { userProperties: { unit: "C", "ferry-offset": "1", "ferry-replay": "true" } } });
    expect(props("none", m, live)).toEqual({ unit: "C" });
    const onlyFake = message({ properties: { userProperties: { "ferry-clock": "synced" } } });
    expect(props("none", onlyFake, live)).toBeUndefined();
  });

  test("full: a publisher's ferry-* values are replaced, its replay marker dropped on a live message", () => {
    const m = message({ properties: { userProperties: { unit: "C", "ferry-offset": "1", "ferry-replay": "true" } } });
    const u = props("full", m, live)!;
    expect(u.unit).toBe("C");
    expect(u["ferry-offset"]).toBe("42");
    expect(u["ferry-replay"]).toBeUndefined();
  });

  test("the wire: full > dedup > none for the same message", () => {
    const sizes = (["full", "dedup", "none"] as const).map((mode) =>
      new StampedPublishEncoder(5, mode).encode(
        { topic: "t" },
        new Uint8Array(64),
        1,
        false,
        false,
        message(),
        NOW,
        live,
      )
        .byteLength
    );
    expect(sizes[0]! - sizes[1]!).toBeGreaterThan(50);
    expect(sizes[1]! - sizes[2]!).toBeGreaterThan(40);
    expect(sizes[2]).toBe(2 + 3 + 2 + 1 + 64); // header, topic, packet id, empty properties, payload
  });
});
