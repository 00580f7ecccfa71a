/**
 * The bytes of each PUBLISH the uplink forwards, written straight from the logged message
 * and Ferry's stamp (cloud-properties.ts), with a Packet Identifier of 0 that the cloud
 * client fills in (cloud-socket-client.ts `publishEncoded`).
 *
 * Why (issue 14): a profile of a 200,000-message drain spent about a fifth of its samples
 * building the five User Properties of every message as an object (PropertyStamper) and
 * encoding that object field by field, then the packet object around it. Three of the five
 * (ferry-clock, ferry-edge-id, ferry-log-id) change rarely and ferry-received-at is the same
 * for the messages of one millisecond: their bytes are made once and copied, and only
 * ferry-offset is written per message.
 *
 * The contract is the same bytes as `encode()` (src/mqtt/codec.ts, itself held to
 * mqtt-packet's generate) of the packet `{ cmd: "publish", topic, payload, qos, retain, dup,
 * messageId: 0, properties: PropertyStamper.properties(…) }` that the MQTT.js client is given:
 * test/unit/stamped-publish.test.ts compares them. A message that carries MQTT 5 properties of
 * its publisher (rare on the edge) takes that very path: built as an object and encoded.
 */
import { encode } from "../mqtt/codec.ts";
import { varIntSize, writeVarInt } from "../mqtt/fast-path.ts";
import type { PublishPacket } from "../mqtt/packets.ts";
import type { Message } from "../store/store.ts";
import { type ClockState, type FerryStamp, PropertyStamper, type StampMode } from "./cloud-properties.ts";

/** A remote topic; its UTF-8 is remembered on it at first use (forward-rules.ts caches them per local topic). */
export interface EncodableTopic {
  readonly topic: string;
  utf8?: Uint8Array;
}

/** Largest Remaining Length MQTT can express (spec 1.5.5). */
const MAX_REMAINING_LENGTH = 268_435_455;

const utf8 = new TextEncoder();

/** One User Property (spec 3.3.2.3.7): 0x26, then the name and the value as UTF-8 strings; undefined past 65,535 bytes. */
function userProperty(name: string, value: string): Uint8Array | undefined {
  const k = utf8.encode(name);
  const v = utf8.encode(value);
  if (k.byteLength > 0xffff || v.byteLength > 0xffff) return undefined;
  const out = new Uint8Array(5 + k.byteLength + v.byteLength);
  out[0] = 0x26;
  out[1] = k.byteLength >> 8;
  out[2] = k.byteLength & 0xff;
  out.set(k, 3);
  out[3 + k.byteLength] = v.byteLength >> 8;
  out[4 + k.byteLength] = v.byteLength & 0xff;
  out.set(v, 5 + k.byteLength);
  return out;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** ferry-received-at's name, as the start of its User Property (the value's length and the time follow). */
const RECEIVED_AT_NAME = userProperty("ferry-received-at", "")!.subarray(0, -2);
/** ferry-offset's name, as the start of its User Property (the value's length and digits follow). */
const OFFSET_PREFIX = userProperty("ferry-offset", "")!.subarray(0, -2);
const REPLAY = userProperty("ferry-replay", "true")!;
/** Offsets up to here are written digit by hand (every offset a log reaches; String() agrees on them). */
const MAX_OFFSET_BY_HAND = Number.MAX_SAFE_INTEGER;

function decimalDigits(n: number): number {
  let digits = 1;
  while (n >= 10) {
    n = Math.floor(n / 10);
    digits++;
  }
  return digits;
}

/** Copies `src` into `out` at `pos`: by hand for the short arrays (topics, stamps) of every message. */
function copy(out: Uint8Array, pos: number, src: Uint8Array): number {
  const n = src.byteLength;
  if (n > 64) out.set(src, pos);
  else for (let i = 0; i < n; i++) out[pos + i] = src[i]!;
  return pos + n;
}

export class StampedPublishEncoder {
  readonly #version: 4 | 5;
  readonly #mode: StampMode;
  readonly #stamper: PropertyStamper;
  /**
   * The User Properties before the offset's value: ferry-received-at, ferry-clock (`full`
   * only), ferry-edge-id, ferry-log-id and the name of ferry-offset, for the values they were
   * made of (the messages of one millisecond share a receive time; the others change rarely).
   */
  #prefix: Uint8Array | undefined;
  #prefixOf = { receivedAt: Number.NaN, clock: "" as ClockState | "", edgeId: "", logId: "" };
  /** The prefix past ferry-received-at, kept while clock state, edge id and log id stay (live traffic: a receive time per message). */
  #rest: Uint8Array | undefined;

  constructor(version: 4 | 5, mode: StampMode = "full") {
    this.#version = version;
    this.#mode = mode;
    this.#stamper = new PropertyStamper(mode);
  }

