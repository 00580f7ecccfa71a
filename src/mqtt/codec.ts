import { decodeFast, encodeAckFields, encodeFast } from "./fast-path.ts";
import type { Packet, ProtocolVersion, PublishPacket } from "./packets.ts";
import { MqttError, RC } from "./reason-codes.ts";
import { checkPacket, connectLevel } from "./validate-packet.ts";
import { unpinnedBytes } from "./unpinned-bytes.ts";
import { mqttPacketGenerate, newMqttPacketParser } from "./mqtt-packet-lazy.ts";

/** mqtt-packet's parser beyond its typings: its settings, which PacketReader sets per call. */
interface MqttParser {
  settings: ParserSettings;
  parse(buf: Buffer): number;
  on(event: "packet", fn: (p: Packet) => void): void;
  on(event: "error", fn: (e: Error) => void): void;
}

/**
 * What mqtt-packet's parser reads of its settings: the protocol version and bridge mode
 * (bit 7 of the CONNECT's protocol level). It replaces its settings with the CONNECT
 * packet it parses; PacketReader keeps just these two fields.
 */
interface ParserSettings {
  readonly protocolVersion: number;
  readonly bridgeMode?: boolean;
}

/** The settings objects, one per version and bridge mode, shared by every reader. */
const SETTINGS = new Map<string, ParserSettings>();
function settingsFor(protocolVersion: number, bridgeMode: boolean): ParserSettings {
  const key = `${protocolVersion}${bridgeMode ? "b" : ""}`;
  let s = SETTINGS.get(key);
  if (s === undefined) {
    s = Object.freeze(bridgeMode ? { protocolVersion, bridgeMode } : { protocolVersion });
    SETTINGS.set(key, s);
  }
  return s;
}
const DEFAULT_SETTINGS = settingsFor(4, false);

/**
 * One mqtt-packet parser for every connection, made on first use. It used to be one per
 * connection, which with its BufferList stream (a Duplex) and listeners cost about 1.2 KiB
 * of every idle connection, while it only parses the packets the fast path leaves to it
 * (CONNECT, SUBSCRIBE, UNSUBSCRIBE, DISCONNECT, v5 properties). PacketReader hands it one
 * whole frame at a time, so between calls it holds no bytes: the only state that differs
 * between connections is its settings, set before each call. After an error it may hold
 * a half-parsed packet, so it is replaced.
 */
interface SharedParser {
  parser: MqttParser;
  /** What the parse in progress emitted. */
  packets: Packet[];
  error: Error | null;
}
let shared: SharedParser | undefined;

function sharedParser(): SharedParser {
  if (shared !== undefined) return shared;
  const s: SharedParser = {
    parser: newMqttPacketParser({ protocolVersion: 4 }) as unknown as MqttParser,
    packets: [],
    error: null,
  };
  s.parser.on("packet", (p) => s.packets.push(p));
  s.parser.on("error", (e) => {
    s.error ??= e;
  });
  shared = s;
  return s;
}

export interface PacketReaderOptions {
  /**
   * Decode PUBLISH, PUBACK/PUBREC/PUBREL/PUBCOMP and PINGREQ by hand (src/mqtt/fast-path.ts)
   * instead of through mqtt-packet. On by default; off only to compare the two paths.
   */
  fastPath?: boolean;
  /**
   * Copy a small PUBLISH payload out of the bytes read (the default; see unpinnedBytes), or
   * leave every payload decoded by the fast path a view of them, for a caller that copies
   * only what it keeps (the broker drops a QoS 0 message nobody can take before copying).
   * The view is valid until the next `feed`.
   */
  copyPayloads?: boolean;
}

/** Packets besides PUBLISH that must carry a non-zero Packet Identifier [MQTT-2.3.1-1]. */
const ID_REQUIRED = new Set(["subscribe", "unsubscribe"]);

/** The largest Remaining Length MQTT can express (spec 1.5.5): 268,435,455. */
export const MQTT_MAX_REMAINING_LENGTH = 268_435_455;

