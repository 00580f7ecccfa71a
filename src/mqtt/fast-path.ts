/**
 * Hand-written decoding and encoding of the packets that dominate a QoS 0/1 message
 * flow: PUBLISH, PUBACK/PUBREC/PUBREL/PUBCOMP and PINGREQ/PINGRESP (and SUBSCRIBE, in
 * subscribe-fast-path.ts). Profiles of the
 * broker under fan-in QoS 1 load spent 10-12% of its CPU in mqtt-packet's streaming
 * parser (a BufferList per packet, its slicing and debug() calls) and 4-8% in its
 * generator (one small Buffer per field, then a concat) for just these packets.
 *
 * The contract is equivalence, not a second interpretation of the protocol: every
 * packet decoded here is the object mqtt-packet 9.0.2 would have produced (same class,
 * fields, values and types), every packet encoded here is byte for byte what
 * mqtt-packet.generate would have produced. Anything unusual (properties, malformed or
 * truncated fields, a topic that is not acceptable UTF-8, values mqtt-packet would refuse
 * or mangle) is not handled here: the functions return undefined and the caller falls
 * back to mqtt-packet and validate-packet.ts, so their behaviour, error messages included,
 * stays the reference. What is decoded here passes validate-packet.ts by construction,
 * which is why the hot path costs no property check.
 * test/unit/codec-fast-path.test.ts checks the equivalence.
 */
import MqttPacketClass from "mqtt-packet/packet.js";
import type { Packet, ProtocolVersion } from "./packets.ts";
import { utf8Problem } from "./utf8.ts";
import { unpinnedBytes } from "./unpinned-bytes.ts";
import { decodeSubscribe } from "./subscribe-fast-path.ts";

/** The fields of mqtt-packet's packet object that the decoder sets. */
interface MqttPacketObject {
  cmd: string | null;
  retain: boolean;
  qos: number;
  dup: boolean;
  length: number;
  topic: string | null;
  payload: Buffer | null;
  messageId?: number;
  reasonCode?: number;
}

/**
 * The class, typed here rather than only in mqtt-packet-internals.d.ts: Deno's type
 * checker resolves this import through the package's own typings and does not see
 * that ambient declaration.
 */
const MqttPacket = MqttPacketClass as unknown as new () => MqttPacketObject;

/** PUBACK/PUBREC reason codes mqtt-packet accepts (spec 3.4.2.1 / 3.5.2.1); others fall back to its error. */
const PUBACK_PUBREC_CODES = new Set([0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99]);
/** PUBREL/PUBCOMP reason codes mqtt-packet accepts (spec 3.6.2.1 / 3.7.2.1). */
const PUBREL_PUBCOMP_CODES = new Set([0x00, 0x92]);

const ACK_CMDS = ["puback", "pubrec", "pubrel", "pubcomp"] as const;

/** Largest Remaining Length MQTT can express (spec 1.5.5). */
const MAX_REMAINING_LENGTH = 268_435_455;

/**
 * Decode one whole, already framed packet by hand, or return undefined to have
 * mqtt-packet decode it. `first` is the fixed header's first byte (its flags already
 * checked by the caller), `body` the offset of the variable header, `rem` the
 * Remaining Length, `version` the protocol version mqtt-packet's parser holds now.
 *
 * The payload of a PUBLISH is a view of `buf` when it makes up at least half of the
 * memory `buf` is a view of, else a copy (PacketReader does the same to mqtt-packet's
 * payloads, which are views too): see `unpinnedBytes` in codec.ts. Without `copyPayload`
 * it is always a view, and the caller copies what it keeps.
 */
export function decodeFast(
  buf: Buffer,
  first: number,
  body: number,
  rem: number,
  version: number,
  copyPayload = true,
  bridgeMode = false,
): Packet | undefined {
  switch (first >> 4) {
    case 3:
      return decodePublish(buf, first, body, rem, version, copyPayload);
    case 8:
      return decodeSubscribe(buf, first, body, rem, version, bridgeMode, newPacket);
    case 4:
    case 5:
    case 6:
    case 7:
      return decodeAck(buf, first, body, rem, version);
    case 12:
      // PINGREQ has no variable header or payload (spec 3.12); a body, which
      // mqtt-packet would skip, is left to it.
      if (rem !== 0) return undefined;
      // Always the same object: nothing reads a PINGREQ but its type, and a flood of them
      // then allocates nothing per packet.
      return PINGREQ;
    default:
      return undefined;
  }
}

