/**
 * kill -9 at random moments, at the broker level: Ferry runs as a child process in
 * `commit` durability on a data directory that survives it, is killed with SIGKILL
 * while publishers stream numbered QoS 1 and QoS 2 messages, and is restarted on the
 * same files (on a new port) several times. Then every acknowledged message must
 * reach every persistent subscriber, QoS 2 ones exactly once, retained messages and
 * subscriptions must still be there, and in-flight outbound messages must be
 * re-sent with DUP.
 *
 * The kill moments come from a seeded PRNG; the seed is printed, and
 * FERRY_CRASH_SEED=<seed> repeats the same schedule.
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { IPublishPacket, IPubrelPacket, Packet } from "mqtt-packet";
import { Database } from "bun:sqlite";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrokerProcess, spawnBroker } from "./helpers/broker-process.ts";
import { MqttPeer } from "./helpers/mqtt-peer.ts";
import { prng as seededRng } from "./helpers/fuzz-packets.ts";

setDefaultTimeout(25_000);

const SEED = Number(process.env.FERRY_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));
console.log(`crash-recovery: seed ${SEED} (repeat with FERRY_CRASH_SEED=${SEED})`);

/** mulberry32 from the fuzz helpers: the same sequence for the same seed. */
const prng = (seed: number): () => number => seededRng(seed).next;

const scratch: string[] = [];
const running = new Set<BrokerProcess>();
afterAll(async () => {
  for (const b of running) await b.kill();
  for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
});

function tempDataDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "ferry-crash-"));
  scratch.push(dir);
  return join(dir, "data");
}

async function start(dataDir: string, mqtt: Record<string, unknown> = {}): Promise<BrokerProcess> {
  const broker = await spawnBroker({
    dataDir,
    config: {
      log_level: "warn",
      storage: { durability: "commit" },
      // Queues grow over the rounds while subscribers are away; none may be dropped.
      mqtt: { sys_interval: 0, max_queued_messages: 1_000_000, ...mqtt },
    },
  });
  running.add(broker);
  return broker;
}

async function kill(broker: BrokerProcess): Promise<void> {
  await broker.kill("SIGKILL");
  running.delete(broker);
  expect(broker.proc.signalCode).toBe("SIGKILL");
}

const persistentConnect = (version: 4 | 5, clientId: string) =>
  version === 5 ? { clientId, clean: false, properties: { sessionExpiryInterval: 3600 } } : { clientId, clean: false };

const isPublish = (p: IPublishPacket | IPubrelPacket): p is IPublishPacket => p.cmd === "publish";

const text = (payload: string | Buffer | Uint8Array) =>
  typeof payload === "string" ? payload : new TextDecoder().decode(payload);

/**
 * A receiving client that keeps its side of the session across connections, as a
 * conformant client must: QoS 2 uses method B, so a packet id it answered with PUBREC
 * is remembered until PUBREL and a PUBLISH re-using it is not delivered again
 * [MQTT-4.3.3-?]. A second delivery of a QoS 2 payload is therefore the broker's fault.
 */
class Receiver {
  peer: MqttPeer | undefined;
  /** Times each payload was handed to the application, per topic. */
  readonly delivered = new Map<string, number>();
  readonly awaitingRelease = new Set<number>();
  readonly log: Array<IPublishPacket | IPubrelPacket> = [];
  /** false: receive but acknowledge nothing (to leave messages in flight). */
  acking = true;
  #waiters: Array<() => void> = [];

  constructor(readonly clientId: string, readonly version: 4 | 5) {}

  async attach(port: number, extra: Record<string, unknown> = {}): Promise<boolean> {
    const { peer, connack } = await MqttPeer.connect(port, this.version, {
      ...persistentConnect(this.version, this.clientId),
      ...extra,
    });
    expect(connack.reasonCode ?? connack.returnCode).toBe(0);
    this.peer = peer;
    peer.onPacket = (p) => this.#handle(p);
    return connack.sessionPresent;
  }

  async subscribe(subscriptions: Array<{ topic: string; qos: 0 | 1 | 2 }>): Promise<void> {
    const peer = this.peer!;
    const ack = peer.next((p): p is Extract<Packet, { cmd: "suback" }> => p.cmd === "suback");
    peer.send({ cmd: "subscribe", messageId: 1, subscriptions });
    expect((await ack).granted).toEqual(subscriptions.map((s) => s.qos));
  }