/**
 * Turns a byte stream from a client into packets (the broker's side of a connection: a
 * packet only a server sends is a Protocol Error). Framing is done here (not by mqtt-packet) so that
 * an oversized packet is refused from its fixed header alone, before its body is
 * buffered: a hostile client cannot make Ferry hold a 256 MB packet in memory.
 *
 * The bytes of an incomplete packet are kept in one buffer of the reader's own, which
 * doubles as bytes arrive but never beyond the packet's length once its fixed header is
 * known, and is parsed only once the whole packet is there: a packet sent a byte at a
 * time costs linear copying, not quadratic. Small payloads are copied out of the bytes
 * they arrived in (see `unpinned`). A reader holds no parser of its own (see
 * `sharedParser`): an idle connection's reader is a few fields.
 */
export class PacketReader {
  #settings: ParserSettings = DEFAULT_SETTINGS;
  /**
   * What `next` reads from: the chunk `feed` was given, or the reader's own held bytes, from
   * `#pos` on; undefined between reads (then any unread bytes are held).
   */
  #buf: Uint8Array | undefined = undefined;
  #pos = 0;
  #own = false;
  /** A Buffer view of `#buf` for the hand-written decoder, made at most once per buffer. */
  #view: Buffer | undefined = undefined;
  /** Unread bytes kept between reads (an incomplete packet, or what a paused reader left), `#heldLength` of them. */
  #held: Uint8Array | undefined = undefined;
  #heldLength = 0;
  /** Length of the held incomplete packet once its fixed header is complete; 0 while unknown. */
  #need = 0;

  #fastPath: boolean;
  #copyPayloads: boolean;
  /**
   * For the reader's owner: what it last reported of this reader's bytes (the memory
   * budget's count of unread input). Kept here to keep the connection object small.
   */
  counted = 0;

  /** @param maxPacketSize largest whole packet (fixed header included) accepted, in bytes */
  constructor(public maxPacketSize: number, options: PacketReaderOptions = {}) {
    this.#fastPath = options.fastPath ?? true;
    this.#copyPayloads = options.copyPayloads ?? true;
  }

  /**
   * Feed bytes; returns every complete packet they finish (`feed`, then `next` until it
   * gives nothing). Throws MqttError on a malformed or oversized packet; the caller must
   * then close the connection.
   */
  push(chunk: Uint8Array): Packet[] {
    this.feed(chunk);
    const out: Packet[] = [];
    for (let p = this.next(); p !== undefined; p = this.next()) out.push(p);
    return out;
  }