/** The one PINGREQ packet object (fixed header C0 00), as mqtt-packet would make it. Never written to. */
const PINGREQ = newPacket("pingreq", 0xc0, 0) as Packet;

function newPacket(cmd: string, first: number, rem: number): MqttPacketObject {
  // Field by field as mqtt-packet's _parseHeader and _parseLength set them.
  const p = new MqttPacket();
  p.cmd = cmd;
  p.retain = (first & 0x01) !== 0;
  p.qos = (first >> 1) & 0x03;
  p.dup = (first & 0x08) !== 0;
  p.length = rem;
  return p;
}

function decodePublish(
  buf: Buffer,
  first: number,
  body: number,
  rem: number,
  version: number,
  copyPayload: boolean,
): Packet | undefined {
  const end = body + rem;
  // Topic Name: a two-byte length then UTF-8 (spec 3.3.2.1). One that does not fit in
  // the packet is malformed; mqtt-packet says so ("Cannot parse topic").
  if (rem < 2) return undefined;
  const topicLength = (buf[body]! << 8) | buf[body + 1]!;
  let pos = body + 2;
  if (pos + topicLength > end) return undefined;
  // Decoded as mqtt-packet does (Buffer#toString). A topic that is not acceptable UTF-8
  // [MQTT-1.5.4-1] [MQTT-1.5.4-2] is left to mqtt-packet and validate-packet.ts, which
  // refuse it; wildcards are the core's to refuse [MQTT-3.3.2-2].
  const topic = topicLength === 0 ? "" : topicString(buf, pos, topicLength);
  if (topic === undefined) return undefined;
  pos += topicLength;
  const qos = (first >> 1) & 0x03;
  let messageId = 0;
  if (qos > 0) {
    // The Packet Identifier is present only at QoS 1 and 2 (spec 3.3.2.2). Missing:
    // mqtt-packet's result (messageId -1) is refused by PacketReader.
    if (pos + 2 > end) return undefined;
    messageId = (buf[pos]! << 8) | buf[pos + 1]!;
    pos += 2;
  }
  if (version === 5) {
    // Only a Property Length of zero (a single 0x00) is handled here; properties,
    // and a missing Property Length, are mqtt-packet's.
    if (pos >= end || buf[pos] !== 0) return undefined;
    pos++;
  }
  const p = newPacket("publish", first, rem);
  p.topic = topic;
  // mqtt-packet adds messageId after topic and before payload, only at QoS>0; the
  // constructor already created payload, so the key order comes out the same.
  if (qos > 0) p.messageId = messageId;
  // An empty payload is a fresh zero-length Buffer in mqtt-packet (BufferList#slice).
  // Without `copyPayload` the caller copies what it keeps (PacketReaderOptions.copyPayloads).
  p.payload = pos >= end
    ? Buffer.alloc(0)
    : copyPayload
    ? unpinnedBytes(buf.subarray(pos, end), buf.buffer.byteLength)
    : buf.subarray(pos, end);
  return p as Packet;
}

/** The bytes and string of the last topic decoded (see topicString). */
let lastTopicBytes = new Uint8Array(0);
let lastTopic = "";
/** Topics longer than this are decoded every time rather than remembered. */
const TOPIC_MEMO_MAX = 256;

/**
 * `buf.toString("utf8", pos, pos + length)`, but a topic whose bytes equal the last
 * one's gets the string made then: publishers send the same topic again and again, and
 * a fresh string per message was a measurable part of what the event loop allocates.
 * Equal bytes decode to an equal string, so the result is the same. Undefined when the
 * bytes are not acceptable UTF-8 (checked once per new topic: the remembered one passed).
 */
