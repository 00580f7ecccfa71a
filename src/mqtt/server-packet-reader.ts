/**
 * Turns the byte stream a client receives from a server into packets: the other side of
 * PacketReader (codec.ts), for Ferry's own cloud client (src/sync/cloud-socket-client.ts).
 *
 * PUBLISH without properties and PUBACK/PUBREC/PUBREL/PUBCOMP (a drain's traffic: one
 * acknowledgement per forwarded message) go through the hand-written decoder of
 * fast-path.ts; PINGRESP is read here; everything else (CONNACK, SUBACK, DISCONNECT, v5
 * properties) through mqtt-packet's parser, one whole frame at a time. A packet only a
 * client sends (CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ), broken framing, bad flags or
 * anything mqtt-packet refuses throws MqttError: the caller closes the connection.
 *
 * An incomplete packet's bytes are copied into a buffer of the reader's own and completed
 * from the following chunks, so a chunk the runtime reuses is never kept.
 */
import { fixedHeaderProblem, frameLength, MQTT_MAX_REMAINING_LENGTH } from "./codec.ts";
import { decodeFast } from "./fast-path.ts";
import { newMqttPacketParser } from "./mqtt-packet-lazy.ts";
import type { Packet, ProtocolVersion } from "./packets.ts";
import { MqttError, RC } from "./reason-codes.ts";

/** mqtt-packet's parser as used here (its typings lack `parse`). */
interface FrameParser {
  parse(buf: Buffer): number;
  on(event: "packet", fn: (p: Packet) => void): void;
  on(event: "error", fn: (e: Error) => void): void;
}

/** Packet types only a client sends (spec 2.1.2): a server that sends one breaks the protocol. */
const CLIENT_ONLY: Record<number, string> = { 1: "CONNECT", 8: "SUBSCRIBE", 10: "UNSUBSCRIBE", 12: "PINGREQ" };

/** The one PINGRESP object: nothing reads more of it than its `cmd`. */
const PINGRESP = Object.freeze({ cmd: "pingresp" }) as Packet;

/** The most a fixed header takes: a type byte and four Remaining Length bytes. */
const MAX_FIXED_HEADER = 5;

export class ServerPacketReader {
  #parser: FrameParser | undefined;
  #parsed: Packet[] = [];
  #error: Error | undefined;
  /** The start of an incomplete packet, `#heldLength` bytes of it; `#need` its whole length once known (else 0). */
  #held: Uint8Array | undefined;
  #heldLength = 0;
  #need = 0;

  /** @param maxPacketSize largest whole packet accepted, in bytes (the spec's largest by default) */
  constructor(
    readonly version: ProtocolVersion,
    public maxPacketSize: number = MQTT_MAX_REMAINING_LENGTH + MAX_FIXED_HEADER,
  ) {}

  /** Every packet `chunk` completes, in order. Throws MqttError on a malformed one. */
  push(chunk: Uint8Array): Packet[] {
    const out: Packet[] = [];
    let pos = 0;
    if (this.#held !== undefined) {
      pos = this.#complete(chunk, out);
      if (pos < 0) return out;
    }
    const buf = asBuffer(chunk);
    while (pos < buf.byteLength) {
      const frame = this.#frame(buf, pos, buf.byteLength);
      if (frame < 0 || pos + frame > buf.byteLength) {
        this.#hold(buf.subarray(pos), frame < 0 ? 0 : frame);
        break;
      }
      out.push(this.#decode(buf, pos, frame));
      pos += frame;
    }
    return out;
  }

  /** Bytes of an incomplete packet held between chunks. */
  get bufferedBytes(): number {
    return this.#heldLength;
  }

  /** Length of the frame at `pos` (checked), or -1 while its fixed header is incomplete. */
  #frame(buf: Uint8Array, pos: number, end: number): number {
    const bad = fixedHeaderProblem(buf[pos]!);
    if (bad !== undefined) throw new MqttError(RC.MALFORMED_PACKET, bad);
    const frame = frameLength(end === buf.byteLength ? buf : buf.subarray(0, end), pos);
    if (frame === -2) throw new MqttError(RC.MALFORMED_PACKET, "malformed packet: malformed remaining length");
    if (frame > this.maxPacketSize) {
      throw new MqttError(RC.PACKET_TOO_LARGE, `packet of ${frame} bytes exceeds ${this.maxPacketSize}`);
    }
    return frame;
  }

