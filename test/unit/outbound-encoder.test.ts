import { describe, expect, test } from "bun:test";
import mqttPacket from "mqtt-packet";
import { type EncodeCache, encodeOutbound, type OutboundPeer } from "../../src/core/outbound-encoder.ts";
import type { Outbound } from "../../src/core/session.ts";
import type { Message } from "../../src/store/store.ts";

const peer = (version: 3 | 4 | 5): OutboundPeer => ({ version, outboundAlias: () => undefined });
const message: Message = {
  offset: 7,
  topic: "plant/line1/temp",
  payload: new TextEncoder().encode("21.5"),
  qos: 1,
  retain: false,
  receivedAt: 0,
  origin: "p",
  properties: { contentType: "text/plain", userProperties: { k: "v" } },
};
const outbound = (qos: 0 | 1, packetId: number, subscriptionIds?: number[]): Outbound => ({
  message,
  qos,
  retain: false,
  subscriptionIds,
  packetId,
  phase: "queued",
  shareKey: undefined,
});

function decode(bytes: Uint8Array, version: 4 | 5): mqttPacket.IPublishPacket {
  const parser = mqttPacket.parser({ protocolVersion: version });
  let out: mqttPacket.IPublishPacket | undefined;
  parser.on("packet", (p) => (out = p as mqttPacket.IPublishPacket));
  parser.parse(Buffer.from(bytes));
  return out!;
}

describe("outbound encoding during fan-out", () => {
  test("QoS 0 subscribers of the same form share one encoding (the same bytes object)", () => {
    const cache: EncodeCache = new Map();
    const first = encodeOutbound(peer(4), outbound(0, 0), false, 0, cache);
    for (let i = 0; i < 100; i++) expect(encodeOutbound(peer(4), outbound(0, 0), false, 0, cache)).toBe(first);
    expect(cache.size).toBe(1);
  });

  test("QoS 1 copies reuse one encoding with only the packet id patched", () => {
    const cache: EncodeCache = new Map();
    const ids = [1, 2, 300, 65535];
    const decoded = ids.map((id) => decode(encodeOutbound(peer(5), outbound(1, id), false, 0, cache), 5));
    expect(cache.size).toBe(1);
    expect(decoded.map((p) => p.messageId)).toEqual(ids);
    for (const p of decoded) {
      expect(p.topic).toBe("plant/line1/temp");
      expect(p.payload.toString()).toBe("21.5");
      expect(p.properties?.contentType).toBe("text/plain");
    }
  });

  test("different forms (protocol version, subscription identifiers) get their own encodings", () => {
    const cache: EncodeCache = new Map();
    encodeOutbound(peer(4), outbound(1, 1), false, 0, cache);
    encodeOutbound(peer(5), outbound(1, 1), false, 0, cache);
    const withId = decode(encodeOutbound(peer(5), outbound(1, 2, [9]), false, 0, cache), 5);
    expect(cache.size).toBe(3);
    expect(withId.properties?.subscriptionIdentifier).toBe(9);
  });

  test("a re-send sets DUP on its own copy, not on the shared encoding", () => {
    const cache: EncodeCache = new Map();
    const dup = decode(encodeOutbound(peer(4), outbound(1, 5), true, 0, cache), 4);
    const fresh = decode(encodeOutbound(peer(4), outbound(1, 6), false, 0, cache), 4);
    expect(dup.dup).toBe(true);
    expect(fresh.dup).toBe(false);
  });
});

test("patched QoS 1 copies do not share memory: earlier copies keep their own packet id", () => {
  const cache: EncodeCache = new Map();
  const copies = [1, 2, 3].map((id) => encodeOutbound(peer(4), outbound(1, id), false, 0, cache));
  expect(copies.map((b) => decode(b, 4).messageId)).toEqual([1, 2, 3]);
});
