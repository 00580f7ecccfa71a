/**
 * What Ferry does when its storage cannot take more, at the broker level, with Ferry
 * as a child process in `commit` durability:
 *  (a) the `storage.max_bytes` quota is reached while an offline persistent session
 *      still needs every message, so nothing can be trimmed;
 *  (b) the filesystem itself is full (a 2 MiB tmpfs; needs root to mount).
 * In both, a v5 publish is refused with 0x97 and everything that does not add a
 * message keeps working; publishing resumes without a restart once space returns.
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { Database } from "bun:sqlite";
import { spawnSync } from "bun";
import type { Packet } from "mqtt-packet";
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, rmSync, unlinkSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrokerProcess, spawnBroker } from "./helpers/broker-process.ts";
import { eventually } from "./helpers/clients.ts";
import { MqttPeer } from "./helpers/mqtt-peer.ts";

setDefaultTimeout(20_000);

const QUOTA_EXCEEDED = 0x97;

const scratch = mkdtempSync(join(tmpdir(), "ferry-full-"));
const running = new Set<BrokerProcess>();
afterAll(async () => {
  for (const b of running) await b.kill();
  rmSync(scratch, { recursive: true, force: true });
});

async function start(dataDir: string, storage: Record<string, unknown>): Promise<BrokerProcess> {
  const broker = await spawnBroker({
    dataDir,
    configPath: join(scratch, `config-${running.size}-${Date.now()}.json`),
    config: { log_level: "warn", storage: { durability: "commit", ...storage }, mqtt: { sys_interval: 0 } },
  });
  running.add(broker);
  return broker;
}

async function stop(broker: BrokerProcess, signal: NodeJS.Signals): Promise<void> {
  await broker.kill(signal);
  running.delete(broker);
}

const is = <C extends Packet["cmd"]>(cmd: C, id?: number) => (p: Packet): p is Extract<Packet, { cmd: C }> =>
  p.cmd === cmd && (id === undefined || (p as { messageId?: number }).messageId === id);

/** PUBLISH QoS 1 and wait for its PUBACK; its reason code, or "closed" if the broker hung up instead. */
async function publishQos1(
  peer: MqttPeer,
  topic: string,
  payload: Uint8Array | string,
  id: number,
  dup = false,
): Promise<number | "closed"> {
  const ack = peer.next(is("puback", id), 10_000);
  const body = typeof payload === "string" ? payload : Buffer.from(payload);
  peer.send({ cmd: "publish", topic, payload: body, qos: 1, retain: false, dup, messageId: id });
  try {
    return (await ack).reasonCode ?? 0;
  } catch (error) {
    if (peer.isClosed) return "closed";
    throw error;
  }
}

async function ping(peer: MqttPeer): Promise<void> {
  const pong = peer.next(is("pingresp"));
  peer.send({ cmd: "pingreq" });
  await pong;
}

async function subscribe(peer: MqttPeer, topic: string, qos: 0 | 1 | 2, messageId = 1): Promise<number[]> {
  const ack = peer.next(is("suback", messageId));
  peer.send({ cmd: "subscribe", messageId, subscriptions: [{ topic, qos }] });
  return (await ack).granted as number[];
}

/** Collects PUBLISHes and PUBACKs QoS 1 ones. */
function collect(peer: MqttPeer): string[] {
  const got: string[] = [];
  peer.onPacket = (p) => {
    if (p.cmd !== "publish") return;
    got.push(`${p.topic} ${new TextDecoder().decode(p.payload as Uint8Array)}`);
    if (p.qos === 1) peer.send({ cmd: "puback", messageId: p.messageId! });
  };
  return got;
}

const until = (cond: () => boolean, what: string, ms = 10_000) => eventually(cond, ms, what);

const persistent5 = (clientId: string) => ({ clientId, clean: false, properties: { sessionExpiryInterval: 3600 } });