  count(topic: string, payload: string): number {
    return this.delivered.get(`${topic} ${payload}`) ?? 0;
  }

  /** Resolves once `cond` holds (checked after every packet). */
  until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const last = this.log.at(-1);
        reject(
          new Error(
            `${this.clientId}: timed out waiting for ${what} (${this.log.length} packets, last ${last?.cmd} ${last?.messageId})`,
          ),
        );
      }, ms);
      const check = () => {
        if (cond()) {
          clearTimeout(timer);
          resolve();
        } else this.#waiters.push(check);
      };
      check();
    });
  }

  #handle(p: Packet): void {
    const peer = this.peer!;
    if (p.cmd === "publish") {
      this.log.push(p);
      const id = p.messageId ?? 0;
      const fresh = p.qos < 2 || !this.awaitingRelease.has(id);
      if (fresh) {
        const key = `${p.topic} ${text(p.payload)}`;
        this.delivered.set(key, (this.delivered.get(key) ?? 0) + 1);
      }
      if (p.qos === 2) this.awaitingRelease.add(id);
      if (this.acking && p.qos === 1) peer.send({ cmd: "puback", messageId: id });
      if (this.acking && p.qos === 2) peer.send({ cmd: "pubrec", messageId: id });
    } else if (p.cmd === "pubrel") {
      this.log.push(p);
      if (this.acking) {
        this.awaitingRelease.delete(p.messageId ?? 0);
        peer.send({ cmd: "pubcomp", messageId: p.messageId ?? 0 });
      }
    }
    for (const w of this.#waiters.splice(0)) w();
  }
}

interface Sent {
  seq: number;
  topic: string;
  qos: 1 | 2;
  retain: boolean;
  payload: string;
  /** QoS 2: PUBREC came back, PUBREL is what remains. */
  released: boolean;
}

/**
 * A publisher with a persistent session that keeps up to `window` messages
 * unacknowledged and, after a reconnect, re-sends its unacknowledged PUBLISHes with
 * DUP and the same packet ids and its outstanding PUBRELs [MQTT-4.4.0-1]. Packet ids
 * are never reused within the test, so none can be mistaken for another message.
 */
class Publisher {
  peer: MqttPeer | undefined;
  readonly pending = new Map<number, Sent>();
  /** Every message by seq. */
  readonly sent: Sent[] = [];
  /** Seqs whose PUBACK / PUBREC (success) arrived, and during which broker run. */
  readonly ackedInRun = new Map<number, number>();
  run = 0;
  producing = false;
  #nextId = 1;
  #idle: Array<() => void> = [];

  constructor(
    readonly clientId: string,
    readonly version: 4 | 5,
    readonly window: number,
    readonly choose: (seq: number, clientId: string) => { topic: string; qos: 1 | 2; retain: boolean },
  ) {}

  async attach(port: number, run: number): Promise<boolean> {
    const { peer, connack } = await MqttPeer.connect(
      port,
      this.version,
      persistentConnect(this.version, this.clientId),
    );
    expect(connack.reasonCode ?? connack.returnCode).toBe(0);
    this.peer = peer;
    this.run = run;
    peer.onPacket = (p) => this.#handle(p);
    for (const [id, m] of this.pending) {
      if (m.released) peer.send({ cmd: "pubrel", messageId: id });
      else this.#publish(id, m, true);
    }
    return connack.sessionPresent;
  }

  produce(): void {
    this.producing = true;
    this.#pump();
  }

  /** Resolves when nothing is pending any more. */
  drained(): Promise<void> {
    if (this.pending.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  #pump(): void {
    while (
      this.producing && this.pending.size < this.window && this.#nextId < 65_000 && this.peer && !this.peer.isClosed
    ) {
      const seq = this.sent.length;
      const { topic, qos, retain } = this.choose(seq, this.clientId);
      const m: Sent = { seq, topic, qos, retain, payload: `${this.clientId}:${seq}`, released: false };
      this.sent.push(m);
      const id = this.#nextId++;
      this.pending.set(id, m);
      this.#publish(id, m, false);
    }
  }

  #publish(id: number, m: Sent, dup: boolean): void {
    this.peer!.send({
      cmd: "publish",
      topic: m.topic,
      payload: m.payload,
      qos: m.qos,
      retain: m.retain,
      dup,
      messageId: id,
    });
  }