function topicString(buf: Buffer, pos: number, length: number): string | undefined {
  const last = lastTopicBytes;
  if (last.byteLength === length) {
    let i = 0;
    while (i < length && buf[pos + i] === last[i]) i++;
    if (i === length) return lastTopic;
  }
  // ASCII without U+0000 is the common case; anything else gets the full UTF-8 check.
  for (let i = pos, end = pos + length; i < end; i++) {
    const b = buf[i]!;
    if (b === 0 || b >= 0x80) {
      if (utf8Problem(buf, pos, end) !== undefined) return undefined;
      break;
    }
  }
  const topic = buf.toString("utf8", pos, pos + length);
  if (length <= TOPIC_MEMO_MAX) {
    if (last.byteLength === length) last.set(buf.subarray(pos, pos + length));
    // A copy (Buffer#slice would be a view of the socket's chunk, which may be reused).
    else lastTopicBytes = new Uint8Array(buf.subarray(pos, pos + length));
    lastTopic = topic;
  }
  return topic;
}

function decodeAck(buf: Buffer, first: number, body: number, rem: number, version: number): Packet | undefined {
  const cmd = ACK_CMDS[(first >> 4) - 4]!;
  if (rem === 2) {
    const p = newPacket(cmd, first, rem);
    p.messageId = (buf[body]! << 8) | buf[body + 1]!;
    // v5: a Remaining Length of 2 means Reason Code 0x00, Success (spec 3.4.2.1).
    if (version === 5) p.reasonCode = 0;
    return p as Packet;
  }
  // v5, Remaining Length 3: a Reason Code and no Property Length (spec 3.4.2.2.1); 4 with
  // a last byte of 0: a Reason Code and an empty property list, which is how generate
  // writes every code but Success. Properties, a missing packet id, and v3/v4 with
  // extra bytes are mqtt-packet's.
  if (version !== 5 || (rem !== 3 && (rem !== 4 || buf[body + 3] !== 0))) return undefined;
  const reasonCode = buf[body + 2]!;
  const valid = cmd === "puback" || cmd === "pubrec" ? PUBACK_PUBREC_CODES : PUBREL_PUBCOMP_CODES;
  if (!valid.has(reasonCode)) return undefined; // mqtt-packet refuses it with its own message
  const p = newPacket(cmd, first, rem);
  p.messageId = (buf[body]! << 8) | buf[body + 1]!;
  p.reasonCode = reasonCode;
  return p as Packet;
}

// ---- encoding -------------------------------------------------------------------------

/**
 * Encode `packet` by hand when it is one of the covered forms, or return undefined to
 * have mqtt-packet.generate encode it. The result is a fresh Buffer, as generate's is.
 */
export function encodeFast(packet: Packet, version: ProtocolVersion): Buffer | undefined {
  switch (packet.cmd) {
    case "publish":
      return encodePublish(packet, version);
    case "puback":
    case "pubrec":
    case "pubrel":
    case "pubcomp":
      return encodeAck(packet, version);
    case "pingresp": {
      const out = Buffer.allocUnsafe(2);
      out[0] = 0xd0;
      out[1] = 0;
      return out;
    }
    // Encoded here so that a broker whose clients speak 3.1.1 never loads mqtt-packet's
    // generator (see mqtt-packet-lazy.ts); v5 forms only without properties.
    case "connack":
      return encodeConnack(packet, version);
    case "suback":
    case "unsuback":
      return encodeSubackOrUnsuback(packet, version);
    default:
      return undefined;
  }
}

type ConnackIn = Extract<Packet, { cmd: "connack" }>;
type SubackIn = Extract<Packet, { cmd: "suback" | "unsuback" }>;

/** A byte, as `Buffer.from([n])` writes it only for these. */
function isByte(n: unknown): n is number {
  return typeof n === "number" && Number.isInteger(n) && n >= 0 && n <= 0xff;
}

