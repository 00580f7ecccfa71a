/**
 * The check of an MQTT 5 property block (spec 2.2.2) from a client, on its raw bytes:
 * mqtt-packet reads a property that runs past the Property Length, an unknown one, one
 * the packet type does not allow or one given twice without complaint (a duplicate
 * becomes an array, a missing value null), and those values then reach the core.
 */
import { MqttError, RC } from "./reason-codes.ts";
import { utf8Problem } from "./utf8.ts";

/** Pseudo packet type of the Will Properties inside CONNECT (spec 3.1.3.2). */
export const WILL_PROPERTIES = 16;

type ValueType = "byte" | "int16" | "int32" | "varint" | "string" | "binary" | "pair";

interface PropertyRule {
  name: string;
  type: ValueType;
  /** Bit (1 << packet type) for each packet type (WILL_PROPERTIES for a Will) that may carry it. */
  allowed: number;
}

const CONNECT = 1 << 1;
const CONNACK = 1 << 2;
const PUBLISH = 1 << 3;
const PUBACK = 1 << 4;
const PUBREC = 1 << 5;
const PUBREL = 1 << 6;
const PUBCOMP = 1 << 7;
const SUBSCRIBE = 1 << 8;
const SUBACK = 1 << 9;
const UNSUBSCRIBE = 1 << 10;
const UNSUBACK = 1 << 11;
const DISCONNECT = 1 << 14;
const AUTH = 1 << 15;
const WILL = 1 << WILL_PROPERTIES;

/** MQTT 5.0 Table 2-4: identifier → name, value type and the packets that may carry it. */
const RULES: ReadonlyArray<PropertyRule | undefined> = (() => {
  const t: Array<PropertyRule | undefined> = [];
  const def = (id: number, name: string, type: ValueType, allowed: number) => {
    t[id] = { name, type, allowed };
  };
  def(0x01, "Payload Format Indicator", "byte", PUBLISH | WILL);
  def(0x02, "Message Expiry Interval", "int32", PUBLISH | WILL);
  def(0x03, "Content Type", "string", PUBLISH | WILL);
  def(0x08, "Response Topic", "string", PUBLISH | WILL);
  def(0x09, "Correlation Data", "binary", PUBLISH | WILL);
  def(0x0b, "Subscription Identifier", "varint", PUBLISH | SUBSCRIBE);
  def(0x11, "Session Expiry Interval", "int32", CONNECT | CONNACK | DISCONNECT);
  def(0x12, "Assigned Client Identifier", "string", CONNACK);
  def(0x13, "Server Keep Alive", "int16", CONNACK);
  def(0x15, "Authentication Method", "string", CONNECT | CONNACK | AUTH);
  def(0x16, "Authentication Data", "binary", CONNECT | CONNACK | AUTH);
  def(0x17, "Request Problem Information", "byte", CONNECT);
  def(0x18, "Will Delay Interval", "int32", WILL);
  def(0x19, "Request Response Information", "byte", CONNECT);
  def(0x1a, "Response Information", "string", CONNACK);
  def(0x1c, "Server Reference", "string", CONNACK | DISCONNECT);
  def(
    0x1f,
    "Reason String",
    "string",
    CONNACK | PUBACK | PUBREC | PUBREL | PUBCOMP | SUBACK | UNSUBACK | DISCONNECT | AUTH,
  );
  def(0x21, "Receive Maximum", "int16", CONNECT | CONNACK);
  def(0x22, "Topic Alias Maximum", "int16", CONNECT | CONNACK);
  def(0x23, "Topic Alias", "int16", PUBLISH);
  def(0x24, "Maximum QoS", "byte", CONNACK);
  def(0x25, "Retain Available", "byte", CONNACK);
  def(
    0x26,
    "User Property",
    "pair",
    CONNECT | CONNACK | PUBLISH | WILL | PUBACK | PUBREC | PUBREL | PUBCOMP | SUBSCRIBE | SUBACK | UNSUBSCRIBE |
      UNSUBACK | DISCONNECT | AUTH,
  );
  def(0x27, "Maximum Packet Size", "int32", CONNECT | CONNACK);
  def(0x28, "Wildcard Subscription Available", "byte", CONNACK);
  def(0x29, "Subscription Identifier Available", "byte", CONNACK);
  def(0x2a, "Shared Subscription Available", "byte", CONNACK);
  return t;
})();

const USER_PROPERTY = 0x26;
const PACKET_NAMES = [
  "",
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
  "Will Properties",
];

/** Which identifiers one block has shown so far; reused, cleared per block. */
const seen = new Uint8Array(RULES.length);

function malformed(why: string): never {
  throw new MqttError(RC.MALFORMED_PACKET, `malformed packet: ${why}`);
}

function protocolError(why: string): never {
  throw new MqttError(RC.PROTOCOL_ERROR, why);
}

/**
 * Read a Variable Byte Integer (spec 1.5.5) at `pos`, not beyond `end`: its value and the
 * offset after it, as [value, next]. Malformed when longer than four bytes or cut off.
 */
