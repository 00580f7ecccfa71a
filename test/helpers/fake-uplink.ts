/**
 * The in-process tier for the uplink's logic: an UplinkLink driven by an in-memory log
 * (a LogPort), a scripted cloud (CloudClient) and a manual clock. For backoff, ack
 * timeout, rate limit, pacing, failover and cursor rules; the real-socket tests against
 * mosquitto stay in test/uplink*.test.ts.
 */
import mqttPacket from "mqtt-packet";
import { validateConfig } from "../../src/config/load.ts";
import type { UplinkConfig } from "../../src/config/schema.ts";
import type { Logger } from "../../src/core/logger.ts";
import type { Message } from "../../src/store/store.ts";
import type {
  CloseDetail,
  CloudClient,
  CloudConnectOptions,
  CloudHandlers,
  CloudIncoming,
  CloudPublish,
} from "../../src/sync/cloud-client.ts";
import type { LocalPublishPort, LogPort } from "../../src/sync/log-port.ts";
import { UplinkLink } from "../../src/sync/uplink-link.ts";
import { ManualClock, settle } from "./manual-clock.ts";

export interface SentPublish extends CloudPublish {
  /** Settle it: undefined = PUBACK 0, a number = PUBACK with that reason code. */
  ack(code?: number): void;
  acked: boolean;
}

export class FakeConnection implements CloudClient {
  readonly sent: SentPublish[] = [];
  closed = false;
  /** Each holdReads(ms) the link asked for, with how many PUBLISHes were sent by then. */
  readonly holds: Array<{ ms: number; sent: number }> = [];
  /** Present when the fake stands for Ferry's own client (cloud-socket-client.ts): the link then encodes. */
  readonly publishEncoded: ((bytes: Uint8Array, qos: 0 | 1 | 2, done: (err?: Error) => void) => void) | undefined;

  constructor(
    readonly url: string,
    readonly handlers: CloudHandlers,
    readonly receiveMaximum: number,
    protocolVersion: 4 | 5,
    encoded: boolean,
  ) {
    this.publishEncoded = encoded
      ? (bytes, qos, done) => {
        const p = parsePublish(bytes, protocolVersion);
        if (p.qos !== qos) throw new Error(`publishEncoded: QoS ${qos} given for a QoS ${p.qos} PUBLISH`);
        this.publish(p, done);
      }
      : undefined;
  }

  publish(p: CloudPublish, done: (err?: Error) => void): void {
    const s: SentPublish = {
      ...p,
      acked: false,
      ack: (code) => {
        if (s.acked || this.closed) return;
        s.acked = true;
        if (code === undefined || code < 0x80) done();
        else done(Object.assign(new Error(`PUBACK 0x${code.toString(16)}`), { code }));
      },
    };
    this.sent.push(s);
  }

  subscribe(subs: Array<{ filter: string; qos: 0 | 1 | 2 }>): Promise<number[]> {
    return Promise.resolve(subs.map((s) => s.qos));
  }

  holdReads(ms: number): void {
    this.holds.push({ ms, sent: this.sent.length });
  }

  close(): void {
    this.closed = true;
  }

  /** The cloud ends the connection (optionally with a DISCONNECT reason). */
  drop(reason = "connection closed", detail?: CloseDetail): void {
    if (this.closed) return;
    this.closed = true;
    this.handlers.onClose(reason, detail);
  }

  /** Acknowledge everything not yet acknowledged. */
  ackAll(): void {
    for (const s of [...this.sent]) if (!s.acked) s.ack(); // not the ones the acks make it send
  }

  get unacked(): number {
    return this.sent.filter((s) => !s.acked).length;
  }

  deliver(m: Omit<CloudIncoming, "ack">): Promise<number> {
    return new Promise((resolve) => this.handlers.onMessage({ ...m, ack: resolve }));
  }
}

/** The PUBLISH in `bytes`, as mqtt-packet parses it (so as a cloud broker would see it). */
function parsePublish(bytes: Uint8Array, protocolVersion: 4 | 5): CloudPublish {
  const parser = mqttPacket.parser({ protocolVersion });
  const packets: mqttPacket.Packet[] = [];
  parser.on("packet", (p) => packets.push(p));
  parser.on("error", (err) => {
    throw err;
  });
  parser.parse(Buffer.from(bytes));
  const p = packets[0];
  if (packets.length !== 1 || p?.cmd !== "publish") throw new Error("publishEncoded: not one whole PUBLISH");
  const out: CloudPublish = {
    topic: p.topic,
    payload: new Uint8Array(p.payload as Buffer),
    qos: p.qos,
    retain: p.retain,
    dup: p.dup,
  };
  if (p.properties !== undefined) out.properties = p.properties as CloudPublish["properties"];
  return out;
}

/** The cloud: which URLs accept connections, and every connection made. */
export class FakeCloud {
  readonly attempts: string[] = [];
  readonly connections: FakeConnection[] = [];
  /** URLs that refuse (connect rejects); everything else accepts. */
  readonly down = new Set<string>();
  receiveMaximum = 65_535;
  /** Options of the last attempt. */
  lastOptions: CloudConnectOptions | undefined;

