/**
 * The strict check of one whole client-to-server packet on its raw bytes, for every packet
 * mqtt-packet decodes (the fast path's packets need none: see fast-path.ts). mqtt-packet
 * stops reading where its fields end, so bytes after them, a field beyond the length its
 * flag allows, ill-formed UTF-8 (which it turns into U+FFFD) and a bad property block get
 * through it; this walks each field to the last byte and refuses them with the reason
 * code the spec gives. Runs after mqtt-packet's own parse, whose refusals come first.
 */
import { MqttError, RC } from "./reason-codes.ts";
import { utf8Problem } from "./utf8.ts";
import { checkProperties, WILL_PROPERTIES } from "./validate-properties.ts";

const NAMES = [
  "reserved type 0",
  "CONNECT",
  "CONNACK",
  "PUBLISH",
  "PUBACK",
  "PUBREC",
  "PUBREL",
  "PUBCOMP",
  "SUBSCRIBE",
  "SUBACK",
  "UNSUBSCRIBE",
  "UNSUBACK",
  "PINGREQ",
  "PINGRESP",
  "DISCONNECT",
  "AUTH",
];

function malformed(why: string): never {
  throw new MqttError(RC.MALFORMED_PACKET, `malformed packet: ${why}`);
}

/** A two-byte length and that many bytes (spec 1.5.6), ending before `end`; returns [start, next]. */
function lengthPrefixed(buf: Uint8Array, pos: number, end: number, what: string): [number, number] {
  if (pos + 2 > end) malformed(`${what} runs past the end of the packet`);
  const start = pos + 2;
  const next = start + ((buf[pos]! << 8) | buf[pos + 1]!);
  if (next > end) malformed(`${what} runs past the end of the packet`);
  return [start, next];
}

/** A UTF-8 Encoded String (spec 1.5.4) [MQTT-1.5.4-1] [MQTT-1.5.4-2]; returns [start, next]. */
function string(buf: Uint8Array, pos: number, end: number, what: string): [number, number] {
  const [start, next] = lengthPrefixed(buf, pos, end, what);
  const bad = utf8Problem(buf, start, next);
  if (bad) malformed(`${what}: ${bad}`);
  return [start, next];
}

function packetId(pos: number, end: number, what: string): number {
  if (pos + 2 > end) malformed(`${what} without a packet identifier`);
  return pos + 2;
}

/**
 * Check the packet whose fixed header starts at `start`, variable header at `body`, that
 * ends at `end`, read under protocol `version` (3, 4 or 5; a CONNECT's own level applies
 * to it). Throws MqttError with the reason code; returns nothing when the packet is sound.
 */
export function checkPacket(buf: Uint8Array, start: number, body: number, end: number, version: number): void {
  const type = buf[start]! >> 4;
  const v5 = version === 5;
  switch (type) {
    case 1:
      return checkConnect(buf, body, end);
    case 2:
    case 9:
    case 11:
    case 13:
      // Only a Server sends these (spec 3.2, 3.9, 3.11, 3.13).
      throw new MqttError(RC.PROTOCOL_ERROR, `${NAMES[type]} from a client`);
    case 3: {
      const [topicStart, topicEnd] = lengthPrefixed(buf, body, end, "Topic Name");
      const bad = utf8Problem(buf, topicStart, topicEnd);
      if (bad) malformed(`Topic Name: ${bad}`);
      let pos = topicEnd;
      if (((buf[start]! >> 1) & 3) > 0) pos = packetId(pos, end, "PUBLISH");
      if (v5) checkProperties(buf, pos, end, 3);
      return; // the rest is payload
    }
    case 4:
    case 5:
    case 6:
    case 7: {
      const pos = packetId(body, end, NAMES[type]!);
      // 3.1.1: exactly a packet identifier (spec 3.4.1 etc.: Remaining Length 2).
      if (!v5 || pos === end) return expectEnd(pos, end, type);
      // v5: a Reason Code, then (optional when nothing follows it) the properties (spec 3.4.2).
      if (pos + 1 === end) return;
      return expectEnd(checkProperties(buf, pos + 1, end, type), end, type);
    }
    case 8:
    case 10: {
      let pos = packetId(body, end, NAMES[type]!);
      if (v5) pos = checkProperties(buf, pos, end, type);
      while (pos < end) {
        const [s, next] = string(buf, pos, end, "Topic Filter");
        // [MQTT-4.7.3-1] a filter is at least one character. 3.1.1 has no reason code for it
        // and closes on protocol violations [MQTT-4.8.0-1]; v5 answers 0x8F in SUBACK instead.
        if (s === next && !v5) throw new MqttError(RC.PROTOCOL_ERROR, "empty topic filter");
        pos = next;
        if (type === 8) {
          if (pos >= end) malformed("Topic Filter without Subscription Options");
          pos++;
        }
      }
      return;
    }
    case 12:
      return expectEnd(body, end, type); // PINGREQ has no variable header (spec 3.12)
    case 14:
      // 3.1.1: nothing after the fixed header (spec 3.14). v5: a Reason Code, then the
      // properties; either may be left out when nothing follows it (spec 3.14.2).
      if (!v5) return expectEnd(body, end, type);
      if (end - body <= 1) return;
      return expectEnd(checkProperties(buf, body + 1, end, 14), end, type);
    case 15:
      if (!v5) malformed("AUTH before MQTT 5");
      if (body === end) return; // Reason Code 0 and no properties (spec 3.15.2.1)
      return expectEnd(checkProperties(buf, body + 1, end, 15), end, type);
    default:
      malformed(`packet type ${type}`);
  }
}