  /**
   * The PUBLISH of `m` on `topic` with `payload` (the message's own, or its JSON envelope)
   * and Packet Identifier 0, for the client to fill in.
   */
  encode(
    topic: EncodableTopic,
    payload: Uint8Array,
    qos: 0 | 1 | 2,
    retain: boolean,
    dup: boolean,
    m: Message,
    now: number,
    stamp: FerryStamp,
  ): Uint8Array {
    const t = topic.utf8 ??= utf8.encode(topic.topic);
    if (t.byteLength > 0xffff) return this.#generic(topic.topic, payload, qos, retain, dup, m, now, stamp);
    let propsLength = 0;
    let prefix: Uint8Array | undefined;
    let digits = 0;
    let expiry = -1;
    if (this.#version === 5) {
      // Only Ferry's own properties (and the expiry) here; a publisher's go the general way.
      if (m.properties !== undefined || !(m.offset >= 0 && m.offset <= MAX_OFFSET_BY_HAND) || m.offset % 1 !== 0) {
        return this.#generic(topic.topic, payload, qos, retain, dup, m, now, stamp);
      }
      if (this.#mode !== "none") {
        const of = this.#prefixOf;
        // `dedup` carries no receive time: one prefix for every message.
        const at = this.#mode === "full" ? m.receivedAt : 0;
        prefix = of.receivedAt === at && of.clock === stamp.clock && of.logId === stamp.logId &&
            of.edgeId === stamp.edgeId
          ? this.#prefix
          : this.#makePrefix(at, stamp);
        if (prefix === undefined) return this.#generic(topic.topic, payload, qos, retain, dup, m, now, stamp);
        digits = decimalDigits(m.offset);
        propsLength = prefix.byteLength + 2 + digits + (stamp.replay ? REPLAY.byteLength : 0);
      }
      if (m.expiresAt !== undefined) {
        expiry = Math.max(1, Math.ceil((m.expiresAt - now) / 1000));
        if (!(expiry <= 0xffffffff)) return this.#generic(topic.topic, payload, qos, retain, dup, m, now, stamp);
        propsLength += 5;
      }
    }
    const rem = 2 + t.byteLength + (qos > 0 ? 2 : 0) +
      (this.#version === 5 ? varIntSize(propsLength) + propsLength : 0) + payload.byteLength;
    if (rem > MAX_REMAINING_LENGTH) return this.#generic(topic.topic, payload, qos, retain, dup, m, now, stamp);
    const out = new Uint8Array(1 + varIntSize(rem) + rem);
    // Fixed header (spec 3.3.1), then the Topic Name (3.3.2.1) and the Packet Identifier at QoS>0 (3.3.2.2).
    out[0] = 0x30 | (dup ? 0x08 : 0) | (qos << 1) | (retain ? 0x01 : 0);
    let pos = writeVarInt(out, 1, rem);
    out[pos++] = t.byteLength >> 8;
    out[pos++] = t.byteLength & 0xff;
    pos = copy(out, pos, t);
    if (qos > 0) pos += 2; // Packet Identifier 0: the client's to fill in
    if (this.#version === 5) {
      // Properties (spec 3.3.2.3) in the order of PropertyStamper's object: the User Properties, then the expiry.
      pos = writeVarInt(out, pos, propsLength);
      if (prefix !== undefined) {
        out.set(prefix, pos);
        pos += prefix.byteLength;
        out[pos++] = 0;
        out[pos++] = digits;
        let n = m.offset;
        for (let i = digits - 1; i >= 0; i--) {
          out[pos + i] = 0x30 + (n % 10);
          n = Math.floor(n / 10);
        }
        pos += digits;
        if (stamp.replay) pos = copy(out, pos, REPLAY);
      }
      if (expiry >= 0) {
        out[pos] = 0x02; // Message Expiry Interval (spec 3.3.2.3.3)
        out[pos + 1] = expiry >>> 24;
        out[pos + 2] = (expiry >>> 16) & 0xff;
        out[pos + 3] = (expiry >>> 8) & 0xff;
        out[pos + 4] = expiry & 0xff;
        pos += 5;
      }
    }
    out.set(payload, pos);
    return out;
  }

  /** The packet object the MQTT.js client gets, encoded by the codec. */
  #generic(
    topic: string,
    payload: Uint8Array,
    qos: 0 | 1 | 2,
    retain: boolean,
    dup: boolean,
    m: Message,
    now: number,
    stamp: FerryStamp,
  ): Uint8Array {
    const packet = { cmd: "publish", topic, payload, qos, retain, dup, messageId: 0 } as PublishPacket;
    if (this.#version === 5) packet.properties = this.#stamper.properties(m, now, stamp) as PublishPacket["properties"];
    return encode(packet, this.#version);
  }

  /** The prefix for these values, or undefined when one of them is too long for a UTF-8 string. */
  #makePrefix(receivedAt: number, s: FerryStamp): Uint8Array | undefined {
    const of = this.#prefixOf;
    const full = this.#mode === "full";
    if (this.#rest === undefined || of.clock !== s.clock || of.edgeId !== s.edgeId || of.logId !== s.logId) {
      const parts = [
        ...(full ? [userProperty("ferry-clock", s.clock)] : []),
        userProperty("ferry-edge-id", s.edgeId),
        userProperty("ferry-log-id", s.logId),
      ];
      this.#rest = parts.some((p) => p === undefined) ? undefined : concat([...parts as Uint8Array[], OFFSET_PREFIX]);
    }
    this.#prefixOf = { receivedAt, clock: s.clock, edgeId: s.edgeId, logId: s.logId };
    this.#prefix = undefined;
    const rest = this.#rest;
    if (!full) return this.#prefix = rest;
    const at = new Date(receivedAt);
    // An invalid time makes toISOString throw; the general path throws the same.
    if (rest === undefined || Number.isNaN(at.getTime())) return undefined;
    const iso = at.toISOString(); // ASCII: one byte per character
    const n = RECEIVED_AT_NAME.byteLength;
    const prefix = new Uint8Array(n + 2 + iso.length + rest.byteLength);
    prefix.set(RECEIVED_AT_NAME);
    prefix[n] = iso.length >> 8;
    prefix[n + 1] = iso.length & 0xff;
    for (let i = 0; i < iso.length; i++) prefix[n + 2 + i] = iso.charCodeAt(i);
    prefix.set(rest, n + 2 + iso.length);
    this.#prefix = prefix;
    return prefix;
  }
}
