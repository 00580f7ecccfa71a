import mqttPacket from "mqtt-packet";
import type { Packet, ProtocolVersion, PublishPacket } from "./packets.ts";
import { MqttError, RC } from "./reason-codes.ts";

/** The largest Remaining Length MQTT can express (spec 1.5.5): 268,435,455. */
export const MQTT_MAX_REMAINING_LENGTH = 268_435_455;

/**
 * Turns a byte stream into packets. Framing is done here (not by mqtt-packet) so that
 * an oversized packet is refused from its fixed header alone, before its body is
 * buffered: a hostile client cannot make Ferry hold a 256 MB packet in memory.
 */
export class PacketReader {
  #parser = mqttPacket.parser({ protocolVersion: 4 });
  #pending: Uint8Array | null = null;
  #out: Packet[] = [];
  #error: Error | null = null;

  /** @param maxPacketSize largest whole packet (fixed header included) accepted, in bytes */
  constructor(public maxPacketSize: number) {
    this.#parser.on("packet", (p: Packet) => this.#out.push(p));
    this.#parser.on("error", (e: Error) => {
      this.#error ??= e;
    });
  }

  /**
   * Feed bytes; returns every complete packet they finish. Throws MqttError on a
   * malformed or oversized packet; the caller must then close the connection.
   */
  push(chunk: Uint8Array): Packet[] {
    let buf = chunk;
    if (this.#pending) {
      const joined = new Uint8Array(this.#pending.byteLength + chunk.byteLength);
      joined.set(this.#pending, 0);
      joined.set(chunk, this.#pending.byteLength);
      buf = joined;
      this.#pending = null;
    }
    this.#out = [];
    let pos = 0;
    while (pos < buf.byteLength) {
      // Judge the first byte at once: garbage that claims a long body (an HTTP request,
      // a line of text) is refused now instead of holding the socket until the body comes.
      const bad = fixedHeaderProblem(buf[pos]!);
      if (bad) throw new MqttError(RC.MALFORMED_PACKET, bad);
      const frame = frameLength(buf, pos);
      if (frame === -1) break; // header incomplete
      if (frame === -2) throw new MqttError(RC.MALFORMED_PACKET, "malformed remaining length");
      if (frame > this.maxPacketSize) {
        throw new MqttError(RC.PACKET_TOO_LARGE, `packet of ${frame} bytes exceeds ${this.maxPacketSize}`);
      }
      if (pos + frame > buf.byteLength) break; // body incomplete
      this.#parseFrame(buf.subarray(pos, pos + frame));
      pos += frame;
    }
    if (pos < buf.byteLength) {
      // Copy so the adapter may reuse its read buffer.
      this.#pending = buf.slice(pos);
    }
    return this.#out;
  }

  #parseFrame(frame: Uint8Array): void {
    const before = this.#out.length;
    // mqtt-packet wants a Buffer; this view shares memory, no copy.
    this.#parser.parse(Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength));
    if (this.#error) {
      const msg = this.#error.message;
      this.#error = null;
      throw new MqttError(RC.MALFORMED_PACKET, `malformed packet: ${msg}`);
    }
    if (this.#out.length !== before + 1) {
      throw new MqttError(RC.MALFORMED_PACKET, "malformed packet: length does not match contents");
    }
  }

  /** Bytes held waiting for the rest of a packet. */
  get bufferedBytes(): number {
    return this.#pending?.byteLength ?? 0;
  }
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

/** Encode a packet for a peer that speaks `version`. */
export function encode(packet: Packet, version: ProtocolVersion): Uint8Array {
  if (packet.cmd === "publish") {
    // mqtt-packet expects Buffers; the core hands plain Uint8Arrays (views, no copies).
    packet.payload = asBuffer(packet.payload);
    const cd = packet.properties?.correlationData;
    if (cd) packet.properties!.correlationData = asBuffer(cd);
  }
  return mqttPacket.generate(packet, { protocolVersion: version });
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