function encodeConnack(packet: ConnackIn, version: ProtocolVersion): Buffer | undefined {
  // generate takes the Reason Code in v5, the Return Code before (spec 3.2.2.3 / 3.2.2.2).
  const rc: unknown = version === 5 ? packet.reasonCode : packet.returnCode;
  if (!isByte(rc)) return undefined;
  if (version === 5 && !noProperties(packet.properties)) return undefined;
  const out = Buffer.allocUnsafe(version === 5 ? 5 : 4);
  out[0] = 0x20;
  out[1] = version === 5 ? 3 : 2;
  out[2] = packet.sessionPresent ? 1 : 0; // Session Present (spec 3.2.2.1.1)
  out[3] = rc;
  if (version === 5) out[4] = 0; // Property Length 0
  return out;
}

function encodeSubackOrUnsuback(packet: SubackIn, version: ProtocolVersion): Buffer | undefined {
  const messageId: unknown = packet.messageId;
  if (!isUint16(messageId)) return undefined;
  const suback = packet.cmd === "suback";
  // generate writes an UNSUBACK with DUP set with another header; the core never asks for it.
  if (!suback && (packet as { dup?: unknown }).dup) return undefined;
  if (version === 5 && !noProperties((packet as { properties?: unknown }).properties)) return undefined;
  // SUBACK: a Reason Code per filter, always; UNSUBACK: only in v5 (spec 3.9.3, 3.11.3).
  const granted: unknown = (packet as { granted?: unknown }).granted;
  const codes = suback || version === 5 ? granted : [];
  if (!Array.isArray(codes) || ((suback || version === 5) && codes.length === 0)) return undefined;
  for (const code of codes) if (!isByte(code)) return undefined;
  const rem = 2 + (version === 5 ? 1 : 0) + codes.length;
  const out = Buffer.allocUnsafe(1 + varIntSize(rem) + rem);
  out[0] = suback ? 0x90 : 0xb0;
  let pos = writeVarInt(out, 1, rem);
  out[pos++] = messageId >> 8;
  out[pos++] = messageId & 0xff;
  if (version === 5) out[pos++] = 0; // Property Length 0
  for (const code of codes) out[pos++] = code as number;
  return out;
}

type PublishIn = Extract<Packet, { cmd: "publish" }>;
type AckIn = Extract<Packet, { cmd: "puback" | "pubrec" | "pubrel" | "pubcomp" }>;

function isUint16(n: unknown): n is number {
  // generate() looks ids up in a table of 65536 two-byte Buffers; anything else
  // (negative, fractional, too large) produces broken output there, so is left to it.
  return typeof n === "number" && Number.isInteger(n) && n >= 0 && n <= 0xffff;
}

/**
 * True when mqtt-packet would write a v5 Property Length of 0 and nothing else for
 * `properties`: absent, or a plain object all of whose values are undefined.
 */
function noProperties(properties: unknown): boolean {
  if (properties === undefined) return true;
  if (typeof properties !== "object" || properties === null || Array.isArray(properties)) return false;
  const record = properties as Record<string, unknown>;
  for (const key in record) if (record[key] !== undefined) return false;
  return true;
}

