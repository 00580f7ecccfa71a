/**
 * Encoding for a peer that announced a Maximum Packet Size: Ferry must never send it a
 * larger packet [MQTT-3.1.2-24]. Optional properties are given up, in a stated order,
 * until the packet fits; a packet that cannot fit is not sent at all.
 */
import { encode } from "./codec.ts";
import type { Packet, ProtocolVersion } from "./packets.ts";

/**
 * CONNACK properties in the order they are given up (spec 3.2.2.3). First those that equal
 * the value a client assumes when they are absent, then those whose absence only makes a
 * client more careful or costs it a clear reason code later (no topic aliases, 0x95 for a
 * too-large packet, 0x93 past the Receive Maximum, 0x9A for RETAIN). Assigned Client
 * Identifier [MQTT-3.2.2-16] and Server Keep Alive [MQTT-3.2.2-21] change what the client
 * must do and are never dropped.
 */
export const CONNACK_OPTIONAL_PROPERTIES = [
  "wildcardSubscriptionAvailable",
  "subscriptionIdentifiersAvailable",
  "sharedSubscriptionAvailable",
  "reasonString",
  "userProperties",
  "topicAliasMaximum",
  "maximumPacketSize",
  "sessionExpiryInterval",
  "receiveMaximum",
  "retainAvailable",
] as const;

/** Properties of a DISCONNECT or an acknowledgement that may be left out [MQTT-3.4.2-2] [MQTT-3.14.2-3]. */
export const REASON_PROPERTIES = ["reasonString", "userProperties"] as const;

/**
 * `encode(packet, version)`, or with the `optional` properties removed one by one (in
 * order) until it is at most `maxSize` bytes; undefined when even that is too large.
 * The packet object is not changed.
 */
export function encodeWithin(
  packet: Packet,
  version: ProtocolVersion,
  maxSize: number,
  optional: readonly string[],
): Uint8Array | undefined {
  let bytes = encode(packet, version);
  if (bytes.byteLength <= maxSize) return bytes;
  const source = (packet as { properties?: Record<string, unknown> }).properties;
  if (source === undefined) return undefined;
  const properties = { ...source };
  const copy = { ...packet, properties } as Packet;
  for (const name of optional) {
    if (!(name in properties)) continue;
    delete properties[name];
    // An empty property set is written as a Property Length of 0, the smallest form.
    bytes = encode(copy, version);
    if (bytes.byteLength <= maxSize) return bytes;
  }
  return undefined;
}
