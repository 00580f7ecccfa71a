/**
 * kill -9 while a persistent session drains a large backlog (issue 19): 100,000 messages,
 * QoS 1 and QoS 2 alternating, are queued for an offline subscriber in `commit`
 * durability; it comes back and Ferry (a child process) is killed with SIGKILL twice
 * times in the middle of the drain, each time after a seeded number of deliveries, and
 * restarted on the same files. In the end every message has arrived and no QoS 2 message
 * twice, for a receiver that keeps its side of the QoS 2 state across connections as a
 * conformant client must (method B: an id it answered with PUBREC is remembered until
 * PUBREL) — the case where a re-sent PUBLISH under the same packet id is a duplicate.
 *
 * FERRY_CRASH_SEED=<seed> repeats the kill schedule (printed).
 */
import { afterAll, expect, setDefaultTimeout, test } from "bun:test";
import type { Packet } from "mqtt-packet";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrokerProcess, spawnBroker } from "./helpers/broker-process.ts";
import { prng } from "./helpers/fuzz-packets.ts";
import { MqttPeer } from "./helpers/mqtt-peer.ts";

setDefaultTimeout(180_000);

const SEED = Number(process.env.FERRY_CRASH_SEED ?? Math.floor(Math.random() * 2 ** 31));
console.log(`crash-recovery-backlog: seed ${SEED} (repeat with FERRY_CRASH_SEED=${SEED})`);

const TOTAL = 100_000;
const KILLS = 2;
const TOPIC = "backlog/t";

const dir = mkdtempSync(join(tmpdir(), "ferry-backlog-"));
const running = new Set<BrokerProcess>();
afterAll(async () => {
  for (const b of running) await b.kill();
  rmSync(dir, { recursive: true, force: true });
});

async function start(): Promise<BrokerProcess> {
  const b = await spawnBroker({
    dataDir: join(dir, "data"),
    startTimeoutMs: 60_000,
    config: {
      log_level: "warn",
      storage: { durability: "commit" },
      mqtt: { sys_interval: 0, max_queued_messages: 1_000_000, max_queued_bytes: 1024 * 1024 * 1024 },
    },
  });
  running.add(b);
  return b;
}

async function kill(b: BrokerProcess): Promise<void> {
  await b.kill("SIGKILL");
  running.delete(b);
}

const seqOf = (payload: Buffer | Uint8Array | string) => Number(payload.toString());

/** The subscriber: counts deliveries per message, QoS 2 by method B across connections. */
class Receiver {
  peer: MqttPeer | undefined;
  readonly times = new Uint8Array(TOTAL);
  distinct = 0;
  /** Deliveries on the current connection. */
  seen = 0;
  readonly awaitingRelease = new Set<number>();
  #waiter: (() => void) | undefined;

  async attach(port: number): Promise<boolean> {
    const { peer, connack } = await MqttPeer.connect(port, 5, {
      clientId: "backlog-sub",
      clean: false,
      properties: { sessionExpiryInterval: 3600 },
    });
    expect(connack.reasonCode).toBe(0);
    this.peer = peer;
    this.seen = 0;
    peer.onPacket = (p) => this.#handle(peer, p);
    return connack.sessionPresent;
  }