  #handle(p: Packet): void {
    const id = "messageId" in p ? p.messageId ?? 0 : 0;
    const m = this.pending.get(id);
    const code = "reasonCode" in p ? p.reasonCode ?? 0 : 0;
    if (p.cmd === "puback" && m?.qos === 1) {
      expect(code).toBeLessThan(0x80);
      this.ackedInRun.set(m.seq, this.run);
      this.pending.delete(id);
    } else if (p.cmd === "pubrec" && m?.qos === 2) {
      expect(code).toBeLessThan(0x80);
      if (!this.ackedInRun.has(m.seq)) this.ackedInRun.set(m.seq, this.run);
      m.released = true;
      this.peer!.send({ cmd: "pubrel", messageId: id });
    } else if (p.cmd === "pubcomp" && m?.released) {
      this.pending.delete(id);
    } else return;
    if (this.pending.size === 0) { for (const r of this.#idle.splice(0)) r(); }
    this.#pump();
  }
}

const SUBSCRIPTIONS = [{ topic: "crash/q1", qos: 1 as const }, { topic: "crash/q2", qos: 2 as const }];
const ROUNDS = 5;

describe("kill -9 at random moments (commit durability)", () => {
  test("every acknowledged message reaches every persistent subscriber, QoS 2 exactly once; retained messages and sessions survive with Session Present 1 [MQTT-4.3.3-6] [MQTT-4.4.0-1] [MQTT-3.2.2-3] (3.1.1: [MQTT-3.2.2-2])", async () => {
    const rng = prng(SEED);
    const dataDir = tempDataDir();
    const choose = (seq: number, clientId: string) => {
      if (seq % 10 === 0) return { topic: `crash/retained/${clientId}/${seq}`, qos: 1 as const, retain: true };
      return rng() < 0.5
        ? { topic: "crash/q1", qos: 1 as const, retain: false }
        : { topic: "crash/q2", qos: 2 as const, retain: false };
    };
    const publishers = [new Publisher("pub-311", 4, 100, choose), new Publisher("pub-v5", 5, 100, choose)];
    const offline = [new Receiver("sub-311", 4), new Receiver("sub-v5", 5)];
    // Connected while the broker is killed, so the kills also land mid-delivery.
    const live = new Receiver("live-v5", 5);
    const receivers = [...offline, live];

    let broker = await start(dataDir);
    for (const r of receivers) {
      expect(await r.attach(broker.port)).toBe(false);
      await r.subscribe(SUBSCRIPTIONS);
    }
    for (const r of offline) await r.peer!.disconnect();

    const killedAfter: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      if (round > 0) {
        broker = await start(dataDir);
        // The subscription made before the first kill is still there [MQTT-3.2.2-3].
        expect(await live.attach(broker.port)).toBe(true);
      }
      for (const p of publishers) {
        expect(await p.attach(broker.port, round)).toBe(round > 0);
        p.produce();
      }
      const ms = Math.round(80 + rng() * 420);
      killedAfter.push(ms);
      await Bun.sleep(ms); // the random kill moment: not an assertion, nothing waits on it
      for (const p of publishers) p.producing = false;
      await kill(broker);
      for (const peer of [...publishers, live].map((c) => c.peer!)) await peer.closed;
    }

    // Last start: publishers finish what is outstanding (re-sending with DUP), and no more.
    broker = await start(dataDir);
    for (const p of publishers) expect(await p.attach(broker.port, ROUNDS)).toBe(true);
    await Promise.all(publishers.map((p) => p.drained()));
    const end = new Publisher("pub-end", 5, 1, () => ({ topic: "crash/q1", qos: 1, retain: false }));
    await end.attach(broker.port, ROUNDS);
    end.produce();
    end.producing = false;
    await end.drained();

    const ackedBeforeAKill = publishers.reduce(
      (n, p) => n + [...p.ackedInRun.values()].filter((r) => r < ROUNDS).length,
      0,
    );
    console.log(
      `crash-recovery: kills after ${
        killedAfter.join(", ")
      } ms; ${ackedBeforeAKill} messages acknowledged before a kill`,
    );
    expect(ackedBeforeAKill).toBeGreaterThan(0);

    for (const r of receivers) {
      // Every persistent session, including the offline ones, was kept [MQTT-3.2.2-3].
      expect(await r.attach(broker.port)).toBe(true);
      await r.until(() => r.count("crash/q1", "pub-end:0") > 0, "the end marker");
    }

    for (const p of publishers) {
      for (const m of p.sent) {
        if (m.retain) continue;
        for (const r of receivers) {
          const n = r.count(m.topic, m.payload);
          // Acknowledged (all were, in the end): delivered; QoS 2 exactly once.
          if (n === 0 || (m.qos === 2 && n !== 1)) {
            const seen = r.log.filter(isPublish).filter((x) => text(x.payload) === m.payload)
              .map((x) => `PUBLISH id ${x.messageId} dup ${x.dup}`);
            throw new Error(
              `${r.clientId} got ${m.payload} (QoS ${m.qos}, acknowledged in run ${
                p.ackedInRun.get(m.seq)
              }) ${n} times: ${seen.join("; ")}`,
            );
          }
        }
      }
    }
    // Nothing arrived that was never published.
    const published = new Set(publishers.flatMap((p) => p.sent.map((m) => `${m.topic} ${m.payload}`)));
    for (const r of receivers) {
      for (const key of r.delivered.keys()) if (!key.endsWith("pub-end:0")) expect(published.has(key)).toBe(true);
    }

    // Retained messages: every one acknowledged is still there, with its payload.
    const retained = publishers.flatMap((p) => p.sent.filter((m) => m.retain));
    expect(retained.length).toBeGreaterThan(0);
    const { peer } = await MqttPeer.connect(broker.port, 5, { clientId: "retained-check" });
    const got = new Map<string, string>();
    peer.onPacket = (p) => {
      if (p.cmd === "publish") got.set(p.topic, text(p.payload));
    };
    // A retained marker published now: its copy is queued behind every retained message of
    // the first subscription (their bodies are read from the store after the restart), so
    // once it arrives, all of those have.
    const marker = "crash-check/marker";
    peer.send({ cmd: "publish", topic: marker, payload: "end", qos: 1, retain: true, dup: false, messageId: 2 });
    await peer.next((p): p is Extract<Packet, { cmd: "puback" }> => p.cmd === "puback");
    peer.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "crash/retained/#", qos: 0 }] });
    peer.send({ cmd: "subscribe", messageId: 3, subscriptions: [{ topic: marker, qos: 0 }] });
    await peer.next((p): p is Extract<Packet, { cmd: "publish" }> => p.cmd === "publish" && p.topic === marker);
    got.delete(marker);
    for (const m of retained) expect(got.get(m.topic)).toBe(m.payload);
    expect(got.size).toBe(retained.length);
    await peer.disconnect();
    await kill(broker);
  });
});