  /**
   * Add bytes to read. Take the packets out with `next` before the next `feed`, or `stop`:
   * the caller may reuse `chunk` afterwards, so whatever is kept of it is copied.
   */
  feed(chunk: Uint8Array): void {
    this.#keepRest(0);
    if (this.#held !== undefined) this.#append(chunk);
    else {
      this.#buf = chunk;
      this.#pos = 0;
      this.#own = false;
      this.#view = undefined;
    }
  }

  /**
   * The next complete packet, or undefined when the bytes end (an incomplete packet is
   * then held for the next `feed`). One at a time, so that a caller can stop between
   * packets (a paused connection) and a read of many small packets never has them all
   * decoded at once. Throws MqttError on a malformed or oversized packet.
   */
  next(): Packet | undefined {
    if (this.#buf === undefined) {
      // Held bytes are read once what the fixed header announced is all here.
      if (this.#held === undefined || this.#heldLength < this.#need) return undefined;
      this.#buf = this.#held.subarray(0, this.#heldLength);
      this.#pos = 0;
      this.#own = true;
      this.#view = undefined;
      this.#held = undefined;
      this.#heldLength = 0;
      this.#need = 0;
    }
    const buf = this.#buf;
    const pos = this.#pos;
    if (pos >= buf.byteLength) {
      this.#buf = undefined;
      this.#view = undefined;
      return undefined;
    }
    // Judge the first byte at once: garbage that claims a long body (an HTTP request,
    // a line of text) is refused now instead of holding the socket until the body comes.
    const bad = fixedHeaderProblem(buf[pos]!);
    if (bad) throw new MqttError(RC.MALFORMED_PACKET, bad);
    const frame = frameLength(buf, pos);
    if (frame === -2) throw new MqttError(RC.MALFORMED_PACKET, "malformed remaining length");
    if (frame > this.maxPacketSize) {
      throw new MqttError(RC.PACKET_TOO_LARGE, `packet of ${frame} bytes exceeds ${this.maxPacketSize}`);
    }
    if (frame === -1 || pos + frame > buf.byteLength) {
      // Header or body incomplete: held until the rest comes.
      this.#keepRest(frame === -1 ? 0 : frame);
      return undefined;
    }
    let body = pos + 2; // past the fixed header: type byte and 1-4 Remaining Length bytes
    while ((buf[body - 1]! & 0x80) !== 0) body++;
    let packet: Packet | undefined;
    if (this.#fastPath) {
      const view = this.#view ??= Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
      packet = decodeFast(
        view,
        buf[pos]!,
        body,
        pos + frame - body,
        this.#settings.protocolVersion,
        this.#copyPayloads,
        this.#settings.bridgeMode === true,
      );
    }
    // What the fast path decodes needs no further check (fast-path.ts leaves anything
    // unusual to mqtt-packet); everything else is checked field by field after mqtt-packet.
    if (packet === undefined) packet = this.#parseAndCheck(buf, pos, body, pos + frame);
    this.#pos = pos + frame;
    // [MQTT-2.3.1-1] SUBSCRIBE, UNSUBSCRIBE and a QoS>0 PUBLISH carry a non-zero Packet
    // Identifier; mqtt-packet accepts 0, and acknowledging it would confuse the client.
    if (packet.messageId === 0 && (packet.cmd === "publish" ? packet.qos > 0 : ID_REQUIRED.has(packet.cmd))) {
      throw new MqttError(RC.PROTOCOL_ERROR, `${packet.cmd.toUpperCase()} with Packet Identifier 0`);
    }
    return packet;
  }

  /** The caller stops taking packets for now: what is unread is held for a later `next`. */
  stop(): void {
    this.#keepRest(0);
  }

  /**
   * Hold the unread rest of `#buf`: a copy, as the adapter may reuse its read buffer and
   * packets already taken may be views of the reader's own one (kept as it is when none were).
   */
  #keepRest(need: number): void {
    const buf = this.#buf;
    if (buf === undefined) return;
    const pos = this.#pos;
    this.#buf = undefined;
    this.#view = undefined;
    if (pos >= buf.byteLength) return;
    if (this.#own && pos === 0) this.#held = buf;
    else this.#held = buf.slice(pos);
    this.#heldLength = this.#held.byteLength;
    this.#need = need;
  }

  /** Add `chunk` to the held bytes, growing the buffer by doubling, but not past the packet's length. */
  #append(chunk: Uint8Array): void {
    const required = this.#heldLength + chunk.byteLength;
    let held = this.#held!;
    if (required > held.byteLength) {
      let capacity = Math.max(required, held.byteLength * 2);
      // A large packet completes in a buffer of its own size, so its payload (a view of
      // it) keeps nothing else alive.
      if (this.#need > 0 && capacity > this.#need) capacity = Math.max(required, this.#need);
      const grown = new Uint8Array(capacity);
      grown.set(held.subarray(0, this.#heldLength));
      held = grown;
      this.#held = grown;
    }
    held.set(chunk, this.#heldLength);
    this.#heldLength = required;
  }

  /** mqtt-packet's decoding of the frame at `start..end`, then checkPacket's verdict on its bytes. */
  #parseAndCheck(buf: Uint8Array, start: number, body: number, end: number): Packet {
    try {
      const packet = this.#parseFrame(buf.subarray(start, end));
      checkPacket(buf, start, body, end, this.#settings.protocolVersion);
      return unpinned(packet, buf.buffer.byteLength);
    } catch (err) {
      // A refused CONNECT carries its protocol level, so that a v5 client is told why.
      if (err instanceof MqttError && buf[start]! >> 4 === 1 && err.protocolVersion === undefined) {
        const level = connectLevel(buf, body, end);
        if (level !== undefined && err.reasonCode !== RC.UNSUPPORTED_PROTOCOL_VERSION) {
          throw new MqttError(err.reasonCode, err.message, level);
        }
      }
      throw err;
    }
  }

  #parseFrame(frame: Uint8Array): Packet {
    const s = sharedParser();
    const parser = s.parser;
    parser.settings = this.#settings;
    s.packets.length = 0;
    try {
      // mqtt-packet wants a Buffer; this view shares memory, no copy.
      parser.parse(Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength));
    } catch (err) {
      shared = undefined;
      throw err;
    }
    const error = s.error;
    const packets = s.packets.length;
    const packet = s.packets[0];
    s.packets.length = 0;
    if (parser.settings !== this.#settings) {
      // A CONNECT: mqtt-packet decodes what follows with its protocol version (and bridge mode).
      const next = parser.settings;
      this.#settings = settingsFor(next.protocolVersion, next.bridgeMode === true);
    }
    if (error !== null || packets !== 1) shared = undefined; // it may hold half a packet now
    if (error) {
      const msg = error.message;
      // [MQTT-3.1.2-2] a protocol level Ferry does not speak is answered with CONNACK 0x01.
      const code = msg === "Invalid protocol version" ? RC.UNSUPPORTED_PROTOCOL_VERSION : RC.MALFORMED_PACKET;
      throw new MqttError(code, `malformed packet: ${msg}`);
    }
    if (packet === undefined || packets !== 1) {
      throw new MqttError(RC.MALFORMED_PACKET, "malformed packet: length does not match contents");
    }
    // mqtt-packet does not notice a Packet Identifier that is not there: a QoS>0 PUBLISH
    // (spec 3.3.2.2) or a PUBACK/PUBREC/PUBREL/PUBCOMP (spec 3.4.2) too short to hold one
    // comes out with messageId -1, and answering it would put a broken acknowledgement on
    // the wire (generate cannot encode -1). Such a packet is malformed.
    if (packet.messageId === -1) {
      throw new MqttError(
        RC.MALFORMED_PACKET,
        `malformed packet: ${packet.cmd.toUpperCase()} without a packet identifier`,
      );
    }
    return packet;
  }

  /** Bytes held between reads: an incomplete packet, or what a paused reader left (the buffer's size: the memory it keeps). */
  get bufferedBytes(): number {
    return (this.#held?.byteLength ?? 0) + (this.#own && this.#buf !== undefined ? this.#buf.byteLength : 0);
  }
}

/**
 * `packet` with the byte fields that outlive it (a PUBLISH's payload and Correlation Data,
 * a CONNECT's Will payload) copied out of the frame when they are small next to the
 * `backing` bytes the frame was read into (see unpinnedBytes).
 */
function unpinned(packet: Packet, backing: number): Packet {
  if (packet.cmd === "publish") {
    const p = packet as { payload: unknown; properties?: { correlationData?: unknown } };
    if (Buffer.isBuffer(p.payload) && p.payload.byteLength > 0) p.payload = unpinnedBytes(p.payload, backing);
    const cd = p.properties?.correlationData;
    if (Buffer.isBuffer(cd)) p.properties!.correlationData = unpinnedBytes(cd, backing);
  } else if (packet.cmd === "connect") {
    const will = (packet as { will?: { payload?: unknown; properties?: { correlationData?: unknown } } }).will;
    if (will && Buffer.isBuffer(will.payload)) will.payload = unpinnedBytes(will.payload, backing);
    const cd = will?.properties?.correlationData;
    if (Buffer.isBuffer(cd)) will!.properties!.correlationData = unpinnedBytes(cd, backing);
  }
  return packet;
}

/** Flag bits each packet type must carry (spec 2.1.3, Table 2-2); PUBLISH's are checked apart. */
const REQUIRED_FLAGS = [-1, 0, 0, -1, 0, 0, 2, 0, 2, 0, 2, 0, 0, 0, 0, 0];

/**
 * Why a fixed header's first byte is malformed, or undefined: reserved type 0, wrong
 * reserved flags [MQTT-2.1.3-1], or a PUBLISH with both QoS bits set [MQTT-3.3.1-4].
 */
export function fixedHeaderProblem(byte: number): string | undefined {
  const type = byte >> 4;
  const flags = byte & 0x0f;
  if (type === 0) return "malformed packet: reserved packet type 0";
  if (type === 3) return (flags & 0x06) === 0x06 ? "malformed packet: PUBLISH with QoS 3" : undefined;
  const required = REQUIRED_FLAGS[type]!;
  return flags === required
    ? undefined
    : `malformed packet: flags ${flags} on packet type ${type} (must be ${required})`;
}

/**
 * Length of the whole packet starting at `pos`: -1 when the fixed header is not all
 * here yet, -2 when the Remaining Length is malformed (more than 4 bytes).
 */
export function frameLength(buf: Uint8Array, pos: number): number {
  let mult = 1;
  let len = 0;
  for (let i = 1; i <= 4; i++) {
    const idx = pos + i;
    if (idx >= buf.byteLength) return -1;
    const b = buf[idx]!;
    len += (b & 0x7f) * mult;
    if ((b & 0x80) === 0) return 1 + i + len;
    mult *= 128;
  }
  return -2;
}

/**
 * Encode a packet for a peer that speaks `version`. PUBLISH without v5 properties,
 * PUBACK/PUBREC/PUBREL/PUBCOMP without v5 properties and PINGRESP are encoded by hand
 * (src/mqtt/fast-path.ts), byte for byte as mqtt-packet would; the rest by mqtt-packet.
 */
export function encode(packet: Packet, version: ProtocolVersion): Uint8Array {
  return encodeFast(packet, version) ?? encodeWithMqttPacket(packet, version);
}

/**
 * Encode a PUBACK/PUBREC/PUBREL/PUBCOMP without properties from its fields: the same bytes
 * as `encode({ cmd, messageId, reasonCode }, 5)` or `encode({ cmd, messageId }, version)`
 * for v3/v4, which ignore `reasonCode`.
 */
export function encodeAck(
  cmd: "puback" | "pubrec" | "pubrel" | "pubcomp",
  messageId: number,
  reasonCode: number,
  version: ProtocolVersion,
): Uint8Array {
  return encodeAckFields(cmd, messageId, reasonCode, version) ??
    encode((version === 5 ? { cmd, messageId, reasonCode } : { cmd, messageId }) as Packet, version);
}

/**
 * A v5 DISCONNECT with a Reason Code and nothing else, in its shortest form: E0 01 code,
 * the Property Length left out as nothing follows it (spec 3.14.2.2.1), or E0 00 for
 * 0x00. mqtt-packet always writes the Property Length (E0 02 code 00).
 */
export function encodeDisconnect(reasonCode: number): Uint8Array {
  return reasonCode === 0 ? Uint8Array.of(0xe0, 0x00) : Uint8Array.of(0xe0, 0x01, reasonCode);
}

/** Encode through mqtt-packet alone: the reference the fast path is held to (tests, benchmarks). */
export function encodeWithMqttPacket(packet: Packet, version: ProtocolVersion): Uint8Array {
  if (packet.cmd === "publish") {
    // mqtt-packet expects Buffers; the core hands plain Uint8Arrays (views, no copies).
    packet.payload = asBuffer(packet.payload);
    const cd = packet.properties?.correlationData;
    if (cd) packet.properties!.correlationData = asBuffer(cd);
  }
  return mqttPacketGenerate(packet, { protocolVersion: version });
}

function asBuffer<T extends string | Uint8Array>(v: T): T | Buffer {
  if (typeof v === "string" || Buffer.isBuffer(v)) return v;
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

/**
 * Byte offset of the Packet Identifier inside an encoded QoS>0 PUBLISH, so that one
 * encoding can be shared by many subscribers and only the two id bytes patched.
 */
export function publishPacketIdOffset(bytes: Uint8Array): number {
  let i = 1;
  while ((bytes[i]! & 0x80) !== 0) i++;
  i++; // past the last Remaining Length byte
  const topicLen = (bytes[i]! << 8) | bytes[i + 1]!;
  return i + 2 + topicLen;
}

/** Copy an encoded PUBLISH with a new packet id (and DUP flag). */
export function withPacketId(template: Uint8Array, idOffset: number, packetId: number, dup: boolean): Uint8Array {
  // A copy, never `template.slice()`: on a Node Buffer that is a view, and patching it
  // would rewrite every other subscriber's still-unsent copy of this message.
  const out = new Uint8Array(template);
  out[idOffset] = packetId >> 8;
  out[idOffset + 1] = packetId & 0xff;
  if (dup) out[0] = out[0]! | 0x08;
  return out;
}

export type { PublishPacket };
