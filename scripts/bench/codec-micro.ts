#!/usr/bin/env bun
/**
 * Micro-benchmark of the MQTT codec's hot path: mqtt-packet alone ("old") against the
 * hand-written fast path of src/mqtt/fast-path.ts ("new"), in one process, no sockets.
 *
 *   bun scripts/bench/codec-micro.ts [--packets 100000] [--payload 64] [--rounds 7] [--chunk 65536]
 *
 * decode: a byte stream of N QoS 1 PUBLISH (one topic per publisher, `--payload` bytes)
 *   interleaved with N PUBACK, as a fan-in broker receives them, fed through a fresh
 *   PacketReader in `--chunk`-byte pieces (packets straddle chunk boundaries as on TCP).
 * encode: encode() of N PUBACK and N QoS 1 PUBLISH packets shaped as the core builds them.
 *
 * Each case runs `--rounds` times after a warm-up; the median is reported in ns per
 * packet. Old and new alternate so that machine noise hits both alike.
 */
import mqttPacket from "mqtt-packet";
import { encode, encodeWithMqttPacket, PacketReader } from "../../src/mqtt/codec.ts";
import type { Packet, ProtocolVersion } from "../../src/mqtt/packets.ts";

function arg(name: string, fallback: number): number {
  const i = Bun.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(Bun.argv[i + 1]) : fallback;
}
const N = arg("packets", 100_000);
const PAYLOAD = arg("payload", 64);
const ROUNDS = arg("rounds", 7);
const CHUNK = arg("chunk", 65_536);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

/** Median ns per packet of `fn` (which handles `packets` packets per call), old vs new alternated. */
function compare(label: string, packets: number, oldFn: () => number, newFn: () => number): void {
  // Warm-up, and a check that both did the same amount of work.
  const a = oldFn();
  const b = newFn();
  if (a !== b) throw new Error(`${label}: old path saw ${a}, new path ${b}`);
  oldFn();
  newFn();
  const olds: number[] = [];
  const news: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    let t = Bun.nanoseconds();
    oldFn();
    olds.push((Bun.nanoseconds() - t) / packets);
    t = Bun.nanoseconds();
    newFn();
    news.push((Bun.nanoseconds() - t) / packets);
  }
  const o = median(olds);
  const n = median(news);
  console.log(
    `${label.padEnd(44)} old ${o.toFixed(1).padStart(7)} ns/packet   new ${n.toFixed(1).padStart(7)} ns/packet   ${
      (o / n).toFixed(2)
    }x`,
  );
}

// ---- decode ----------------------------------------------------------------------------

function decodeStream(version: ProtocolVersion): { chunks: Uint8Array[]; packets: number } {
  const frames: Uint8Array[] = [];
  if (version === 5) {
    frames.push(
      mqttPacket.generate({ cmd: "connect", protocolVersion: 5, clientId: "bench", clean: true, keepalive: 60 }),
    );
  }
  const payload = Buffer.alloc(PAYLOAD, 0x61);
  for (let i = 0; i < N; i++) {
    const messageId = (i % 65535) + 1;
    frames.push(mqttPacket.generate({
      cmd: "publish",
      topic: `bench/fanin/publisher-${i % 100}`,
      payload,
      qos: 1,
      messageId,
      dup: false,
      retain: false,
    }, { protocolVersion: version }));
    const ack: Packet = { cmd: "puback", messageId };
    if (version === 5) ack.reasonCode = 0;
    frames.push(mqttPacket.generate(ack, { protocolVersion: version }));
  }
  const stream = Buffer.concat(frames);
  const chunks: Uint8Array[] = [];
  for (let i = 0; i < stream.byteLength; i += CHUNK) chunks.push(stream.subarray(i, i + CHUNK));
  return { chunks, packets: frames.length };
}

function decodeAll(chunks: Uint8Array[], fastPath: boolean): number {
  const reader = new PacketReader(1 << 20, { fastPath });
  let count = 0;
  for (const c of chunks) count += reader.push(c).length;
  return count;
}

// ---- encode ----------------------------------------------------------------------------

function encodeAll(make: (i: number) => Packet, version: ProtocolVersion, fn: typeof encode): number {
  let bytes = 0;
  for (let i = 0; i < N; i++) bytes += fn(make(i), version).byteLength;
  return bytes;
}

const payload = new Uint8Array(PAYLOAD).fill(0x62);
/** A PUBLISH as src/core/outbound-encoder.ts builds it (a Uint8Array payload, no v5 properties). */
const publish = (i: number): Packet => ({
  cmd: "publish",
  topic: "bench/fanin/publisher-7",
  payload: payload as unknown as Buffer,
  qos: 1,
  retain: false,
  dup: false,
  messageId: (i % 65535) + 1,
});
/** An acknowledgement as ClientConnection#ackPacket builds it. */
const puback = (version: ProtocolVersion) => (i: number): Packet =>
  version === 5
    ? { cmd: "puback", messageId: (i % 65535) + 1, reasonCode: 0 }
    : { cmd: "puback", messageId: (i % 65535) + 1 };

console.log(
  `codec micro-benchmark: ${N} PUBLISH (QoS 1, ${PAYLOAD} B payload) + ${N} PUBACK, ${CHUNK} B chunks, median of ${ROUNDS} rounds (${Bun.version})`,
);
for (const version of [4, 5] as const) {
  const { chunks, packets } = decodeStream(version);
  compare(
    `decode v${version} PUBLISH+PUBACK stream`,
    packets,
    () => decodeAll(chunks, false),
    () => decodeAll(chunks, true),
  );
}
for (const version of [4, 5] as const) {
  compare(
    `encode v${version} PUBACK`,
    N,
    () => encodeAll(puback(version), version, encodeWithMqttPacket),
    () => encodeAll(puback(version), version, encode),
  );
  compare(
    `encode v${version} PUBLISH QoS 1 (${PAYLOAD} B)`,
    N,
    () => encodeAll(publish, version, encodeWithMqttPacket),
    () => encodeAll(publish, version, encode),
  );
}
