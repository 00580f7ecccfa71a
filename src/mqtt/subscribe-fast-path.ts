/**
 * SUBSCRIBE decoded by hand, under fast-path.ts's contract: the packet object is the one
 * mqtt-packet 9.0.2 makes (same class, fields, key order, values), and anything unusual
 * (v5 properties, a filter that is empty, runs past the packet or is not acceptable UTF-8,
 * bad option bits, no filter at all) returns undefined, for mqtt-packet and
 * validate-packet.ts to decode and refuse as before. What is decoded here passes
 * validate-packet.ts by construction.
 *
 * Why: a persistent session that subscribes to thousands of filters (issue 13's 20,000
 * SUBSCRIBEs) paid, per SUBSCRIBE, mqtt-packet's streaming parser (a BufferList, its
 * slices, debug() calls, a property object) and a Buffer view of the frame: garbage that
 * made most of the broker's RSS growth while the SUBSCRIBEs arrived.
 */
import type { Packet } from "./packets.ts";
import { utf8Problem } from "./utf8.ts";

/** The fields of mqtt-packet's packet object a SUBSCRIBE has. */
interface SubscribeObject {
  cmd: string | null;
  retain: boolean;
  qos: number;
  dup: boolean;
  length: number;
  subscriptions?: Array<{ topic: string; qos: number; nl?: boolean; rap?: boolean; rh?: number }>;
  messageId?: number;
}

/**
 * Decode the SUBSCRIBE whose variable header starts at `body` (Remaining Length `rem`),
 * or undefined. `make(first, rem)` makes mqtt-packet's packet object with the fixed
 * header's fields set. `bridgeMode`: the CONNECT had the bridge bit, for which mqtt-packet
 * adds 3.1.1 subscriptions the v5 options No Local, Retain As Published and Retain Handling 0.
 */
export function decodeSubscribe(
  buf: Buffer,
  first: number,
  body: number,
  rem: number,
  version: number,
  bridgeMode: boolean,
  make: (cmd: string, first: number, rem: number) => SubscribeObject,
): Packet | undefined {
  const end = body + rem;
  const v5 = version === 5;
  let pos = body + 2; // past the Packet Identifier
  if (v5) {
    // Property Length 0, one byte (spec 3.8.2.1): anything else is mqtt-packet's.
    if (pos >= end || buf[pos] !== 0) return undefined;
    pos++;
  }
  if (pos >= end) return undefined; // no filter: a protocol error [MQTT-3.8.3-2], left to the slow path
  const subscriptions: NonNullable<SubscribeObject["subscriptions"]> = [];
  while (pos < end) {
    if (pos + 2 > end) return undefined;
    const length = (buf[pos]! << 8) | buf[pos + 1]!;
    const start = pos + 2;
    const stop = start + length;
    // An empty filter, or one without its options byte, is refused (or answered 0x8F) on the slow path.
    if (length === 0 || stop >= end) return undefined;
    for (let i = start; i < stop; i++) {
      const b = buf[i]!;
      if (b === 0 || b >= 0x80) {
        if (utf8Problem(buf, start, stop) !== undefined) return undefined;
        break;
      }
    }
    const options = buf[stop]!;
    // Reserved bits (spec 3.8.3.1: bits 7-6 in v5, 7-2 before), QoS 3 and Retain Handling 3
    // are mqtt-packet's errors.
    if ((options & (v5 ? 0xc0 : 0xfc)) !== 0 || (options & 0x03) === 3 || ((options >> 4) & 0x03) === 3) {
      return undefined;
    }
    const topic = buf.toString("utf8", start, stop);
    const qos = options & 0x03;
    if (v5) {
      subscriptions.push({
        topic,
        qos,
        nl: (options & 0x04) !== 0,
        rap: (options & 0x08) !== 0,
        rh: (options >> 4) & 3,
      });
    } else if (bridgeMode) subscriptions.push({ topic, qos, rh: 0, rap: true, nl: true });
    else subscriptions.push({ topic, qos });
    pos = stop + 1;
  }
  const p = make("subscribe", first, rem);
  // In the order mqtt-packet sets them (_parseSubscribe), which fixes the key order.
  p.subscriptions = subscriptions;
  p.messageId = (buf[body]! << 8) | buf[body + 1]!;
  return p as unknown as Packet;
}

/**
 * A SUBACK with one Reason Code and no properties, as mqtt-packet.generate writes
 * `{ cmd: "suback", messageId, granted: [code] }` (and fast-path.ts's encodeFast): the
 * answer to a one-filter SUBSCRIBE without a packet object and an array for it.
 */
export function encodeSuback(messageId: number, code: number, version: number): Uint8Array {
  return version === 5
    ? Uint8Array.of(0x90, 4, messageId >> 8, messageId & 0xff, 0, code)
    : Uint8Array.of(0x90, 3, messageId >> 8, messageId & 0xff, code);
}
