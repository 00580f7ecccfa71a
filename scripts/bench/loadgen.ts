#!/usr/bin/env bun
/**
 * MQTT load generator for broker benchmarks: raw TCP (Bun.connect), packets encoded
 * once with mqtt-packet and patched in place (packet id, send timestamp, sequence),
 * incoming bytes framed by the fixed header only. It is meant to cost far less CPU
 * per message than the broker it drives, so that the broker is the bottleneck.
 *
 *   npx bun scripts/bench/loadgen.ts throughput --port 1883 --pubs 4 --subs 1 --qos 1 \
 *       [--payload 64] [--duration 5] [--warmup 1] [--window 2000] [--pub-window 64] \
 *       [--rate 0] [--rate-per-pub 0] [--device] [--keepalive 0] [--seed 1] [--broker-pid PID] [--v5]
 *   npx bun scripts/bench/loadgen.ts idle --port 1883 --connections 10000 [--hold 3] [--broker-pid PID]
 *   npx bun scripts/bench/loadgen.ts retained --port 1883 --count 10000 [--payload 64] [--broker-pid PID]
 *
 * Prints one JSON object (the result) as the last line of stdout; progress on stderr.
 *
 * Flow control in `throughput` mode is closed-loop: publishers stop while more than
 * `--window` published messages have not yet reached every subscriber, so a broker is
 * driven at the highest rate it sustains without building unbounded queues (which
 * would make either broker drop messages at its queue limit). QoS 1/2 publishers also
 * keep at most `--pub-window` unacknowledged publishes each. With `--rate R` the
 * publishers instead send R msg/s in total on a 1 ms schedule (open loop), which is
 * how latency is measured. `--rate-per-pub R` is the same, per publisher: each sends R msg/s
 * on its own schedule, whose phase is drawn at random (seeded by `--seed`) so that many
 * slow publishers do not fire in lock-step.
 *
 * Two ways of writing:
 * - batched (the default): up to 64 KiB of PUBLISHes per socket write, the window refilled
 *   in bursts. It finds a broker's ceiling, but hands it a whole window per read.
 * - `--device`: what device clients (MQTT.js, Paho, embedded stacks) do. One PUBLISH per
 *   socket write; a QoS 1/2 publisher refills its window one publish per PUBACK/PUBCOMP, as
 *   the ack is read; subscribers send one PUBACK per write. Bun 1.4.4 issues one sendto per
 *   `socket.write` (checked with strace, also inside the data callback) and sets TCP_NODELAY;
 *   the kernel may still join segments (tcp_autocorking), so the result counts the data
 *   segments each side really sent (`ss -ti` data_segs_out, before and after the run).
 *
 * Every payload starts with 12 bytes: send time (µs since the loadgen started, u32),
 * publisher index (u32) and sequence number (u32). Subscribers use them for latency,
 * and to count duplicates and out-of-order deliveries per publisher. Publishers also keep the
 * time each packet id was written, for the ack latency (PUBLISH written → PUBACK/PUBCOMP read).
 */
import mqttPacket from "mqtt-packet";
import type { Socket } from "bun";
import { readdirSync, readFileSync } from "node:fs";

// ---------------------------------------------------------------------------------
// small utilities

const T0 = performance.now();
/** Microseconds since start, wrapped to u32 (enough for 71 minutes). */
const nowUs = () => Math.round((performance.now() - T0) * 1000) >>> 0;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const log = (msg: string) => process.stderr.write(`[loadgen] ${msg}\n`);

export function gen(packet: Record<string, unknown>, version: 4 | 5): Uint8Array {
  const b = mqttPacket.generate(packet as unknown as mqttPacket.Packet, { protocolVersion: version });
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** Offset just past the fixed header of an encoded packet. */
function headerLength(bytes: Uint8Array): number {
  let i = 1;
  while ((bytes[i]! & 0x80) !== 0) i++;
  return i + 1;
}

export interface ProcSample {
  /** CPU seconds (user + system) of the process so far, all threads, dead ones included (10 ms steps). */
  cpu: number;
  /** CPU seconds of the threads alive now, summed from /proc/PID/task/TID/schedstat (ns resolution). */
  cpuSched: number;
  /** write_bytes from /proc/PID/io (bytes the process caused to be written to storage). */
  writeBytes: number;
  /** wchar: bytes passed to write()-like calls. */
  wchar: number;
  /** syscr / syscw: read- and write-like system calls (sockets included). */
  syscr: number;
  syscw: number;
  rssKb: number;
  hwmKb: number;
}

const CLK_TCK = 100;

/** Read CPU, I/O and memory counters of a process from /proc (Linux). */
export function sampleProc(pid: number): ProcSample {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // After the comm field: state is index 0, utime index 11, stime index 12.
  const cpu = (Number(f[11]) + Number(f[12])) / CLK_TCK;
  const io = readFileSync(`/proc/${pid}/io`, "utf8");
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const num = (text: string, key: string) => Number(new RegExp(`^${key}:\\s+(\\d+)`, "m").exec(text)?.[1] ?? NaN);
  return {
    cpu,
    cpuSched: schedSeconds(pid),
    writeBytes: num(io, "write_bytes"),
    wchar: num(io, "wchar"),
    syscr: num(io, "syscr"),
    syscw: num(io, "syscw"),
    rssKb: num(status, "VmRSS"),
    hwmKb: num(status, "VmHWM"),
  };
}

/**
 * Time on CPU of the live threads of a process, summed from schedstat (ns). Finer than
 * /proc/PID/stat's clock ticks, which matters at 1 % of a core; misses threads that exited.
 */
export function schedSeconds(pid: number): number {
  const threads = schedSecondsByThread(pid);
  if (threads === undefined) return NaN;
  let total = 0;
  for (const t of threads.values()) total += t.seconds;
  return total;
}

/**
 * Time on CPU of each live thread of a process, by thread id, with its name (the event
 * loop's thread, whose id is the pid, is named "event loop"); undefined once it has exited.
 */
export function schedSecondsByThread(pid: number): Map<number, { name: string; seconds: number }> | undefined {
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return undefined;
  }
  const out = new Map<number, { name: string; seconds: number }>();
  for (const t of tasks) {
    try {
      const tid = Number(t);
      const ns = Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, "utf8").split(" ", 1)[0]);
      const name = tid === pid ? "event loop" : readFileSync(`/proc/${pid}/task/${t}/comm`, "utf8").trim();
      out.set(tid, { name, seconds: ns / 1e9 });
    } catch {
      // the thread exited meanwhile
    }
  }
  return out;
}

