/**
 * Makes an MQTT.js client cheaper to send through, for the uplink's drain.
 *
 * Why (issue 14): draining a backlog, half of Ferry's CPU went into MQTT.js's way of writing.
 * It encodes each packet field by field into the socket's Node stream (mqtt-packet's
 * `writeToStream`: eight or more `stream.write` calls per PUBLISH, each going through the
 * Writable machinery), and it copies every QoS 1/2 PUBLISH into its outgoing store so that it
 * could re-send it after a reconnect. The uplink turns MQTT.js's reconnect off and re-sends
 * from its own durable cursor, so that copy is never used.
 *
 * So: each packet is encoded into one buffer by Ferry's codec (src/mqtt/codec.ts: the same
 * bytes mqtt-packet writes), and the PUBLISHes and acks of one tick go to the stream in one
 * `write` at its end (MQTT.js corks the stream for the tick, which gathers them too, but
 * through a Writable operation per field). And the outgoing store keeps nothing: `put` keeps
 * no copy, `del` hands back what it was given.
 *
 * Both replace internals of MQTT.js (its `_writePacket` method, the `outgoingStore` option's
 * contract as client.js uses it); `test/unit/mqtt-js-writes.test.ts` checks that they still
 * apply to the installed version. If a later MQTT.js lacks `_writePacket`, the client is left
 * as it is: slower, still correct.
 */
import type { MqttClient } from "mqtt";
import { encode } from "../mqtt/codec.ts";
import type { Packet, ProtocolVersion } from "../mqtt/packets.ts";

/** The parts of MqttClient this replaces or uses. */
interface ClientInternals {
  _writePacket?: (packet: Packet, cb?: () => void) => void;
  noop: () => void;
  stream: {
    write(chunk: Uint8Array): boolean;
    once(event: "drain", fn: () => void): void;
  };
  emit(event: "packetsend", packet: Packet): boolean;
}

/** The packets whose writes are gathered until the end of the tick; others go at once. */
const GATHERED = new Set(["publish", "puback", "pubrec", "pubrel", "pubcomp"]);

/** True when the client now writes each packet in one piece. */
export function writeWholePackets(client: MqttClient, version: ProtocolVersion): boolean {
  const c = client as unknown as ClientInternals;
  if (typeof c._writePacket !== "function") return false;
  let pending: Uint8Array[] = [];
  let bytes = 0;
  let waiting: Array<() => void> = [];
  const flush = () => {
    if (pending.length === 0) return;
    const chunk = pending.length === 1 ? pending[0]! : concat(pending, bytes);
    const callbacks = waiting;
    pending = [];
    bytes = 0;
    waiting = [];
    const written = c.stream.write(chunk);
    // As MQTT.js does: callbacks wait for the stream to drain when it is full.
    if (!written && callbacks.length > 0) c.stream.once("drain", () => callbacks.forEach((cb) => cb()));
    else for (const cb of callbacks) cb();
  };
  c._writePacket = (packet, cb) => {
    c.emit("packetsend", packet);
    const encoded = encode(packet, version);
    if (pending.length === 0) queueMicrotask(flush);
    pending.push(encoded);
    bytes += encoded.byteLength;
    if (cb && cb !== c.noop) waiting.push(cb);
    else cb?.();
    // CONNECT, SUBSCRIBE, PINGREQ, DISCONNECT…: written now (after what was gathered, in
    // order), so that one followed by the end of the stream in the same tick is not lost.
    if (!GATHERED.has(packet.cmd)) flush();
  };
  return true;
}

function concat(parts: Uint8Array[], bytes: number): Uint8Array {
  const out = Buffer.allocUnsafe(bytes);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/**
 * An outgoing store for MQTT.js that keeps no copies (the uplink re-sends from its cursor,
 * never from MQTT.js's store). `createStream` is an empty stream as the default store's is
 * when empty: taken from `base`, a fresh default store.
 */
export function nonRetainingStore<S extends { put: unknown; del: unknown }>(base: S): S {
  return Object.assign(base, {
    put(_packet: unknown, cb?: () => void) {
      cb?.();
      return base;
    },
    del(packet: unknown, cb?: (err: Error | null, packet: unknown) => void) {
      cb?.(null, packet);
      return base;
    },
  });
}