  /** Start holding `rest` (copied: the runtime may reuse the chunk). */
  #hold(rest: Uint8Array, need: number): void {
    const held = new Uint8Array(Math.max(need, rest.byteLength, 64));
    held.set(rest);
    this.#held = held;
    this.#heldLength = rest.byteLength;
    this.#need = need;
  }

  /**
   * Complete the held packet from the start of `chunk`, copying only the bytes it still
   * lacks. Returns where the rest of the chunk starts, or -1 when all of it was taken and
   * the packet is still incomplete.
   */
  #complete(chunk: Uint8Array, out: Packet[]): number {
    let pos = 0;
    while (this.#need === 0) {
      // The fixed header is incomplete: take bytes until it is whole.
      if (pos >= chunk.byteLength) return -1;
      const take = Math.min(chunk.byteLength - pos, MAX_FIXED_HEADER - this.#heldLength);
      this.#append(chunk.subarray(pos, pos + take));
      pos += take;
      const frame = this.#frame(this.#held!, 0, this.#heldLength);
      if (frame >= 0) {
        this.#need = frame;
        // The header's bytes may reach past a short packet: give back what belongs to the next.
        if (this.#heldLength > frame) {
          pos -= this.#heldLength - frame;
          this.#heldLength = frame;
        }
      }
    }
    const take = Math.min(chunk.byteLength - pos, this.#need - this.#heldLength);
    this.#append(chunk.subarray(pos, pos + take));
    pos += take;
    if (this.#heldLength < this.#need) return -1;
    const whole = asBuffer(this.#held!.subarray(0, this.#need));
    this.#held = undefined;
    this.#heldLength = 0;
    this.#need = 0;
    out.push(this.#decode(whole, 0, whole.byteLength));
    return pos;
  }

  #append(bytes: Uint8Array): void {
    let held = this.#held!;
    const required = this.#heldLength + bytes.byteLength;
    if (required > held.byteLength) {
      const grown = new Uint8Array(Math.max(required, this.#need, held.byteLength * 2));
      grown.set(held.subarray(0, this.#heldLength));
      this.#held = held = grown;
    }
    held.set(bytes, this.#heldLength);
    this.#heldLength = required;
  }

  /** The packet in the whole frame of `frame` bytes at `pos`. */
  #decode(buf: Buffer, pos: number, frame: number): Packet {
    const first = buf[pos]!;
    const type = first >> 4;
    const clientOnly = CLIENT_ONLY[type];
    if (clientOnly !== undefined) throw new MqttError(RC.PROTOCOL_ERROR, `${clientOnly} from the server`);
    let body = pos + 2;
    while ((buf[body - 1]! & 0x80) !== 0) body++;
    const rem = pos + frame - body;
    if (type === 13) {
      if (rem !== 0) throw new MqttError(RC.MALFORMED_PACKET, "malformed packet: PINGRESP with a body");
      return PINGRESP;
    }
    const packet = decodeFast(buf, first, body, rem, this.version) ?? this.#parse(buf.subarray(pos, pos + frame));
    // A QoS>0 PUBLISH carries a non-zero Packet Identifier (spec 2.2.1).
    if (packet.cmd === "publish" && packet.qos > 0 && packet.messageId === 0) {
      throw new MqttError(RC.PROTOCOL_ERROR, "PUBLISH with Packet Identifier 0");
    }
    return packet;
  }

  /** mqtt-packet's reading of one whole frame. */
  #parse(frame: Buffer): Packet {
    const parser = this.#parser ??= this.#newParser();
    this.#parsed.length = 0;
    this.#error = undefined;
    try {
      parser.parse(frame);
    } catch (err) {
      this.#error ??= err instanceof Error ? err : new Error(String(err));
    }
    const packet = this.#parsed[0];
    const count = this.#parsed.length;
    this.#parsed.length = 0;
    // After an error or a frame that did not come out as one packet it may hold half of one.
    if (this.#error !== undefined || count !== 1) this.#parser = undefined;
    if (this.#error !== undefined) {
      throw new MqttError(RC.MALFORMED_PACKET, `malformed packet: ${this.#error.message}`);
    }
    if (packet === undefined || count !== 1) {
      throw new MqttError(RC.MALFORMED_PACKET, "malformed packet: length does not match contents");
    }
    // mqtt-packet gives -1 for an acknowledgement too short to hold its Packet Identifier.
    if ((packet as { messageId?: number }).messageId === -1) {
      throw new MqttError(
        RC.MALFORMED_PACKET,
        `malformed packet: ${packet.cmd.toUpperCase()} without a packet identifier`,
      );
    }
    return packet;
  }

  #newParser(): FrameParser {
    const parser = newMqttPacketParser({ protocolVersion: this.version }) as unknown as FrameParser;
    parser.on("packet", (p) => this.#parsed.push(p));
    parser.on("error", (e) => {
      this.#error ??= e;
    });
    return parser;
  }
}

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