  /** Resolves once `cond` holds, checked after each packet (or when the connection ends). */
  until(cond: () => boolean, ms = 120_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out: ${this.distinct} of ${TOTAL} arrived`)), ms);
      const check = () => {
        if (cond()) {
          clearTimeout(timer);
          this.#waiter = undefined;
          resolve();
        }
      };
      this.#waiter = check;
      check();
    });
  }

  #handle(peer: MqttPeer, p: Packet): void {
    if (p.cmd === "publish") {
      const id = p.messageId ?? 0;
      if (p.qos < 2 || !this.awaitingRelease.has(id)) {
        const seq = seqOf(p.payload);
        if (this.times[seq] === 0) this.distinct++;
        this.times[seq] = Math.min(255, this.times[seq]! + 1);
        this.seen++;
      }
      if (p.qos === 2) {
        this.awaitingRelease.add(id);
        peer.send({ cmd: "pubrec", messageId: id });
      } else peer.send({ cmd: "puback", messageId: id });
    } else if (p.cmd === "pubrel") {
      this.awaitingRelease.delete(p.messageId ?? 0);
      peer.send({ cmd: "pubcomp", messageId: p.messageId ?? 0 });
    }
    this.#waiter?.();
  }
}

/** Publish TOTAL messages (even seq QoS 1, odd QoS 2) with up to `window` unacknowledged. */
async function publishBacklog(port: number, window = 500): Promise<void> {
  const { peer } = await MqttPeer.connect(port, 5, { clientId: "backlog-pub", clean: true });
  let next = 0;
  let done = 0;
  const inflight = new Map<number, number>(); // packet id → qos
  let finished!: () => void;
  const all = new Promise<void>((r) => (finished = r));
  const fill = () => {
    while (next < TOTAL && inflight.size < window) {
      const seq = next++;
      const id = (seq % 60_000) + 1;
      const qos = seq % 2 === 0 ? 1 : 2;
      inflight.set(id, qos);
      peer.send({ cmd: "publish", topic: TOPIC, payload: String(seq), qos, messageId: id, dup: false, retain: false });
    }
  };
  peer.onPacket = (p) => {
    const id = "messageId" in p ? p.messageId ?? 0 : 0;
    if (p.cmd === "pubrec") {
      expect(p.reasonCode ?? 0).toBe(0);
      peer.send({ cmd: "pubrel", messageId: id });
      return;
    }
    if (p.cmd !== "puback" && p.cmd !== "pubcomp") return;
    expect(p.reasonCode ?? 0).toBe(0);
    inflight.delete(id);
    done++;
    if (done === TOTAL) finished();
    else fill();
  };
  fill();
  await all;
  await peer.disconnect();
}

test(`kill -9 twice while a persistent session drains ${TOTAL} queued QoS 1/2 messages: none lost, no QoS 2 message twice [MQTT-4.3.3-6] [MQTT-4.4.0-1]`, async () => {
  const rng = prng(SEED).next;
  const r = new Receiver();
  let broker = await start();
  expect(await r.attach(broker.port)).toBe(false);
  const sub = r.peer!;
  const suback = sub.next((p): p is Extract<Packet, { cmd: "suback" }> => p.cmd === "suback");
  sub.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "backlog/#", qos: 2 }] });
  expect((await suback).granted).toEqual([2]);
  await sub.disconnect();

  let t = performance.now();
  const lap = (what: string) => {
    const now = performance.now();
    console.log(`crash-recovery-backlog: ${what} ${((now - t) / 1000).toFixed(1)} s`);
    t = now;
  };
  await publishBacklog(broker.port);
  lap("publish");

  const killedAfter: number[] = [];
  for (let k = 0; k < KILLS; k++) {
    // Back online: part of the backlog arrives, then the broker dies mid-drain.
    expect(await r.attach(broker.port)).toBe(true);
    const target = Math.min(Math.floor(TOTAL / (KILLS + 1)), 2_000 + Math.floor(rng() * 15_000));
    await r.until(() => r.seen >= target || r.distinct === TOTAL);
    killedAfter.push(r.seen);
    lap("drain part");
    await kill(broker);
    await r.peer!.closed;
    broker = await start();
    lap("restart");
  }
  console.log(`crash-recovery-backlog: killed after ${killedAfter.join(", ")} deliveries on each connection`);

  expect(await r.attach(broker.port)).toBe(true);
  await r.until(() => r.distinct === TOTAL);
  // The in-flight re-sends at the end of the drain come in before the PINGRESP.
  const pong = r.peer!.next((p): p is Extract<Packet, { cmd: "pingresp" }> => p.cmd === "pingresp");
  r.peer!.send({ cmd: "pingreq" });
  await pong;

  const twice: number[] = [];
  for (let seq = 1; seq < TOTAL; seq += 2) if (r.times[seq]! > 1) twice.push(seq);
  expect(twice).toEqual([]);
  expect(r.distinct).toBe(TOTAL);
  await r.peer!.disconnect();
  await kill(broker);
});