/** Busy and total CPU seconds of the whole machine, from /proc/stat. */
export function systemCpu(): { busy: number; total: number } {
  const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!;
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0); // idle + iowait
  return { busy: (total - idle) / CLK_TCK, total: total / CLK_TCK };
}

function selfCpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/** A small seeded PRNG (mulberry32), so that both brokers get the same publisher phases. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Data segments sent so far on each loopback TCP connection to or from `port`. */
export interface Segments {
  /** Client side: our local port → data_segs_out. */
  client: Map<number, number>;
  /** Broker side: the client's port → data_segs_out. */
  broker: Map<number, number>;
}

/**
 * Read data_segs_out (segments that carried data, tcp_info) of every established
 * connection on `port` with `ss -ti`; null where ss is missing or does not report it.
 */
export async function segments(port: number): Promise<Segments | null> {
  let text: string;
  try {
    const p = Bun.spawn(["ss", "-tinH", "state", "established", `( sport = :${port} or dport = :${port} )`], {
      stdout: "pipe",
      stderr: "ignore",
    });
    text = await new Response(p.stdout).text();
    if ((await p.exited) !== 0) return null;
  } catch {
    return null;
  }
  const out: Segments = { client: new Map(), broker: new Map() };
  let ports: [number, number] | null = null;
  let seen = false;
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue;
    if (!/^\s/.test(line)) {
      // "Recv-Q Send-Q local:port peer:port"
      const f = line.trim().split(/\s+/);
      const port = (a: string | undefined) => Number(a?.slice(a.lastIndexOf(":") + 1));
      ports = [port(f.at(-2)), port(f.at(-1))];
      continue;
    }
    const m = /\bdata_segs_out:(\d+)/.exec(line);
    if (ports === null || m === null) continue;
    seen = true;
    const [local, peer] = ports;
    if (local === port) out.broker.set(peer, Number(m[1]));
    else out.client.set(local, Number(m[1]));
    ports = null;
  }
  return seen ? out : null;
}

export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}

// ---------------------------------------------------------------------------------
// connections

export const PUBLISH = 3, PUBACK = 4, PUBREC = 5, PUBREL = 6, PUBCOMP = 7, CONNACK = 2, SUBACK = 9, DISCONNECT = 14;
/** Longest packet prefix the parser ever needs in one piece (fixed header + topic + id + 12 payload bytes). */
const PREFIX_MAX = 1024;

interface Events {
  /** A PUBLISH arrived; `p` indexes its payload in `buf`, of which at least min(12, len) bytes are present. */
  publish(c: Conn, qos: number, id: number, retain: boolean, buf: Uint8Array, p: number, len: number): void;
  /** PUBACK / PUBREC / PUBCOMP for one of our publishes. */
  ack(c: Conn, type: number, id: number): void;
  /** After a chunk of input was handled and the acks it caused were written. */
  afterData(c: Conn): void;
  drained(c: Conn): void;
}

const noEvents: Events = { publish() {}, ack() {}, afterData() {}, drained() {} };

export class Conn {
  socket!: Socket<undefined>;
  version: 4 | 5 = 4;
  /** Start of a packet whose prefix straddles reads. */
  carry: Uint8Array | null = null;
  /** Bytes of the current (large) packet still to be skipped. */
  skip = 0;
  /** Acknowledgements produced while handling one read, written together (unless ackEach). */
  acks = new Uint8Array(16 * 1024);
  ackLen = 0;
  /** Device-like: each acknowledgement in its own write. */
  ackEach = false;
  queue: Uint8Array[] = [];
  blocked = false;
  closed = false;
  /** Publisher state. */
  inflight = 0;
  sent = 0;
  acked = 0;
  nextId = 1;
  used = new Uint8Array(65536);
  /** When each packet id in flight was written (nowUs), for the ack latency. */
  sentAt: Uint32Array | null = null;
  index = 0;
  /** Open loop per publisher: this publisher's offset from the common start, µs. */
  phaseUs = 0;
  /** The socket's local port (read while open: it is gone after close). */
  localPort = 0;
  /** Subscriber state. */
  received = 0;
  lastSeq: Int32Array = new Int32Array(0);
  #connack: ((code: number) => void) | undefined;
  #suback: ((codes: number[]) => void) | undefined;

  constructor(public ev: Events, public name: string) {}

  static async open(host: string, port: number, ev: Events, name: string): Promise<Conn> {
    const c = new Conn(ev, name);
    c.socket = await Bun.connect({
      hostname: host,
      port,
      socket: {
        data: (_s, d) => c.onData(d),
        drain: () => c.onDrain(),
        close: () => {
          c.closed = true;
        },
        error: (_s, e) => {
          c.closed = true;
          log(`${name}: socket error ${e.message}`);
        },
      },
    });
    c.localPort = c.socket.localPort;
    return c;
  }