function expectEnd(pos: number, end: number, type: number): void {
  if (pos !== end) malformed(`${NAMES[type]} has ${end - pos} bytes after its last field`);
}

/** "MQTT" and "MQIsdp" as bytes. */
const MQTT = [0x4d, 0x51, 0x54, 0x54];
const MQISDP = [0x4d, 0x51, 0x49, 0x73, 0x64, 0x70];

function nameIs(buf: Uint8Array, start: number, end: number, name: number[]): boolean {
  if (end - start !== name.length) return false;
  for (let i = 0; i < name.length; i++) if (buf[start + i] !== name[i]) return false;
  return true;
}

/**
 * CONNECT (spec 3.1): the protocol name for the level, the flags, every field the flags
 * announce and no byte more.
 */
function checkConnect(buf: Uint8Array, body: number, end: number): void {
  const [nameStart, nameEnd] = lengthPrefixed(buf, body, end, "Protocol Name");
  let pos = nameEnd;
  if (pos >= end) malformed("CONNECT without a protocol level");
  // The top bit is the bridge flag mqtt-packet accepts (Mosquitto's bridges set it).
  const level = buf[pos++]! & 0x7f;
  // [MQTT-3.1.2-1] an unknown protocol name may be closed without a CONNACK [MQTT-3.1.4-1];
  // a known name with the other name's level gets return code 1, as Mosquitto answers.
  const mqtt = nameIs(buf, nameStart, nameEnd, MQTT);
  if (!mqtt && !nameIs(buf, nameStart, nameEnd, MQISDP)) malformed("unknown protocol name");
  if (mqtt ? level !== 4 && level !== 5 : level !== 3) {
    throw new MqttError(
      RC.UNSUPPORTED_PROTOCOL_VERSION,
      `protocol version ${level} with protocol name ${mqtt ? "MQTT" : "MQIsdp"}`,
    );
  }
  if (pos >= end) malformed("CONNECT without Connect Flags");
  const flags = buf[pos++]!;
  const will = (flags & 0x04) !== 0;
  const willQos = (flags >> 3) & 3;
  const password = (flags & 0x40) !== 0;
  const username = (flags & 0x80) !== 0;
  if (flags & 0x01) malformed("reserved Connect Flag set"); // [MQTT-3.1.2-3]
  if (will && willQos === 3) malformed("Will QoS 3"); // [MQTT-3.1.2-14]
  if (!will && (flags & 0x38) !== 0) malformed("Will QoS or Will Retain without a Will"); // [MQTT-3.1.2-11]
  // 3.1 and 3.1.1 allow no password without a user name [MQTT-3.1.2-22]; v5 does (spec 3.1.2.9).
  if (password && !username && level !== 5) malformed("Password Flag without User Name Flag");
  if (pos + 2 > end) malformed("CONNECT without Keep Alive");
  pos += 2;
  if (level === 5) pos = checkProperties(buf, pos, end, 1);
  pos = string(buf, pos, end, "Client Identifier")[1];
  if (will) {
    if (level === 5) pos = checkProperties(buf, pos, end, WILL_PROPERTIES);
    pos = string(buf, pos, end, "Will Topic")[1];
    pos = lengthPrefixed(buf, pos, end, "Will Payload")[1];
  }
  if (username) pos = string(buf, pos, end, "User Name")[1];
  if (password) pos = lengthPrefixed(buf, pos, end, "Password")[1];
  // A user name or password whose flag is 0 [MQTT-3.1.2-16] [MQTT-3.1.2-18], or any other
  // trailing bytes.
  if (pos !== end) malformed(`CONNECT has ${end - pos} bytes after its last field`);
}

/**
 * The protocol level of a CONNECT frame (body at `body`) named "MQTT", or undefined: what a
 * fault in the rest of it is reported under (a v5 client learns the reason in a CONNACK).
 */
export function connectLevel(buf: Uint8Array, body: number, end: number): number | undefined {
  if (body + 2 > end) return undefined;
  const nameEnd = body + 2 + ((buf[body]! << 8) | buf[body + 1]!);
  if (nameEnd >= end || !nameIs(buf, body + 2, nameEnd, MQTT)) return undefined;
  return buf[nameEnd]! & 0x7f;
}
