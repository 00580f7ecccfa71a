import { encode, publishPacketIdOffset, withPacketId } from "../mqtt/codec.ts";
import type { Packet, PublishPacket } from "../mqtt/packets.ts";
import type { Message } from "../store/store.ts";
import type { Outbound } from "./session.ts";

/** What outbound encoding needs to know about the receiving connection. */
export interface OutboundPeer {
  readonly version: 3 | 4 | 5;
  outboundAlias(topic: string): { alias: number; known: boolean } | undefined;
}

/** One cached encoding: the bytes, and where the packet id sits in them (-1 for QoS 0). */
export interface Encoded {
  bytes: Uint8Array;
  idOffset: number;
  /**
   * A QoS>0 encoding was handed out itself, with its first user's packet id, and must not
   * change again: every later user gets a patched copy.
   */
  taken?: boolean;
}

/**
 * Encodings of one message, keyed by everything that changes the bytes except the
 * packet id. Subscribers that receive the same form share one encoding; QoS>0 copies
 * get their packet id patched in, not re-encoded. A Map fits; the broker uses
 * `MessageEncodings`, which is cheaper for the usual single form.
 */
export interface EncodeCache {
  get(key: string | number): Encoded | undefined;
  set(key: string | number, value: Encoded): unknown;
  readonly size: number;
}

/** Forms with a time-dependent key (expiry) past this many are encoded without caching. */
const MAX_FORMS = 8;

/**
 * The encodings of one message, shared by every delivery of it, including those sent
 * later from a queue. One form (same protocol version, QoS and RETAIN for all subscribers)
 * is the common case, so it lives in two fields; a Map is made only for a second form.
 * A Map per message was a measurable share of the allocations per message.
 */
export class MessageEncodings implements EncodeCache {
  #key: string | number | undefined;
  #value: Encoded | undefined;
  #more: Map<string | number, Encoded> | undefined;

  get size(): number {
    return (this.#value === undefined ? 0 : 1) + (this.#more?.size ?? 0);
  }

  get(key: string | number): Encoded | undefined {
    if (key === this.#key) return this.#value;
    return this.#more?.get(key);
  }

  set(key: string | number, value: Encoded): this {
    if (this.#value === undefined || key === this.#key) {
      this.#key = key;
      this.#value = value;
    } else (this.#more ??= new Map()).set(key, value);
    return this;
  }
}

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
      hit = { bytes, idOffset: o.qos > 0 ? publishPacketIdOffset(bytes) : -1, taken: false };
      // A cache that outlives one fan-out (queued deliveries keep it) sees the expiry key
      // change every second; past a few forms, encode without keeping the result.
      if (typeof key === "number" || cache.size < MAX_FORMS) cache.set(key, hit);
    }
    if (o.qos === 0) return hit.bytes;
    if (!hit.taken && !dup) {
      // The first user takes the encoding itself, so a message sent to one subscriber (the
      // usual case) is not copied. Later users copy it; none writes into it again.
      hit.taken = true;
      hit.bytes[hit.idOffset] = o.packetId >> 8;
      hit.bytes[hit.idOffset + 1] = o.packetId & 0xff;
      return hit.bytes;
    }
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