  /** `session`: connect with clean start off and this Session Expiry Interval (v5) instead of a clean session. */
  async connect(clientId: string, version: 4 | 5, keepalive = 0, session?: { expiry: number }): Promise<void> {
    this.version = version;
    const done = new Promise<number>((r) => (this.#connack = r));
    const clean = session === undefined;
    const properties = !clean && version === 5 ? { properties: { sessionExpiryInterval: session.expiry } } : {};
    this.send(
      gen(
        { cmd: "connect", protocolId: "MQTT", protocolVersion: version, clientId, clean, keepalive, ...properties },
        version,
      ),
    );
    const code = await done;
    if (code !== 0) throw new Error(`${this.name}: CONNACK ${code}`);
  }

  async subscribe(filter: string, qos: number): Promise<void> {
    const done = new Promise<number[]>((r) => (this.#suback = r));
    this.send(gen({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: filter, qos }] }, this.version));
    const codes = await done;
    if (codes.some((c) => c >= 0x80)) throw new Error(`${this.name}: SUBACK ${codes}`);
  }

  /** Write, queueing what the kernel does not take until `drain`. Copies only on a short write. */
  send(bytes: Uint8Array): void {
    if (this.closed) return;
    if (this.blocked) {
      this.queue.push(bytes.slice());
      return;
    }
    const n = this.socket.write(bytes);
    if (n < bytes.byteLength) {
      this.queue.push(bytes.slice(Math.max(0, n)));
      this.blocked = true;
    }
  }

  onDrain(): void {
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      const n = this.socket.write(head);
      if (n < head.byteLength) {
        this.queue[0] = head.subarray(Math.max(0, n));
        return;
      }
      this.queue.shift();
    }
    this.blocked = false;
    this.ev.drained(this);
  }

  ack4(type: number, flags: number, id: number): void {
    if (this.ackLen + 4 > this.acks.length) this.flushAcks();
    const a = this.acks;
    const o = this.ackLen;
    a[o] = (type << 4) | flags;
    a[o + 1] = 2;
    a[o + 2] = id >> 8;
    a[o + 3] = id & 0xff;
    this.ackLen = o + 4;
    if (this.ackEach) this.flushAcks();
  }

  flushAcks(): void {
    if (this.ackLen === 0) return;
    this.send(this.acks.subarray(0, this.ackLen));
    this.ackLen = 0;
  }

  onData(chunk: Uint8Array): void {
    const len = chunk.byteLength;
    let off = 0;
    if (this.skip > 0) {
      if (this.skip >= len) {
        this.skip -= len;
        return;
      }
      off = this.skip;
      this.skip = 0;
    }
    if (this.carry !== null) {
      const carry = this.carry;
      const take = Math.min(len - off, PREFIX_MAX);
      const joined = new Uint8Array(carry.byteLength + take);
      joined.set(carry, 0);
      joined.set(chunk.subarray(off, off + take), carry.byteLength);
      this.carry = null;
      const f = this.frame(joined, 0, joined.byteLength);
      if (f < 0) {
        if (take === PREFIX_MAX) throw new Error(`${this.name}: packet prefix longer than ${PREFIX_MAX} bytes`);
        this.carry = joined; // chunk exhausted
        return;
      }
      const fromChunk = f - carry.byteLength;
      if (off + fromChunk > len) {
        this.skip = off + fromChunk - len;
        off = len;
      } else off += fromChunk;
    }
    while (off < len) {
      const f = this.frame(chunk, off, len);
      if (f < 0) {
        this.carry = chunk.slice(off, len);
        break;
      }
      if (off + f > len) {
        this.skip = off + f - len;
        break;
      }
      off += f;
    }
    this.flushAcks();
    this.ev.afterData(this);
  }

  /** Handle the packet at `o`; returns its full length, or -1 if its prefix is not all here. */
  frame(b: Uint8Array, o: number, end: number): number {
    let p = o + 1;
    let rem = 0;
    let mul = 1;
    let byte: number;
    do {
      if (p >= end) return -1;
      byte = b[p++]!;
      rem += (byte & 0x7f) * mul;
      mul *= 128;
    } while ((byte & 0x80) !== 0);
    const flen = p - o + rem;
    const b0 = b[o]!;
    const type = b0 >> 4;
    if (type === PUBLISH) {
      if (p + 2 > end) return -1;
      const qos = (b0 >> 1) & 3;
      let q = p + 2 + ((b[p]! << 8) | b[p + 1]!);
      let id = 0;
      if (qos > 0) {
        if (q + 2 > end) return -1;
        id = (b[q]! << 8) | b[q + 1]!;
        q += 2;
      }
      if (this.version === 5) {
        let plen = 0;
        let m = 1;
        let x: number;
        do {
          if (q >= end) return -1;
          x = b[q++]!;
          plen += (x & 0x7f) * m;
          m *= 128;
        } while ((x & 0x80) !== 0);
        q += plen;
      }
      const payloadLen = o + flen - q;
      if (q + Math.min(12, payloadLen) > end) return -1;
      this.ev.publish(this, qos, id, (b0 & 1) === 1, b, q, payloadLen);
      return flen;
    }
    if (o + flen > end) {
      if (flen > PREFIX_MAX) throw new Error(`${this.name}: unexpected ${flen}-byte packet type ${type}`);
      return -1;
    }
    const id = rem >= 2 ? (b[p]! << 8) | b[p + 1]! : 0;
    switch (type) {
      case PUBACK:
      case PUBREC:
      case PUBCOMP:
        this.ev.ack(this, type, id);
        break;
      case PUBREL:
        this.ack4(PUBCOMP, 0, id);
        break;
      case CONNACK: {
        const code = b[p + 1]!;
        this.#connack?.(code);
        this.#connack = undefined;
        break;
      }
      case SUBACK: {
        // v5: packet id, property length (varint, assume < 128), then codes.
        const start = this.version === 5 ? p + 3 + b[p + 2]! : p + 2;
        const codes = Array.from(b.subarray(start, o + flen));
        this.#suback?.(codes);
        this.#suback = undefined;
        break;
      }
      case DISCONNECT:
        log(`${this.name}: DISCONNECT from broker, reason ${rem > 0 ? b[p] : 0}`);
        break;
      default:
        break; // PINGRESP and others
    }
    return flen;
  }

  /** Next free packet id (ids still in flight are skipped). */
  takeId(): number {
    let id = this.nextId;
    while (this.used[id] === 1) id = id === 65535 ? 1 : id + 1;
    this.nextId = id === 65535 ? 1 : id + 1;
    this.used[id] = 1;
    return id;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.end();
  }
}

// ---------------------------------------------------------------------------------
// PUBLISH templates

/** A run of `count` identical encoded PUBLISH packets, patched in place per send. */
class PublishBatch {
  readonly buf: Uint8Array;
  readonly size: number;
  readonly idOff: number;
  readonly payOff: number;
  readonly topicOff: number;