describe("storage.max_bytes reached with every message still owed", () => {
  test("v5 QoS 1/2 publishes get 0x97 while PINGREQ, CONNECT, SUBSCRIBE, QoS 0 and acks work; 3.1.1 publishers are disconnected unacknowledged; publishing resumes once the queue drains [MQTT-3.4.2-1] [MQTT-3.5.2-1]", async () => {
    const dataDir = join(scratch, "quota");
    const broker = await start(dataDir, { max_bytes: 256 * 1024 });

    // An offline persistent session that every message is owed to: nothing can be trimmed.
    const hoarder = await MqttPeer.connect(broker.port, 5, persistent5("hoarder"));
    expect(await subscribe(hoarder.peer, "full/#", 1)).toEqual([1]);
    await hoarder.peer.disconnect();

    const { peer: pub } = await MqttPeer.connect(broker.port, 5, { clientId: "pub-v5" });
    const payload = new Uint8Array(2048).fill(0x61);
    const accepted: number[] = [];
    let refusal: number | "closed" | undefined;
    for (let id = 1; id <= 2000; id++) {
      const code = await publishQos1(pub, `full/${id}`, payload, id);
      if (code === 0) accepted.push(id);
      else {
        refusal = code;
        break;
      }
    }
    expect(refusal).toBe(QUOTA_EXCEEDED);
    expect(accepted.length).toBeGreaterThan(10);
    // Stays refused: nothing was freed.
    expect(await publishQos1(pub, "full/again", payload, 3001)).toBe(QUOTA_EXCEEDED);
    // QoS 2 too, in PUBREC; the flow ends there, no PUBREL is owed.
    const rec = pub.next(is("pubrec", 3002));
    pub.send({ cmd: "publish", topic: "full/qos2", payload: "x", qos: 2, retain: false, dup: false, messageId: 3002 });
    expect((await rec).reasonCode).toBe(QUOTA_EXCEEDED);

    // What adds no message keeps working: PINGREQ, a persistent CONNECT, SUBSCRIBE, QoS 0.
    await ping(pub);
    const watcher = await MqttPeer.connect(broker.port, 5, persistent5("watcher"));
    expect(watcher.connack.reasonCode).toBe(0);
    const watched = collect(watcher.peer);
    expect(await subscribe(watcher.peer, "full/#", 1)).toEqual([1]);
    pub.send({ cmd: "publish", topic: "full/zero", payload: "qos0", qos: 0, retain: false, dup: false });
    await until(() => watched.includes("full/zero qos0"), "the QoS 0 message");
    // The refused messages went nowhere.
    expect(watched.some((m) => m.startsWith("full/again") || m.startsWith("full/qos2"))).toBe(false);

    // MQTT 3.1.1 has no negative PUBACK: the publisher is disconnected without one, so it
    // keeps the message and re-sends it on its next connection.
    const v311 = await MqttPeer.connect(broker.port, 4, { clientId: "pub-311", clean: false });
    expect(await publishQos1(v311.peer, "full/311", "from 3.1.1", 7)).toBe("closed");

    // The hoarder comes back and acknowledges everything: its acks commit while full.
    const back = await MqttPeer.connect(broker.port, 5, persistent5("hoarder"));
    expect(back.connack.sessionPresent).toBe(true);
    const drained = collect(back.peer);
    await until(() => drained.length >= accepted.length, `${accepted.length} queued messages`);
    expect(drained.slice(0, accepted.length)).toEqual(
      accepted.map((id) => `full/${id} ${new TextDecoder().decode(payload)}`),
    );
    // Its PUBACKs were read before the PINGRESP; the writes they caused precede the next publish.
    await ping(back.peer);
    await back.peer.disconnect();

    // Room again, without a restart: the acknowledged messages are trimmed and publishing resumes.
    expect(await publishQos1(pub, "full/after", "after", 4000)).toBe(0);
    const retry = await MqttPeer.connect(broker.port, 4, { clientId: "pub-311", clean: false });
    expect(await publishQos1(retry.peer, "full/311", "from 3.1.1", 7, true)).toBe(0);
    await until(
      () => watched.includes("full/after after") && watched.includes("full/311 from 3.1.1"),
      "deliveries after the drain",
    );
    await retry.peer.disconnect();
    await pub.disconnect();
    await watcher.peer.disconnect();
    // Logged once when it filled and once when it had room again, not once per refusal.
    await until(() => broker.stderr().includes("storage has room again"), "the recovery log line");
    expect(broker.stderr().match(/ error storage full: /g)).toHaveLength(1);
    expect(broker.stderr().match(/ warn storage has room again after \d+ s; accepting publishes \(\d+ refused/g))
      .toHaveLength(1);
    await stop(broker, "SIGTERM");
  });
});

// A real full disk: a 2 MiB tmpfs. Needs root; skipped, with the reason, otherwise.
const tmpfs = join(scratch, "tmpfs");
mkdirSync(tmpfs);
const mount = spawnSync(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", tmpfs], { stderr: "pipe" });
const mounted = mount.exitCode === 0;
if (!mounted) {
  console.warn(
    `SKIP real disk-full test: cannot mount a 2 MiB tmpfs at ${tmpfs} (needs root): ${mount.stderr.toString().trim()}`,
  );
}

/** Fills `dir` with one file until ENOSPC. */
function fill(path: string): void {
  const fd = openSync(path, "w");
  try {
    for (const chunk of [256 * 1024, 4096, 1]) {
      const block = new Uint8Array(chunk).fill(1);
      for (;;) {
        try {
          writeSync(fd, block);
        } catch {
          break; // ENOSPC
        }
      }
    }
  } finally {
    closeSync(fd);
  }
}

describe("disk full", () => {
  test.skipIf(!mounted)(
    "publishes and session writes get 0x97 while QoS 0 and clean-session subscribers are served; freeing space resumes publishing without a restart; the database stays intact",
    async () => {
      let broker: BrokerProcess | undefined;
      try {
        const dataDir = join(tmpfs, "data");
        // Takes a part of the filesystem now, given back later to end the shortage.
        const filler = join(tmpfs, "filler");
        const fd = openSync(filler, "w");
        writeSync(fd, new Uint8Array(768 * 1024).fill(1));
        closeSync(fd);
        broker = await start(dataDir, {});

        const { peer: sub } = await MqttPeer.connect(broker.port, 5, { clientId: "live-sub" });
        const got = collect(sub);
        expect(await subscribe(sub, "disk/#", 1)).toEqual([1]);

        const { peer: pub } = await MqttPeer.connect(broker.port, 5, { clientId: "pub" });
        const stray: Packet[] = [];
        pub.onPacket = (p) => stray.push(p);
        const payload = new Uint8Array(8192).fill(0x62);
        const accepted: number[] = [];
        let refusal: number | "closed" | undefined;
        for (let id = 1; id <= 2000; id++) {
          const code = await publishQos1(pub, `disk/${id}`, payload, id);
          if (code === 0) accepted.push(id);
          else {
            refusal = code;
            break;
          }
          // The other part of the filesystem is taken once the database holds a few messages.
          if (id === 5) fill(join(tmpfs, "filler-rest"));
        }
        expect(refusal).toBe(QUOTA_EXCEEDED);
        expect(accepted.length).toBeGreaterThanOrEqual(5);
        const refusedId = accepted.length + 1;

        // A retained QoS 0 message cannot be stored either: it is dropped (QoS 0 is at most
        // once), with no acknowledgement (QoS 0 has none [MQTT-3.3.4-1]) and no disconnect.
        pub.send({ cmd: "publish", topic: "disk/retained", payload: "kept?", qos: 0, retain: true, dup: false });
        // Still up: PINGREQ, new connections, subscriptions and QoS 0 delivery.
        await ping(pub);
        expect(pub.isClosed).toBe(false);
        const { peer: late, connack } = await MqttPeer.connect(broker.port, 5, { clientId: "late-sub" });
        expect(connack.reasonCode).toBe(0);
        const lateGot = collect(late);
        expect(await subscribe(late, "disk/#", 0)).toEqual([0]);
        pub.send({ cmd: "publish", topic: "disk/zero", payload: "qos0", qos: 0, retain: false, dup: false });
        await until(() => got.includes("disk/zero qos0") && lateGot.includes("disk/zero qos0"), "the QoS 0 message");
        // A session that must be written cannot be: CONNACK 0x97 (3.1.1: return code 3, Server unavailable).
        const refused5 = await MqttPeer.connect(broker.port, 5, persistent5("needs-disk"));
        expect(refused5.connack.reasonCode).toBe(QUOTA_EXCEEDED);
        const refused311 = await MqttPeer.connect(broker.port, 4, { clientId: "needs-disk-311", clean: false });
        expect(refused311.connack.returnCode).toBe(3);
        await Promise.all([refused5.peer.closed, refused311.peer.closed]);
        // The publish whose commit found the disk full went to the live subscriber before
        // the commit (storage.live_delivery: immediate; its publisher got 0x97 and may re-send
        // it: QoS 1 allows the duplicate). Once the store reports itself full, a refused
        // publish goes nowhere.
        expect(await publishQos1(pub, "disk/refused-again", payload, refusedId + 1)).toBe(QUOTA_EXCEEDED);
        await ping(sub);
        expect(got.some((m) => m.startsWith("disk/refused-again "))).toBe(false);

        // Space comes back: the next publish is stored and acknowledged, no restart needed.
        unlinkSync(join(tmpfs, "filler-rest"));
        unlinkSync(filler);
        expect(await publishQos1(pub, "disk/after", "after", 5000)).toBe(0);
        await until(() => got.includes("disk/after after"), "the message published after space returned");
        expect(stray.map((p) => p.cmd)).toEqual([]);
        await pub.disconnect();
        await sub.disconnect();
        await late.disconnect();
        await stop(broker, "SIGTERM");
        expect(broker.proc.exitCode).toBe(0);

        // The database opens cleanly and holds exactly what was acknowledged.
        const db = new Database(join(dataDir, "ferry.db"), { readwrite: true });
        try {
          expect(db.query("PRAGMA integrity_check").get()).toEqual({ integrity_check: "ok" });
          const topics = db.query("SELECT topic FROM messages ORDER BY offset").all().map((r) =>
            (r as { topic: string }).topic
          );
          expect(topics).toEqual([...accepted.map((id) => `disk/${id}`), "disk/after"]);
        } finally {
          db.close();
        }
      } finally {
        if (broker) await stop(broker, "SIGKILL");
        spawnSync(["umount", tmpfs]);
      }
    },
  );
});

afterAll(() => {
  if (mounted && existsSync(tmpfs)) spawnSync(["umount", tmpfs]);
});