function encodePublish(packet: PublishIn, version: ProtocolVersion): Buffer | undefined {
  const topic: unknown = packet.topic;
  if (typeof topic !== "string") return undefined;
  const qos: unknown = packet.qos || 0;
  if (qos !== 0 && qos !== 1 && qos !== 2) return undefined;
  const messageId: unknown = packet.messageId;
  if (qos > 0 && !isUint16(messageId)) return undefined;
  // v5: no properties (Property Length 0), or ones publishPropertiesLength can write.
  let propsLength = 0;
  let props: Record<string, unknown> | undefined;
  if (version === 5 && !noProperties(packet.properties)) {
    const given: unknown = packet.properties;
    if (typeof given !== "object" || given === null || Array.isArray(given)) return undefined;
    props = given as Record<string, unknown>;
    propsLength = publishPropertiesLength(props);
    if (propsLength < 0) return undefined;
  }

  // The payload as generate takes it: falsy is empty, a string is UTF-8, bytes as they are.
  const raw: unknown = packet.payload;
  let payload: Uint8Array | undefined;
  let payloadText: string | undefined;
  let payloadLength = 0;
  if (!raw) payloadLength = 0;
  else if (raw instanceof Uint8Array) {
    payload = raw;
    payloadLength = raw.byteLength;
  } else if (typeof raw === "string") {
    payloadText = raw;
    payloadLength = Buffer.byteLength(raw, "utf8");
  } else return undefined;

  // Topics are nearly always ASCII: then its length in bytes is its length in UTF-16
  // code units and it can be copied byte by byte without a call into native code.
  let ascii = true;
  for (let i = 0; i < topic.length; i++) {
    if (topic.charCodeAt(i) > 0x7f) {
      ascii = false;
      break;
    }
  }
  const topicLength = ascii ? topic.length : Buffer.byteLength(topic, "utf8");
  if (topicLength > 0xffff) return undefined; // no two-byte length for it; generate's output is broken

  const rem = 2 + topicLength + (qos > 0 ? 2 : 0) + (version === 5 ? varIntSize(propsLength) + propsLength : 0) +
    payloadLength;
  if (rem > MAX_REMAINING_LENGTH) return undefined; // generate throws
  const out = Buffer.allocUnsafe(1 + varIntSize(rem) + rem);
  // Fixed header (spec 3.3.1): DUP, QoS and RETAIN as given. generate sets DUP even at
  // QoS 0 if asked; the core never asks [MQTT-3.3.1-2], and the bytes must match anyway.
  out[0] = 0x30 | (packet.dup ? 0x08 : 0) | (qos << 1) | (packet.retain ? 0x01 : 0);
  let pos = writeVarInt(out, 1, rem);
  out[pos++] = topicLength >> 8;
  out[pos++] = topicLength & 0xff;
  if (ascii) {
    for (let i = 0; i < topic.length; i++) out[pos + i] = topic.charCodeAt(i);
  } else {
    out.write(topic, pos, topicLength, "utf8");
  }
  pos += topicLength;
  if (qos > 0) {
    const id = messageId as number;
    out[pos++] = id >> 8;
    out[pos++] = id & 0xff;
  }
  if (version === 5) {
    pos = writeVarInt(out, pos, propsLength); // Property Length (spec 3.3.2.3.1)
    if (props !== undefined) pos = writePublishProperties(out, pos, props);
  }
  if (payload) out.set(payload, pos);
  else if (payloadText !== undefined) out.write(payloadText, pos, payloadLength, "utf8");
  return out;
}

/**
 * The bytes of `props` as PUBLISH properties (spec 3.3.2.3), or -1 when the fast path leaves
 * them to mqtt-packet: a name it does not write here, a value of a type or range mqtt-packet
 * refuses or converts, an empty User Property set. Written in the order the object lists
 * them, as mqtt-packet does, so the bytes match its own.
 *
 * Why (issue 14): every PUBLISH the uplink forwards carries Ferry's User Properties, and a
 * v5 subscriber's deliveries carry Subscription Identifiers and the publisher's properties;
 * mqtt-packet writes each field through a stream (and a debug call per field), which was a
 * quarter of the uplink's CPU.
 */
function publishPropertiesLength(props: Record<string, unknown>): number {
  let length = 0;
  for (const name in props) {
    const value = props[name];
    if (value === undefined) continue;
    if (Array.isArray(value)) {
      // Repeated only where the spec allows it on a PUBLISH (spec 3.3.2.3.8).
      if (name !== "subscriptionIdentifier" || value.length === 0) return -1;
      for (const v of value) {
        const n = propertyLength(name, v);
        if (n < 0) return -1;
        length += n;
      }
    } else {
      const n = propertyLength(name, value);
      if (n < 0) return -1;
      length += n;
    }
  }
  return length;
}

function propertyLength(name: string, value: unknown): number {
  switch (name) {
    case "payloadFormatIndicator":
      return typeof value === "boolean" ? 2 : -1;
    case "messageExpiryInterval":
      return isUint(value, 0xffffffff) ? 5 : -1;
    case "topicAlias":
      return isUint(value, 0xffff) ? 3 : -1;
    case "subscriptionIdentifier":
      return isUint(value, 0x0fffffff) ? 1 + varIntSize(value) : -1;
    case "contentType":
    case "responseTopic":
      return typeof value === "string" ? stringLength(value) : -1;
    case "correlationData":
      if (value instanceof Uint8Array) return value.byteLength <= 0xffff ? 3 + value.byteLength : -1;
      return typeof value === "string" ? stringLength(value) : -1;
    case "userProperties":
      return userPropertiesLength(value);
    default:
      return -1;
  }
}