export function readVarInt(buf: Uint8Array, pos: number, end: number, what: string): [number, number] {
  let value = 0;
  let mult = 1;
  for (let i = 0; i < 4; i++) {
    if (pos >= end) malformed(`${what} runs past the end of the packet`);
    const b = buf[pos++]!;
    value += (b & 0x7f) * mult;
    if ((b & 0x80) === 0) return [value, pos];
    mult *= 128;
  }
  return malformed(`${what} is longer than four bytes`);
}

/**
 * Check the property block at `pos` (its Property Length first) of a packet of `type`
 * (1-15, or WILL_PROPERTIES) that ends at `end`; returns the offset after the block.
 * Throws MqttError: 0x81 Malformed Packet for a block or value that runs past its length,
 * an unknown identifier, a property the packet type does not allow, ill-formed UTF-8;
 * 0x82 Protocol Error where the spec names one (a property given twice, a value of 0
 * where 0 is not allowed, a Subscription Identifier from a client [MQTT-3.3.4-6]).
 */
export function checkProperties(buf: Uint8Array, pos: number, end: number, type: number): number {
  const [length, start] = readVarInt(buf, pos, end, "Property Length");
  const blockEnd = start + length;
  if (blockEnd > end) malformed("Property Length runs past the end of the packet");
  if (length === 0) return blockEnd;
  const where = PACKET_NAMES[type]!;
  seen.fill(0);
  let p = start;
  while (p < blockEnd) {
    // The identifier is a Variable Byte Integer (spec 2.2.2.2); every defined one fits in a byte.
    const [id, afterId] = readVarInt(buf, p, blockEnd, "property identifier");
    p = afterId;
    const rule = RULES[id];
    if (rule === undefined) malformed(`unknown property identifier 0x${id.toString(16)} in ${where}`);
    if ((rule.allowed & (1 << type)) === 0) malformed(`${rule.name} is not allowed in ${where}`);
    if (id === 0x0b && type === 3) {
      protocolError("PUBLISH from a client carries a Subscription Identifier"); // [MQTT-3.3.4-6]
    }
    if (id !== USER_PROPERTY) {
      if (seen[id] !== 0) protocolError(`${rule.name} more than once in ${where}`);
      seen[id] = 1;
    }
    const cut = () => malformed(`${rule.name} runs past the Property Length in ${where}`);
    switch (rule.type) {
      case "byte": {
        if (p + 1 > blockEnd) cut();
        const v = buf[p++]!;
        // Request Problem / Response Information: a Protocol Error otherwise (spec 3.1.2.11.6,
        // 3.1.2.11.7); Ferry treats a Payload Format Indicator beyond 0/1 the same way.
        if (v > 1 && (id === 0x01 || id === 0x17 || id === 0x19)) protocolError(`${rule.name} of ${v}`);
        break;
      }
      case "int16": {
        if (p + 2 > blockEnd) cut();
        const v = (buf[p]! << 8) | buf[p + 1]!;
        p += 2;
        if (v === 0 && id === 0x21) protocolError("Receive Maximum of 0"); // spec 3.1.2.11.3
        break;
      }
      case "int32": {
        if (p + 4 > blockEnd) cut();
        const v = ((buf[p]! << 24) >>> 0) + ((buf[p + 1]! << 16) | (buf[p + 2]! << 8) | buf[p + 3]!);
        p += 4;
        if (v === 0 && id === 0x27) protocolError("Maximum Packet Size of 0"); // spec 3.1.2.11.4
        break;
      }
      case "varint": {
        const [v, next] = readVarInt(buf, p, blockEnd, rule.name);
        p = next;
        if (v === 0) protocolError("Subscription Identifier of 0"); // spec 3.8.2.1.2
        break;
      }
      case "binary": {
        if (p + 2 > blockEnd) cut();
        const n = (buf[p]! << 8) | buf[p + 1]!;
        p += 2 + n;
        if (p > blockEnd) cut();
        break;
      }
      case "string":
      case "pair": {
        for (let k = rule.type === "pair" ? 2 : 1; k > 0; k--) {
          if (p + 2 > blockEnd) cut();
          const n = (buf[p]! << 8) | buf[p + 1]!;
          const s = p + 2;
          p = s + n;
          if (p > blockEnd) cut();
          const bad = utf8Problem(buf, s, p);
          if (bad) malformed(`${rule.name} in ${where}: ${bad}`);
          if (id === 0x08) responseTopicCheck(buf, s, p, where);
        }
        break;
      }
    }
  }
  if (type === 1 && seen[0x16] !== 0 && seen[0x15] === 0) {
    protocolError("Authentication Data without an Authentication Method"); // spec 3.1.2.11.10
  }
  return blockEnd;
}

/** A Response Topic is a Topic Name: not empty, no wildcards [MQTT-3.3.2-14] [MQTT-4.7.3-1]. */
function responseTopicCheck(buf: Uint8Array, start: number, end: number, where: string): void {
  if (start === end) protocolError(`empty Response Topic in ${where}`);
  for (let i = start; i < end; i++) {
    const b = buf[i]!;
    if (b === 0x23 || b === 0x2b) protocolError(`Response Topic with a wildcard in ${where}`);
  }
}