  constructor(
    topic: string,
    payloadSize: number,
    qos: number,
    retain: boolean,
    version: 4 | 5,
    readonly count: number,
  ) {
    const one = gen({
      cmd: "publish",
      topic,
      payload: Buffer.alloc(payloadSize, 0x61),
      qos,
      retain,
      dup: false,
      ...(qos > 0 ? { messageId: 1 } : {}),
      ...(version === 5 ? { properties: {} } : {}),
    }, version);
    this.size = one.byteLength;
    const h = headerLength(one);
    this.topicOff = h + 2;
    this.idOff = h + 2 + topic.length;
    this.payOff = one.byteLength - payloadSize;
    this.buf = new Uint8Array(this.size * count);
    for (let i = 0; i < count; i++) this.buf.set(one, i * this.size);
  }

  /** Stamp message `i` of the batch. */
  stamp(i: number, id: number, ts: number, pub: number, seq: number): void {
    const b = this.buf;
    const base = i * this.size;
    if (id !== 0) {
      b[base + this.idOff] = id >> 8;
      b[base + this.idOff + 1] = id & 0xff;
    }
    let q = base + this.payOff;
    b[q++] = ts >>> 24;
    b[q++] = (ts >>> 16) & 0xff;
    b[q++] = (ts >>> 8) & 0xff;
    b[q++] = ts & 0xff;
    b[q++] = pub >>> 24;
    b[q++] = (pub >>> 16) & 0xff;
    b[q++] = (pub >>> 8) & 0xff;
    b[q++] = pub & 0xff;
    b[q++] = seq >>> 24;
    b[q++] = (seq >>> 16) & 0xff;
    b[q++] = (seq >>> 8) & 0xff;
    b[q] = seq & 0xff;
  }
}

function readU32(b: Uint8Array, p: number): number {
  return ((b[p]! << 24) | (b[p + 1]! << 16) | (b[p + 2]! << 8) | b[p + 3]!) >>> 0;
}

// ---------------------------------------------------------------------------------
// throughput / latency

export interface ThroughputOptions {
  host: string;
  port: number;
  pubs: number;
  subs: number;
  qos: 0 | 1 | 2;
  payload: number;
  duration: number;
  warmup: number;
  /** Closed loop: most published messages not yet received by every subscriber. */
  window: number;
  /** Most unacknowledged QoS>0 publishes per publisher. */
  pubWindow: number;
  /** Open loop: total msg/s (0 = closed loop). */
  rate: number;
  /** Open loop: msg/s of each publisher, phases at random (0 = off). */
  ratePerPub: number;
  /** Device-like: one PUBLISH per write, window refilled per ack, one PUBACK per write at subscribers. */
  device: boolean;
  /** Keep Alive in CONNECT, seconds (0 = off; the loadgen sends no PINGREQ, so keep runs shorter than 1.5×). */
  keepalive: number;
  /** Seed for the publishers' phases. */
  seed: number;
  brokerPid: number;
  version: 4 | 5;
  /** Seconds to wait for missing messages after publishing stopped. */
  drainTimeout: number;
  /** Subscribers connect with a persistent session (clean session 0; v5: expiry 1 h), so a durable broker stores their deliveries. */
  persistentSubs?: boolean;
}

export interface Latency {
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  samples: number;
}

function latency(samples: Float64Array, n: number): Latency {
  const lat = samples.subarray(0, n).sort();
  return {
    p50: percentile(lat, 0.5),
    p90: percentile(lat, 0.9),
    p99: percentile(lat, 0.99),
    p999: percentile(lat, 0.999),
    max: lat.length > 0 ? lat[lat.length - 1]! : NaN,
    samples: lat.length,
  };
}

export interface ThroughputResult {
  mode: "throughput";
  options: ThroughputOptions;
  /** Messages published (written) in total, and acknowledged (QoS>0). */
  sent: number;
  acked: number;
  /** Deliveries expected (sent × subscribers) and counted at the subscribers. */
  expected: number;
  received: number;
  lost: number;
  duplicatesOrReordered: number;
  /** Deliveries whose payload claimed a send time in the future: corrupted payloads or a loadgen bug. */
  negativeLatencies: number;
  /** Deliveries per second counted at the subscribers during the measured window. */
  deliveredPerSec: number;
  publishedPerSec: number;
  measuredSeconds: number;
  /** Delivery latency at the subscribers (from the send time, or the due time in open loop). */
  latencyMs: Latency;
  /** Ack latency at the publishers: PUBLISH written → its PUBACK (QoS 1) or PUBCOMP (QoS 2) read. */
  ackLatencyMs: Latency;
  /** CPU use during the measured window, in % of one core. */
  loadgenCpuPct: number;
  brokerCpuPct: number;
  /** Broker CPU (/proc/PID/stat) per message published in the measured window, µs. */
  brokerCpuUsPerMsg: number;
  /** The same from schedstat (ns resolution, live threads only): % of a core and µs per message. */
  brokerCpuSchedPct: number;
  brokerCpuSchedUsPerMsg: number;
  /**
   * Data segments per packet over the whole run (ss data_segs_out; null without ss):
   * publishers' segments per PUBLISH, subscribers' per PUBACK, the broker's per delivery
   * (to subscribers) and per PUBACK (to publishers). 1.0 = no two packets shared a segment.
   */
  segments: {
    perPublish: number;
    perSubscriberAck: number;
    brokerPerDelivery: number;
    brokerPerPuback: number;
  } | null;
  /** CPU used by everything else on the machine meanwhile (kernel softirq work for loopback included). */
  otherCpuPct: number;
  /** Broker write_bytes from the first publish until all deliveries were counted. */
  brokerWriteBytes: number;
  brokerWcharBytes: number;
  /**
   * Broker read()/write()-family system calls per delivered message, over the measured
   * window (/proc/PID/io syscr/syscw). Comparable only between brokers that use
   * read/write on sockets: Mosquitto does, Bun uses recv/send, which are not counted.
   */
  brokerReadCallsPerMsg: number;
  brokerWriteCallsPerMsg: number;
  brokerRssPeakKb: number;
  brokerRssEndKb: number;
}

export async function throughput(o: ThroughputOptions): Promise<ThroughputResult> {
  const tag = `${process.pid}-${Math.random().toString(36).slice(2, 6)}`;
  const pubs: Conn[] = [];
  const subs: Conn[] = [];
  const batchMax = Math.max(1, Math.min(256, Math.floor(64 * 1024 / (o.payload + 32))));
  const batches: PublishBatch[] = [];
  const samplesCap = 1 << 21;
  const samples = new Float64Array(samplesCap);
  let nSamples = 0;
  const ackSamples = new Float64Array(samplesCap);
  let nAckSamples = 0;
  const openLoop = o.rate > 0 || o.ratePerPub > 0;
  let recording = false;
  let running = false;
  let totalSent = 0;
  let totalReceived = 0;
  let disorder = 0;
  let clockErrors = 0;
  let rr = 0;
  /** Open loop: messages due so far. */
  let due = 0;
  let startUs = 0;
  // Closed loop, batched: wait until a few messages fit, so that writes are not one message each.
  const minPump = openLoop || o.device
    ? 1
    : Math.max(1, Math.min(16, batchMax, Math.floor(o.window / 8), Math.floor(o.pubWindow / 4)));
  const periodUs = o.ratePerPub > 0 ? 1e6 / o.ratePerPub : 0;
  /** Messages publisher `c` owes by `now` on its own schedule (the first at its phase). */
  const dueOf = (c: Conn, now: number): number => {
    const t = ((now - startUs) >>> 0) - c.phaseUs;
    return t < 0 ? 0 : Math.floor(t / periodUs) + 1;
  };
  // Open loop: stamp the time message `k` was due, so a broker that falls behind shows it
  // in the delivery latency (no coordinated omission). Closed loop: the time it was written.
  const stampOf = (c: Conn, k: number, ts: number): number =>
    o.ratePerPub > 0
      ? (startUs + c.phaseUs + Math.floor(k * periodUs)) >>> 0
      : o.rate > 0
      ? (startUs + Math.floor((k * 1e6) / o.rate)) >>> 0
      : ts;

  const pump = (c: Conn) => {
    if (!running || c.blocked || c.closed) return;
    let n = o.device ? Infinity : batchMax;
    const ts = nowUs();
    if (o.qos > 0) n = Math.min(n, o.pubWindow - c.inflight);
    if (o.ratePerPub > 0) n = Math.min(n, dueOf(c, ts) - c.sent);
    else if (o.rate > 0) n = Math.min(n, due - totalSent);
    else n = Math.min(n, o.window - (totalSent - Math.floor(totalReceived / o.subs)));
    if (n < minPump) return;
    const batch = batches[c.index]!;
    if (o.device) {
      // One PUBLISH per write, as a device client sends them; stop at a short write.
      for (let i = 0; i < n && !c.blocked; i++) {
        const id = o.qos > 0 ? c.takeId() : 0;
        batch.stamp(0, id, stampOf(c, o.ratePerPub > 0 ? c.sent : totalSent, ts), c.index, c.sent);
        if (c.sentAt !== null) c.sentAt[id] = nowUs();
        c.sent++;
        if (o.qos > 0) c.inflight++;
        totalSent++;
        c.send(batch.buf.subarray(0, batch.size));
      }
      return;
    }
    for (let i = 0; i < n; i++) {
      const id = o.qos > 0 ? c.takeId() : 0;
      batch.stamp(i, id, stampOf(c, o.ratePerPub > 0 ? c.sent + i : totalSent + i, ts), c.index, c.sent + i);
      if (c.sentAt !== null) c.sentAt[id] = ts;
    }
    c.sent += n;
    c.inflight += o.qos > 0 ? n : 0;
    totalSent += n;
    c.send(batch.buf.subarray(0, n * batch.size));
  };
  const pumpAll = () => {
    const k = pubs.length;
    if (!running || k === 0) return;
    for (let j = 0; j < k; j++) pump(pubs[(rr + j) % k]!);
    rr = (rr + 1) % k;
  };

  const subEvents: Events = {
    ...noEvents,
    publish(c, qos, id, _retain, b, p, len) {
      c.received++;
      totalReceived++;
      if (len >= 12) {
        const pub = readU32(b, p + 4);
        const seq = readU32(b, p + 8) | 0;
        if (pub < c.lastSeq.length) {
          if (seq <= c.lastSeq[pub]!) disorder++;
          c.lastSeq[pub] = seq;
        }
        if (recording && nSamples < samplesCap) {
          const us = (nowUs() - readU32(b, p)) | 0;
          if (us >= 0) samples[nSamples++] = us / 1000;
          else clockErrors++; // would mean a corrupted or mis-stamped payload
        }
      }
      if (qos === 1) c.ack4(PUBACK, 0, id);
      else if (qos === 2) c.ack4(PUBREC, 0, id);
    },
    afterData: () => pumpAll(),
  };
  const pubEvents: Events = {
    ...noEvents,
    ack(c, type, id) {
      if (type === PUBREC) {
        c.ack4(PUBREL, 2, id);
        return;
      }
      if (c.used[id] !== 1) return;
      c.used[id] = 0;
      c.inflight--;
      c.acked++;
      if (recording && nAckSamples < samplesCap && c.sentAt !== null) {
        ackSamples[nAckSamples++] = ((nowUs() - c.sentAt[id]!) >>> 0) / 1000;
      }
      // A device client refills its window as each ack is read, not once per read.
      if (o.device) pump(c);
    },
    afterData: (c) => pump(c),
    drained: (c) => pump(c),
  };
  const subDrained: Events = { ...subEvents, drained: () => pumpAll() };

  const device = (c: Conn) => {
    c.ackEach = o.device;
    // Bun sets TCP_NODELAY on connect already (strace); say so explicitly for device clients.
    if (o.device) c.socket.setNoDelay(true);
  };
  for (let i = 0; i < o.subs; i++) {
    const c = await Conn.open(o.host, o.port, subDrained, `sub${i}`);
    device(c);
    c.lastSeq = new Int32Array(o.pubs).fill(-1);
    await c.connect(`bench-${tag}-s${i}`, o.version, o.keepalive, o.persistentSubs ? { expiry: 3600 } : undefined);
    await c.subscribe(`bench/${tag}/+`, o.qos);
    subs.push(c);
  }
  const random = seededRandom(o.seed);
  for (let i = 0; i < o.pubs; i++) {
    const c = await Conn.open(o.host, o.port, pubEvents, `pub${i}`);
    device(c);
    c.index = i;
    if (o.qos > 0) c.sentAt = new Uint32Array(65536);
    if (o.ratePerPub > 0) c.phaseUs = Math.floor(random() * 1e6 / o.ratePerPub);
    await c.connect(`bench-${tag}-p${i}`, o.version, o.keepalive);
    pubs.push(c);
    batches.push(new PublishBatch(`bench/${tag}/${i}`, o.payload, o.qos, false, o.version, batchMax));
  }

  const seg0 = await segments(o.port);
  const b0 = sampleProc(o.brokerPid);
  running = true;
  let timer: ReturnType<typeof setInterval> | undefined;
  // One clock reading for both, so the schedule and the stamped times cannot drift apart.
  startUs = nowUs();
  if (o.rate > 0) {
    timer = setInterval(() => {
      due = Math.floor((((nowUs() - startUs) >>> 0) / 1e6) * o.rate);
      pumpAll();
    }, 1);
  } else if (o.ratePerPub > 0) {
    // Each publisher works out what it owes from the clock; 1 ms is the schedule's grain.
    timer = setInterval(pumpAll, 1);
  } else pumpAll();

  await sleep(o.warmup * 1000);
  recording = true;
  const m0 = {
    t: performance.now(),
    recv: totalReceived,
    sent: totalSent,
    cpu: selfCpu(),
    broker: sampleProc(o.brokerPid),
    sys: systemCpu(),
  };
  await sleep(o.duration * 1000);
  const m1 = {
    t: performance.now(),
    recv: totalReceived,
    sent: totalSent,
    cpu: selfCpu(),
    broker: sampleProc(o.brokerPid),
    sys: systemCpu(),
  };
  recording = false;
  running = false;
  if (timer) clearInterval(timer);

  // Drain: wait for every expected delivery and every acknowledgement.
  const expectedFinal = () => totalSent * o.subs;
  let last = totalReceived;
  let lastChange = performance.now();
  for (;;) {
    const acked = pubs.reduce((s, c) => s + c.acked, 0);
    if (totalReceived >= expectedFinal() && (o.qos === 0 || acked >= totalSent)) break;
    if (totalReceived !== last) {
      last = totalReceived;
      lastChange = performance.now();
    } else if (performance.now() - lastChange > o.drainTimeout * 1000) break;
    await sleep(20);
  }
  await sleep(100); // late duplicates
  const b1 = sampleProc(o.brokerPid);
  const seg1 = await segments(o.port);
  for (const c of [...pubs, ...subs]) c.close();

  if (totalSent === 0) {
    throw new Error("no message was published (load generator bug or broker refused every publisher)");
  }
  const secs = (m1.t - m0.t) / 1000;
  const acked = pubs.reduce((s, c) => s + c.acked, 0);
  const publishedInWindow = Math.max(1, m1.sent - m0.sent);
  /** Data segments sent over the run by these client connections (from their side, or the broker's). */
  const segs = (conns: Conn[], side: "client" | "broker"): number => {
    let n = 0;
    for (const c of conns) {
      const port = c.localPort;
      n += (seg1![side].get(port) ?? NaN) - (seg0![side].get(port) ?? NaN);
    }
    return n;
  };
  return {
    mode: "throughput",
    options: o,
    sent: totalSent,
    acked: o.qos === 0 ? totalSent : acked,
    expected: expectedFinal(),
    received: totalReceived,
    lost: Math.max(0, expectedFinal() - totalReceived),
    duplicatesOrReordered: disorder,
    negativeLatencies: clockErrors,
    deliveredPerSec: (m1.recv - m0.recv) / secs,
    publishedPerSec: (m1.sent - m0.sent) / secs,
    measuredSeconds: secs,
    latencyMs: latency(samples, nSamples),
    ackLatencyMs: latency(ackSamples, nAckSamples),
    loadgenCpuPct: ((m1.cpu - m0.cpu) / secs) * 100,
    brokerCpuPct: ((m1.broker.cpu - m0.broker.cpu) / secs) * 100,
    brokerCpuUsPerMsg: ((m1.broker.cpu - m0.broker.cpu) * 1e6) / publishedInWindow,
    brokerCpuSchedPct: ((m1.broker.cpuSched - m0.broker.cpuSched) / secs) * 100,
    brokerCpuSchedUsPerMsg: ((m1.broker.cpuSched - m0.broker.cpuSched) * 1e6) / publishedInWindow,
    segments: seg0 === null || seg1 === null ? null : {
      // The CONNECT and SUBSCRIBE went before the first reading.
      perPublish: segs(pubs, "client") / Math.max(1, totalSent),
      perSubscriberAck: o.qos === 0 ? NaN : segs(subs, "client") / Math.max(1, totalReceived),
      brokerPerDelivery: segs(subs, "broker") / Math.max(1, totalReceived),
      brokerPerPuback: o.qos === 0 ? NaN : segs(pubs, "broker") / Math.max(1, acked),
    },
    otherCpuPct: ((m1.sys.busy - m0.sys.busy - (m1.broker.cpu - m0.broker.cpu) - (m1.cpu - m0.cpu)) / secs) * 100,
    brokerWriteBytes: b1.writeBytes - b0.writeBytes,
    brokerWcharBytes: b1.wchar - b0.wchar,
    brokerReadCallsPerMsg: (m1.broker.syscr - m0.broker.syscr) / Math.max(1, m1.recv - m0.recv),
    brokerWriteCallsPerMsg: (m1.broker.syscw - m0.broker.syscw) / Math.max(1, m1.recv - m0.recv),
    brokerRssPeakKb: b1.hwmKb,
    brokerRssEndKb: b1.rssKb,
  };
}

// ---------------------------------------------------------------------------------
// idle connections

export interface IdleOptions {
  host: string;
  port: number;
  connections: number;
  /** Seconds to hold the connections open before reading the broker's memory. */
  hold: number;
  brokerPid: number;
  version: 4 | 5;
  /** Connections being set up at once. */
  concurrency: number;
}

export interface IdleResult {
  mode: "idle";
  options: IdleOptions;
  connected: number;
  failed: number;
  connectSeconds: number;
  brokerRssBeforeKb: number;
  brokerRssKb: number;
  brokerRssPeakKb: number;
  kbPerConnection: number;
  brokerCpuSecondsIdle: number;
  loadgenRssKb: number;
}

export async function idle(o: IdleOptions): Promise<IdleResult> {
  const tag = `${process.pid}-${Math.random().toString(36).slice(2, 6)}`;
  const before = sampleProc(o.brokerPid);
  const conns: Conn[] = [];
  let failed = 0;
  let next = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < o.connections) {
      const i = next++;
      try {
        const c = await Conn.open(o.host, o.port, noEvents, `idle${i}`);
        await c.connect(`bench-${tag}-i${i}`, o.version);
        conns.push(c);
      } catch (err) {
        if (failed++ < 3) log(`connection ${i} failed: ${(err as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: o.concurrency }, worker));
  const connectSeconds = (performance.now() - t0) / 1000;
  log(`${conns.length} connected in ${connectSeconds.toFixed(1)} s`);
  const h0 = sampleProc(o.brokerPid);
  await sleep(o.hold * 1000);
  const after = sampleProc(o.brokerPid);
  const alive = conns.filter((c) => !c.closed).length;
  for (const c of conns) c.close();
  await sleep(200);
  return {
    mode: "idle",
    options: o,
    connected: alive,
    failed: failed + (conns.length - alive),
    connectSeconds,
    brokerRssBeforeKb: before.rssKb,
    brokerRssKb: after.rssKb,
    brokerRssPeakKb: after.hwmKb,
    kbPerConnection: (after.rssKb - before.rssKb) / Math.max(1, alive),
    brokerCpuSecondsIdle: after.cpu - h0.cpu,
    loadgenRssKb: Math.round(process.memoryUsage().rss / 1024),
  };
}

// ---------------------------------------------------------------------------------
// retained storm

export interface RetainedOptions {
  host: string;
  port: number;
  count: number;
  payload: number;
  pubWindow: number;
  brokerPid: number;
  version: 4 | 5;
  timeout: number;
}

export interface RetainedResult {
  mode: "retained";
  options: RetainedOptions;
  /** Publishing `count` retained QoS 1 messages until the last PUBACK. */
  publishSeconds: number;
  /** From SUBSCRIBE `#` until the last retained message arrived. */
  stormSeconds: number;
  received: number;
  lost: number;
  deliveredPerSec: number;
  brokerWriteBytes: number;
  brokerRssPeakKb: number;
  brokerRssEndKb: number;
  brokerCpuSeconds: number;
  loadgenCpuSeconds: number;
}

export async function retained(o: RetainedOptions): Promise<RetainedResult> {
  const tag = `${process.pid}-${Math.random().toString(36).slice(2, 6)}`;
  const width = String(o.count - 1).length;
  const batchMax = Math.max(1, Math.min(64, Math.floor(64 * 1024 / (o.payload + 32))));
  const prefix = `bench/${tag}/r/`;
  const batch = new PublishBatch(`${prefix}${"0".repeat(width)}`, o.payload, 1, true, o.version, batchMax);
  let sent = 0;
  let acked = 0;
  let done: () => void = () => {};
  const published = new Promise<void>((r) => (done = r));
  const pump = (c: Conn) => {
    if (c.blocked) return;
    const n = Math.min(batchMax, o.pubWindow - c.inflight, o.count - sent);
    if (n <= 0) return;
    const ts = nowUs();
    for (let i = 0; i < n; i++) {
      const k = sent + i;
      const digits = String(k).padStart(width, "0");
      const t = i * batch.size + batch.topicOff + prefix.length;
      for (let d = 0; d < width; d++) batch.buf[t + d] = digits.charCodeAt(d);
      batch.stamp(i, c.takeId(), ts, 0, k);
    }
    sent += n;
    c.inflight += n;
    c.send(batch.buf.subarray(0, n * batch.size));
  };
  const pubEvents: Events = {
    ...noEvents,
    ack(c, _type, id) {
      if (c.used[id] !== 1) return;
      c.used[id] = 0;
      c.inflight--;
      if (++acked === o.count) done();
    },
    afterData: (c) => pump(c),
    drained: (c) => pump(c),
  };
  const b0 = sampleProc(o.brokerPid);
  const cpu0 = selfCpu();
  const pub = await Conn.open(o.host, o.port, pubEvents, "rpub");
  await pub.connect(`bench-${tag}-rp`, o.version);
  const t0 = performance.now();
  pump(pub);
  await published;
  const publishSeconds = (performance.now() - t0) / 1000;
  pub.close();

  let received = 0;
  let got: () => void = () => {};
  const all = new Promise<void>((r) => (got = r));
  const sub = await Conn.open(o.host, o.port, {
    ...noEvents,
    publish(c, qos, id, retain) {
      if (retain && ++received === o.count) got();
      if (qos === 1) c.ack4(PUBACK, 0, id);
    },
  }, "rsub");
  await sub.connect(`bench-${tag}-rs`, o.version);
  const t1 = performance.now();
  const timeout = sleep(o.timeout * 1000);
  await sub.subscribe("#", 1);
  await Promise.race([all, timeout]);
  const stormSeconds = (performance.now() - t1) / 1000;
  const b1 = sampleProc(o.brokerPid);
  sub.close();
  return {
    mode: "retained",
    options: o,
    publishSeconds,
    stormSeconds,
    received,
    lost: o.count - received,
    deliveredPerSec: received / stormSeconds,
    brokerWriteBytes: b1.writeBytes - b0.writeBytes,
    brokerRssPeakKb: b1.hwmKb,
    brokerRssEndKb: b1.rssKb,
    brokerCpuSeconds: b1.cpu - b0.cpu,
    loadgenCpuSeconds: selfCpu() - cpu0,
  };
}

// ---------------------------------------------------------------------------------
// command line

function parseFlags(argv: string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith("--")) continue;
    const next = argv[i + 1];
    if (next === undefined || next.startsWith("--")) m.set(a.slice(2), "true");
    else {
      m.set(a.slice(2), next);
      i++;
    }
  }
  return m;
}

async function main(): Promise<void> {
  const mode = process.argv[2];
  const f = parseFlags(process.argv.slice(3));
  const num = (k: string, d: number) => (f.has(k) ? Number(f.get(k)) : d);
  const host = f.get("host") ?? "127.0.0.1";
  const port = num("port", 1883);
  const brokerPid = num("broker-pid", 0);
  if (!brokerPid) throw new Error("--broker-pid is required (CPU, memory and I/O are read from /proc)");
  const version = f.has("v5") ? 5 : 4;
  let result: unknown;
  if (mode === "throughput") {
    const payload = num("payload", 64);
    if (payload < 12) throw new Error("--payload must be at least 12 bytes");
    result = await throughput({
      host,
      port,
      pubs: num("pubs", 1),
      subs: num("subs", 1),
      qos: num("qos", 0) as 0 | 1 | 2,
      payload,
      duration: num("duration", 5),
      warmup: num("warmup", 1),
      window: num("window", Math.max(32, Math.min(2000, Math.floor((8 * 1024 * 1024) / payload)))),
      pubWindow: num("pub-window", 64),
      rate: num("rate", 0),
      ratePerPub: num("rate-per-pub", 0),
      device: f.has("device"),
      keepalive: num("keepalive", 0),
      seed: num("seed", 1),
      brokerPid,
      version,
      drainTimeout: num("drain-timeout", 5),
    });
  } else if (mode === "idle") {
    result = await idle({
      host,
      port,
      connections: num("connections", 10_000),
      hold: num("hold", 3),
      brokerPid,
      version,
      concurrency: num("concurrency", 200),
    });
  } else if (mode === "retained") {
    result = await retained({
      host,
      port,
      count: num("count", 10_000),
      payload: Math.max(12, num("payload", 64)),
      pubWindow: num("pub-window", 64),
      brokerPid,
      version,
      timeout: num("timeout", 60),
    });
  } else {
    console.error(
      "usage: loadgen.ts throughput|idle|retained --port N --broker-pid PID [options]; see the header comment",
    );
    process.exit(2);
  }
  console.log(JSON.stringify(result));
  process.exit(0);
}

if (import.meta.main) await main();