function isUint(n: unknown, max: number): n is number {
  return typeof n === "number" && Number.isInteger(n) && n >= 0 && n <= max;
}

/** Identifier, two length bytes and the UTF-8 bytes of `s`; -1 past a two-byte length. */
function stringLength(s: string): number {
  const n = utf8Length(s);
  return n <= 0xffff ? 3 + n : -1;
}

function userPropertiesLength(value: unknown): number {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return -1;
  let length = 0;
  const pairs = value as Record<string, unknown>;
  for (const key of Object.getOwnPropertyNames(pairs)) {
    const v = pairs[key];
    const keyLength = utf8Length(key);
    if (keyLength > 0xffff) return -1;
    if (typeof v === "string") {
      const n = utf8Length(v);
      if (n > 0xffff) return -1;
      length += 5 + keyLength + n;
    } else if (Array.isArray(v)) {
      for (const item of v) {
        if (typeof item !== "string") return -1;
        const n = utf8Length(item);
        if (n > 0xffff) return -1;
        length += 5 + keyLength + n;
      }
    } else return -1;
  }
  // mqtt-packet refuses a User Property set that writes nothing.
  return length > 0 ? length : -1;
}

/** Writes what publishPropertiesLength measured, in the same order; returns the offset after it. */
function writePublishProperties(out: Buffer, pos: number, props: Record<string, unknown>): number {
  for (const name in props) {
    const value = props[name];
    if (value === undefined) continue;
    if (Array.isArray(value)) {
      for (const v of value) pos = writeProperty(out, pos, name, v);
    } else pos = writeProperty(out, pos, name, value);
  }
  return pos;
}

function writeProperty(out: Buffer, pos: number, name: string, value: unknown): number {
  switch (name) {
    case "payloadFormatIndicator":
      out[pos++] = 0x01;
      out[pos++] = value ? 1 : 0;
      return pos;
    case "messageExpiryInterval":
      out[pos++] = 0x02;
      out.writeUInt32BE(value as number, pos);
      return pos + 4;
    case "contentType":
      out[pos++] = 0x03;
      return writeString(out, pos, value as string);
    case "responseTopic":
      out[pos++] = 0x08;
      return writeString(out, pos, value as string);
    case "correlationData": {
      out[pos++] = 0x09;
      if (typeof value === "string") return writeString(out, pos, value);
      const bytes = value as Uint8Array;
      out[pos++] = bytes.byteLength >> 8;
      out[pos++] = bytes.byteLength & 0xff;
      out.set(bytes, pos);
      return pos + bytes.byteLength;
    }
    case "subscriptionIdentifier":
      out[pos++] = 0x0b;
      return writeVarInt(out, pos, value as number);
    case "topicAlias":
      out[pos++] = 0x23;
      out[pos++] = (value as number) >> 8;
      out[pos++] = (value as number) & 0xff;
      return pos;
    default: {
      // userProperties: the only other name publishPropertiesLength lets through.
      const pairs = value as Record<string, string | string[]>;
      for (const key of Object.getOwnPropertyNames(pairs)) {
        const v = pairs[key]!;
        if (typeof v === "string") pos = writeUserProperty(out, pos, key, v);
        else for (const item of v) pos = writeUserProperty(out, pos, key, item);
      }
      return pos;
    }
  }
}

/** One User Property (spec 3.3.2.3.7): identifier, then the name and value strings. */
function writeUserProperty(out: Buffer, pos: number, key: string, value: string): number {
  out[pos++] = 0x26;
  return writeString(out, writeString(out, pos, key), value);
}

/** UTF-8 length of `s`: counted in JavaScript while it is ASCII (most property strings are). */
function utf8Length(s: string): number {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return Buffer.byteLength(s, "utf8");
  return s.length;
}

