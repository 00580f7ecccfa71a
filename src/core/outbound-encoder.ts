import { encode, publishPacketIdOffset, withPacketId } from "../mqtt/codec.ts";
import type { Packet, PublishPacket } from "../mqtt/packets.ts";
import type { Message } from "../store/store.ts";
import type { Outbound } from "./session.ts";

/** What outbound encoding needs to know about the receiving connection. */
export interface OutboundPeer {
  readonly version: 3 | 4 | 5;
  outboundAlias(topic: string): { alias: number; known: boolean } | undefined;
}

/**
 * Encodings of one message made during one fan-out, keyed by everything that changes
 * the bytes except the packet id. Subscribers that receive the same form share one
 * encoding; QoS>0 copies get their packet id patched in, not re-encoded.
 */
export type EncodeCache = Map<string | number, { bytes: Uint8Array; idOffset: number }>;

export function encodeOutbound(
  peer: OutboundPeer,
  o: Outbound,
  dup: boolean,
  now: number,
  cache?: EncodeCache,
): Uint8Array {
  const m = o.message;
  const v5 = peer.version === 5;
  // Message Expiry Interval is sent as the time left [MQTT-3.3.2-6].
  const expiry = v5 && m.expiresAt !== undefined ? Math.max(0, Math.ceil((m.expiresAt - now) / 1000)) : undefined;
  const alias = v5 ? peer.outboundAlias(m.topic) : undefined;

  if (alias === undefined && cache) {
    // The common form (no subscription ids, no expiry) gets a small numeric key: building a
    // string per subscriber showed up as a fifth of fan-out time in profiles.
    const key = o.subscriptionIds === undefined && expiry === undefined
      ? peer.version * 8 + o.qos * 2 + (o.retain ? 1 : 0)
      : `${peer.version}|${o.qos}|${o.retain ? 1 : 0}|${o.subscriptionIds?.join(",") ?? ""}|${expiry ?? ""}`;
    let hit = cache.get(key);
    if (!hit) {
      const bytes = encode(buildPublish(m, o, v5, expiry, undefined, o.qos > 0 ? 1 : 0, false), peer.version);
      hit = { bytes, idOffset: o.qos > 0 ? publishPacketIdOffset(bytes) : -1 };
      cache.set(key, hit);
    }
    if (o.qos === 0) return hit.bytes;
    return withPacketId(hit.bytes, hit.idOffset, o.packetId, dup);
  }
  return encode(buildPublish(m, o, v5, expiry, alias, o.packetId, dup), peer.version);
}

function buildPublish(
  m: Message,
  o: Outbound,
  v5: boolean,
  expiry: number | undefined,
  alias: { alias: number; known: boolean } | undefined,
  packetId: number,
  dup: boolean,
): Packet {
  const packet: PublishPacket = {
    cmd: "publish",
    topic: alias?.known ? "" : m.topic,
    // The codec turns Uint8Array fields into Buffers; the core stays free of Node types.
    payload: m.payload as PublishPacket["payload"],
    qos: o.qos,
    retain: o.retain,
    dup: dup && o.qos > 0,
  };
  if (o.qos > 0) packet.messageId = packetId;
  if (v5) {
    const props: NonNullable<PublishPacket["properties"]> = {};
    const mp = m.properties;
    if (mp) {
      if (mp.payloadFormatIndicator !== undefined) props.payloadFormatIndicator = mp.payloadFormatIndicator;
      if (mp.contentType !== undefined) props.contentType = mp.contentType;
      if (mp.responseTopic !== undefined) props.responseTopic = mp.responseTopic;
      if (mp.correlationData !== undefined) {
        props.correlationData = mp.correlationData as NonNullable<typeof props.correlationData>;
      }
      if (mp.userProperties !== undefined) props.userProperties = mp.userProperties;
    }
    if (expiry !== undefined) props.messageExpiryInterval = expiry;
    if (o.subscriptionIds && o.subscriptionIds.length > 0) {
      props.subscriptionIdentifier = o.subscriptionIds.length === 1 ? o.subscriptionIds[0]! : o.subscriptionIds;
    }
    if (alias) props.topicAlias = alias.alias;
    if (Object.keys(props).length > 0) packet.properties = props;
  }
  return packet;
}