  /**
   * `encoded`: connections take PUBLISHes the link encoded (as Ferry's own client for mqtt://
   * and mqtts:// does) rather than objects (the MQTT.js client, for ws:// and wss://).
   */
  constructor(private readonly encoded = true) {}

  connect = (o: CloudConnectOptions, h: CloudHandlers): Promise<CloudClient> => {
    this.attempts.push(o.url);
    this.lastOptions = o;
    if (this.down.has(o.url)) return Promise.reject(new Error("connect ECONNREFUSED"));
    const c = new FakeConnection(o.url, h, this.receiveMaximum, o.protocolVersion, this.encoded);
    this.connections.push(c);
    return Promise.resolve(c);
  };

  get current(): FakeConnection | undefined {
    const c = this.connections.at(-1);
    return c && !c.closed ? c : undefined;
  }

  /** Every publish on every connection, in order. */
  get sent(): SentPublish[] {
    return this.connections.flatMap((c) => c.sent);
  }
}

/** An in-memory log with the port the uplink reads it through. */
export class MemoryLog implements LogPort {
  readonly messages: Message[] = [];
  readonly cursors = new Map<string, number>();
  readonly counters: Record<string, number> = {};
  readonly saved: Record<string, number>;
  readonly lines: string[] = [];
  readonly logger: Logger;
  #next = 1;

  constructor(readonly clock: ManualClock, saved: Record<string, number> = {}) {
    this.saved = saved;
    const line = (level: string) => (m: string) => void this.lines.push(`${level} ${m}`);
    this.logger = { debug: line("debug"), info: line("info"), warn: line("warn"), error: line("error") };
  }

  readLog(from: number, limit: number): Promise<Message[]> {
    return Promise.resolve(this.messages.filter((m) => m.offset >= from).slice(0, limit));
  }

  saveCursor(name: string, offset: number): Promise<void> {
    this.cursors.set(name, offset);
    return Promise.resolve();
  }

  savedCursors(): Record<string, number> {
    return Object.fromEntries(this.cursors);
  }

  deleteCursors(names: readonly string[]): Promise<void> {
    for (const n of names) this.cursors.delete(n);
    return Promise.resolve();
  }

  saveCounters(values: Record<string, number>): Promise<void> {
    Object.assign(this.counters, values);
    return Promise.resolve();
  }

  savedCounters(): Record<string, number> {
    return this.saved;
  }

  nextOffset(): number {
    return this.#next;
  }

  /** Log a message (as the broker does after its commit) and hand it to the link. */
  append(link: UplinkLink | undefined, topic: string, payload: string, origin = "dev"): Message {
    const m: Message = {
      offset: this.#next++,
      topic,
      payload: new TextEncoder().encode(payload),
      qos: 1,
      retain: false,
      receivedAt: this.clock.now(),
      origin,
    };
    this.messages.push(m);
    link?.onLogged(m);
    return m;
  }
}

export class FakeLocal implements LocalPublishPort {
  readonly injected: Message[] = [];
  topicProblem(topic: string): string | undefined {
    return topic.includes("#") || topic.includes("+") ? "topic name contains a wildcard" : undefined;
  }
  /** Topics under private/ are denied to everyone (a stand-in for the local ACL). */
  mayPublish(_subject: { username: string | undefined; clientId: string }, topic: string): boolean {
    return !topic.startsWith("private/");
  }
  inject(message: Message): Promise<void> {
    this.injected.push(message);
    return Promise.resolve();
  }
}

export interface Harness {
  clock: ManualClock;
  log: MemoryLog;
  cloud: FakeCloud;
  local: FakeLocal;
  link: UplinkLink;
  config: UplinkConfig;
  /** Publish locally: logged and handed to the link. */
  publish(topic: string, payload: string, origin?: string): Message;
  advance(ms: number): Promise<void>;
}

export function uplinkHarness(
  uplink: Record<string, unknown> = {},
  opts: {
    saved?: Record<string, number>;
    start?: boolean;
    backlog?: Array<[string, string]>;
    /** "objects": the cloud client takes PUBLISH objects (MQTT.js); by default it takes encoded bytes. */
    client?: "encoded" | "objects";
  } = {},
): Harness {
  const config = validateConfig({
    edge_id: "edge1",
    uplinks: [{
      name: "cloud",
      url: "mqtt://a.example:1883",
      forward: [{ filter: "sensors/#", topic: "site/${edge_id}/${topic}", qos: 1 }],
      backoff: { min_ms: 100, max_ms: 1600, jitter: 0 },
      ...uplink,
    }],
  }).uplinks[0]!;
  const clock = new ManualClock();
  const log = new MemoryLog(clock, opts.saved);
  const cloud = new FakeCloud(opts.client !== "objects");
  const local = new FakeLocal();
  const link = new UplinkLink(config, {
    log,
    local,
    edgeId: "edge1",
    logId: () => "log1",
    connect: cloud.connect,
    readFile: () => Promise.reject(new Error("no files in this test")),
  });
  for (const [t, p] of opts.backlog ?? []) log.append(undefined, t, p);
  const h: Harness = {
    clock,
    log,
    cloud,
    local,
    link,
    config,
    publish: (topic, payload, origin) => log.append(link, topic, payload, origin),
    advance: (ms) => clock.advance(ms),
  };
  if (opts.start !== false) link.start(0);
  return h;
}

export { settle };
