import type { Message, QoS } from "./store.ts";

/**
 * A page of messages read from the log, in a binary form that crosses from the storage
 * thread to the event loop as ONE transferred ArrayBuffer: the answer to every read
 * (`readLog`, `readMessages`, `readRetained`).
 *
 * Why not the commit path's mutation lists (mutation-codec.ts), as before (issue 14): the
 * uplink drains a backlog a page of up to a thousand messages at a time, and decoding those
 * pages on the event loop was a fifth of its samples in a profile of a drain. Two strings
 * per message (topic and origin) were each decoded from UTF-8 again, although a page
 * holds a few distinct ones (the same topics over and over, one publisher or a few), and
 * each message came wrapped in an `append` mutation object that was thrown away at once.
 * Here each distinct string is written once per page and decoded once, messages refer to
 * it by index, and `decodeMessagePage` builds the Message objects and nothing else.
 * Payloads stay views into the transferred buffer (no copy): the receiver owns it.
 *
 * Layout, little-endian: u32 message count, u32 byte position of the string table; then per
 * message u8 flags (QoS in bits 0-1), f64 offset, f64 receivedAt, f64 expiresAt when
 * flagged, u32 topic index, u32 origin index, u32 payload length and the payload, u32 index
 * into `side` when it has MQTT 5 properties (structured-cloned, as they are rare); then the
 * string table: u32 count, and per string a u32 byte length and its UTF-8.
 */
export interface EncodedPage {
  buffer: ArrayBuffer;
  /** Bytes of `buffer` in use. */
  length: number;
  /** Values that travel as structured clones (message properties), referred to by index. */
  side: unknown[];
}

const F_RETAIN = 0x04;
const F_EXPIRY = 0x08;
const F_PROPS = 0x10;

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder();

/** Encodes `messages` as one page (on the storage thread). */
export function encodeMessagePage(messages: readonly Message[]): EncodedPage {
  // At most 41 bytes of fields per message besides its payload; the strings come after.
  let size = 8;
  for (const m of messages) size += 41 + m.payload.byteLength;
  let bytes = new Uint8Array(size + 256);
  let view = new DataView(bytes.buffer);
  let pos = 8;
  const strings = new Map<string, number>();
  const side: unknown[] = [];
  const index = (s: string): number => {
    let i = strings.get(s);
    if (i === undefined) {
      i = strings.size;
      strings.set(s, i);
    }
    return i;
  };
  for (const m of messages) {
    let flags = m.qos;
    if (m.retain) flags |= F_RETAIN;
    if (m.expiresAt !== undefined) flags |= F_EXPIRY;
    if (m.properties !== undefined) flags |= F_PROPS;
    bytes[pos] = flags;
    view.setFloat64(pos + 1, m.offset, true);
    view.setFloat64(pos + 9, m.receivedAt, true);
    pos += 17;
    if (m.expiresAt !== undefined) {
      view.setFloat64(pos, m.expiresAt, true);
      pos += 8;
    }
    view.setUint32(pos, index(m.topic), true);
    view.setUint32(pos + 4, index(m.origin), true);
    const n = m.payload.byteLength;
    view.setUint32(pos + 8, n, true);
    bytes.set(m.payload, pos + 12);
    pos += 12 + n;
    if (m.properties !== undefined) {
      view.setUint32(pos, side.length, true);
      side.push(m.properties);
      pos += 4;
    }
  }
  view.setUint32(0, messages.length, true);
  view.setUint32(4, pos, true);
  // The string table: UTF-8 takes at most 3 bytes per UTF-16 code unit.
  let tableSize = 4;
  for (const s of strings.keys()) tableSize += 4 + s.length * 3;
  if (pos + tableSize > bytes.byteLength) {
    const grown = new Uint8Array(pos + tableSize);
    grown.set(bytes.subarray(0, pos));
    bytes = grown;
    view = new DataView(bytes.buffer);
  }
  view.setUint32(pos, strings.size, true);
  pos += 4;
  for (const s of strings.keys()) {
    const written = utf8Encoder.encodeInto(s, bytes.subarray(pos + 4)).written;
    view.setUint32(pos, written, true);
    pos += 4 + written;
  }
  return { buffer: bytes.buffer as ArrayBuffer, length: pos, side };
}

/** The messages of a page, oldest first (on the event loop). */
export function decodeMessagePage(page: EncodedPage): Message[] {
  const bytes = new Uint8Array(page.buffer, 0, page.length);
  const view = new DataView(page.buffer, 0, page.length);
  const count = view.getUint32(0, true);
  const end = view.getUint32(4, true);
  // The strings first: each is decoded once for the whole page.
  let pos = end;
  const strings: string[] = new Array(view.getUint32(pos, true));
  pos += 4;
  for (let i = 0; i < strings.length; i++) {
    const n = view.getUint32(pos, true);
    strings[i] = utf8Decoder.decode(bytes.subarray(pos + 4, pos + 4 + n));
    pos += 4 + n;
  }
  if (pos !== page.length) throw new Error(`message page: ${page.length - pos} bytes left over`);
  const messages: Message[] = new Array(count);
  pos = 8;
  for (let i = 0; i < count; i++) {
    const flags = bytes[pos]!;
    const offset = view.getFloat64(pos + 1, true);
    const receivedAt = view.getFloat64(pos + 9, true);
    pos += 17;
    let expiresAt: number | undefined;
    if (flags & F_EXPIRY) {
      expiresAt = view.getFloat64(pos, true);
      pos += 8;
    }
    const topic = strings[view.getUint32(pos, true)];
    const origin = strings[view.getUint32(pos + 4, true)];
    const n = view.getUint32(pos + 8, true);
    pos += 12;
    if (topic === undefined || origin === undefined || pos + n > end) {
      throw new Error(`message page: message ${i} is damaged`);
    }
    // The same fields in the same order as every other Message, so they share one shape.
    const message: Message = {
      offset,
      topic,
      payload: bytes.subarray(pos, pos + n),
      qos: (flags & 3) as QoS,
      retain: (flags & F_RETAIN) !== 0,
      receivedAt,
      origin,
    };
    pos += n;
    if (expiresAt !== undefined) message.expiresAt = expiresAt;
    if (flags & F_PROPS) {
      message.properties = page.side[view.getUint32(pos, true)] as Message["properties"];
      pos += 4;
    }
    messages[i] = message;
  }
  if (pos !== end) throw new Error(`message page: ${end - pos} bytes left over`);
  return messages;
}