describe("kill -9 with outbound messages in flight", () => {
  for (const version of [4, 5] as const) {
    test(`v${version === 4 ? "3.1.1" : "5"}: unacknowledged QoS 1/2 messages are re-sent with DUP and their packet ids, PUBREC'd QoS 2 only get PUBREL [MQTT-4.4.0-1] [MQTT-3.3.1-1] [MQTT-4.3.3-6]`, async () => {
      const dataDir = tempDataDir();
      const mqtt = { max_inflight: 10 };
      let broker = await start(dataDir, mqtt);
      const topics = { 1: `inflight/${version}/q1`, 2: `inflight/${version}/q2` } as const;
      const sub = new Receiver(`inflight-sub-${version}`, version);
      expect(await sub.attach(broker.port)).toBe(false);
      await sub.subscribe([{ topic: topics[1], qos: 1 }, { topic: topics[2], qos: 2 }]);
      sub.acking = false;

      const total = 30;
      const pub = new Publisher(`inflight-pub-${version}`, 5, total, (seq) => {
        const qos = seq % 2 === 0 ? 1 : 2;
        return { topic: topics[qos], qos, retain: false };
      });
      await pub.attach(broker.port, 0);
      pub.produce();
      pub.producing = false;
      await pub.drained();

      // The broker sends max_inflight (10) and holds the rest back.
      await sub.until(() => sub.log.length >= 10, "10 PUBLISHes");
      const inflight = sub.log.filter(isPublish);
      expect(inflight.length).toBe(10);
      expect(inflight.every((p) => !p.dup)).toBe(true);
      // Answer half of the QoS 2 ones with PUBREC and take the PUBREL, but never PUBCOMP.
      const recd = inflight.filter((p) => p.qos === 2).slice(0, 3);
      expect(recd.length).toBe(3);
      for (const p of recd) sub.peer!.send({ cmd: "pubrec", messageId: p.messageId! });
      await sub.until(() => sub.log.filter((p) => p.cmd === "pubrel").length === recd.length, "PUBRELs");
      // Every delivery-sent write was queued before this publish, and commits are FIFO:
      // its PUBACK means they are durable.
      const barrier = new Publisher(
        `inflight-barrier-${version}`,
        5,
        1,
        () => ({ topic: "barrier", qos: 1, retain: false }),
      );
      await barrier.attach(broker.port, 0);
      barrier.produce();
      barrier.producing = false;
      await barrier.drained();

      await kill(broker);
      await sub.peer!.closed;
      broker = await start(dataDir, mqtt);
      const before = sub.log.length;
      sub.acking = true;
      expect(await sub.attach(broker.port)).toBe(true);
      const payloads = pub.sent.map((m) => m);
      await sub.until(() => payloads.every((m) => sub.count(m.topic, m.payload) > 0), `all ${total} messages`);

      const after = sub.log.slice(before);
      const recdIds = new Set(recd.map((p) => p.messageId));
      for (const p of inflight) {
        if (recdIds.has(p.messageId)) {
          // Past PUBREC: the PUBREL again, and never the PUBLISH [MQTT-4.3.3-6].
          expect(after.some((x) => x.cmd === "pubrel" && x.messageId === p.messageId)).toBe(true);
          expect(after.filter(isPublish).some((x) => text(x.payload) === text(p.payload))).toBe(false);
        } else {
          // Re-sent first, with DUP and the original packet id [MQTT-4.4.0-1] [MQTT-3.3.1-1].
          const again = after.filter(isPublish).find((x) => text(x.payload) === text(p.payload));
          expect(again).toBeDefined();
          expect(again!.dup).toBe(true);
          expect(again!.messageId).toBe(p.messageId);
          expect(again!.qos).toBe(p.qos);
        }
      }
      // The re-sends come before anything new.
      const firstNew = after.findIndex((x) => isPublish(x) && !x.dup);
      const lastDup = after.findLastIndex((x) => isPublish(x) && x.dup);
      expect(firstNew).toBeGreaterThan(lastDup);
      // QoS 2 exactly once, QoS 1 at least once.
      for (const m of pub.sent) {
        if (m.qos === 2) expect(sub.count(m.topic, m.payload)).toBe(1);
        else expect(sub.count(m.topic, m.payload)).toBeGreaterThanOrEqual(1);
      }
      await sub.peer!.disconnect();
      await kill(broker);
    });
  }
});

describe("a database file Ferry did not write", () => {
  for (
    const [what, make] of [
      ["random bytes", () => crypto.getRandomValues(new Uint8Array(8192))],
      ["another program's SQLite database", () => {
        const path = join(tmpdir(), `ferry-foreign-${process.pid}.db`);
        const db = new Database(path);
        db.exec("CREATE TABLE readings (t INTEGER, v REAL); INSERT INTO readings VALUES (1, 2.5);");
        db.close();
        const bytes = readFileSync(path);
        rmSync(path);
        return new Uint8Array(bytes);
      }],
    ] as const
  ) {
    test(`${what}: the broker refuses to start and leaves the file byte for byte`, async () => {
      const dataDir = tempDataDir();
      mkdirSync(dataDir, { recursive: true });
      const file = join(dataDir, "ferry.db");
      const bytes = make();
      writeFileSync(file, bytes);
      const failure = await start(dataDir).then(() => undefined, (error: Error) => error);
      expect(failure?.message).toMatch(/exited \(1\) before listening[\s\S]*refusing/);
      expect(new Uint8Array(readFileSync(file))).toEqual(bytes);
      expect(readdirSync(dataDir)).toEqual(["ferry.db"]);
    });
  }
});