/** A two-byte length and the UTF-8 bytes of `s` at `pos`; returns the offset after them. */
function writeString(out: Buffer, pos: number, s: string): number {
  const n = utf8Length(s);
  out[pos++] = n >> 8;
  out[pos++] = n & 0xff;
  if (n === s.length) {
    for (let i = 0; i < n; i++) out[pos + i] = s.charCodeAt(i);
  } else out.write(s, pos, n, "utf8");
  return pos + n;
}

function encodeAck(packet: AckIn, version: ProtocolVersion): Buffer | undefined {
  const messageId: unknown = packet.messageId;
  if (!isUint16(messageId)) return undefined;
  // generate throws on a PUBREL with DUP set (it has no header for it); leave that to it.
  if (packet.cmd === "pubrel" && (packet as { dup?: unknown }).dup) return undefined;
  // Fixed header (spec 2.1.3): PUBREL's flags are 0010 [MQTT-3.6.1-1], the others' 0000.
  const header = packet.cmd === "puback"
    ? 0x40
    : packet.cmd === "pubrec"
    ? 0x50
    : packet.cmd === "pubrel"
    ? 0x62
    : 0x70;
  let reasonCode = -1; // -1: no Reason Code byte
  if (version === 5) {
    if (packet.properties !== undefined) return undefined;
    const rc: unknown = packet.reasonCode;
    // generate omits Reason Code and Property Length only for 0x00 (spec 3.4.2.1); any
    // other value, undefined included, is written as a Reason Code followed by a
    // Property Length of 0 (so undefined comes out as 0x00 0x00).
    if (rc === undefined) reasonCode = 0;
    else if (rc !== 0) {
      if (typeof rc !== "number" || !Number.isInteger(rc) || rc < 0 || rc > 0xff) return undefined;
      reasonCode = rc;
    }
  }
  return writeAck(header, messageId, reasonCode);
}

/**
 * The bytes of a PUBACK/PUBREC/PUBREL/PUBCOMP without properties, from its fields alone:
 * what `encodeFast` gives for `{ cmd, messageId }` (v3/v4) or `{ cmd, messageId, reasonCode }`
 * (v5), without the packet object the broker would otherwise build for every
 * acknowledgement. Undefined for values `encodeFast` leaves to mqtt-packet.
 */
export function encodeAckFields(
  cmd: "puback" | "pubrec" | "pubrel" | "pubcomp",
  messageId: number,
  reasonCode: number,
  version: ProtocolVersion,
): Buffer | undefined {
  if (!isUint16(messageId)) return undefined;
  if (version !== 5) return writeAck(ACK_HEADERS[cmd], messageId, -1);
  if (reasonCode === 0) return writeAck(ACK_HEADERS[cmd], messageId, -1);
  if (!Number.isInteger(reasonCode) || reasonCode < 0 || reasonCode > 0xff) return undefined;
  return writeAck(ACK_HEADERS[cmd], messageId, reasonCode);
}

/** Fixed header bytes (spec 2.1.3): PUBREL's flags are 0010 [MQTT-3.6.1-1], the others' 0000. */
const ACK_HEADERS = { puback: 0x40, pubrec: 0x50, pubrel: 0x62, pubcomp: 0x70 } as const;

/** An acknowledgement: `reasonCode` -1 writes none (Remaining Length 2). */
function writeAck(header: number, messageId: number, reasonCode: number): Buffer {
  const out = Buffer.allocUnsafe(reasonCode === -1 ? 4 : 6);
  out[0] = header;
  out[2] = messageId >> 8;
  out[3] = messageId & 0xff;
  if (reasonCode === -1) {
    out[1] = 2;
  } else {
    out[1] = 4;
    out[4] = reasonCode;
    out[5] = 0;
  }
  return out;
}

/** Bytes of `n` as a Variable Byte Integer (spec 1.5.5). */
export function varIntSize(n: number): number {
  return n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : 4;
}

/** Write a Variable Byte Integer (spec 1.5.5) at `pos`; returns the offset after it. */
export function writeVarInt(out: Uint8Array, pos: number, n: number): number {
  do {
    let digit = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) digit |= 0x80;
    out[pos++] = digit;
  } while (n > 0);
  return pos;
}
