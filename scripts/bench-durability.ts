/**
 * Broker-level durability figures, with Ferry as a child process (`edge/main.ts serve`)
 * driven over loopback MQTT:
 *
 *  1. bytes written to disk per 64-byte QoS 1 message (from /proc/PID/io of the broker),
 *     with a persistent subscriber offline and with no subscriber;
 *  2. QoS 1 throughput through the broker in `commit`, `periodic` and `memory`
 *     durability, the publisher keeping a window of messages unacknowledged (and QoS 2
 *     in `commit`);
 *  3. start-up time (spawn to the `listening` line) with 100,000 retained messages and
 *     100,000 messages queued for a persistent session.
 *
 *   npx bun scripts/bench-durability.ts [--dir DIR] [--messages 20000] [--window 100] [--stored 100000]
 *                                       [--parts bytes,throughput,startup]
 *
 * Put --dir on the filesystem the appliance will use. /proc/PID/io (Linux only):
 * `write_bytes` is what the kernel accounted to the broker for the block device
 * (page-cache pages dirtied, once per page until written back), `wchar` what it handed
 * to write(). Each figure comes from a fresh data directory.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Packet } from "mqtt-packet";
import { bunSqliteDriver } from "../src/runtime/bun/sqlite-driver.ts";
import { SqliteStore } from "../src/store/sqlite/sqlite-store.ts";
import type { Message, Mutation } from "../src/store/store.ts";
import { type BrokerProcess, spawnBroker } from "../test/helpers/broker-process.ts";
import { MqttPeer } from "../test/helpers/mqtt-peer.ts";

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) {
  args.set(process.argv[i]!.replace(/^--/, ""), process.argv[i + 1] ?? "");
}
const baseDir = mkdtempSync(join(args.get("dir") ?? tmpdir(), "ferry-bench-durability-"));
const count = Number(args.get("messages") ?? 20_000);
const window = Number(args.get("window") ?? 100);
const stored = Number(args.get("stored") ?? 100_000);
const parts = (args.get("parts") ?? "bytes,throughput,startup").split(",");
const payload = Buffer.alloc(64, 0x42);
const fmt = (n: number, digits = 0) => n.toLocaleString("en-US", { maximumFractionDigits: digits });

let runs = 0;
function freshDir(): string {
  const dir = join(baseDir, `run-${runs++}`);
  mkdirSync(dir);
  return join(dir, "data");
}

async function broker(dataDir: string, durability: "commit" | "periodic" | "memory"): Promise<BrokerProcess> {
  return await spawnBroker({
    dataDir,
    startTimeoutMs: 120_000,
    config: {
      log_level: "warn",
      storage: { durability },
      mqtt: { sys_interval: 0, max_queued_messages: 10_000_000 },
    },
  });
}

function procIo(pid: number): { wchar: number; writeBytes: number } {
  const text = readFileSync(`/proc/${pid}/io`, "utf8");
  const field = (name: string) => Number(new RegExp(`^${name}: (\\d+)$`, "m").exec(text)?.[1] ?? NaN);
  return { wchar: field("wchar"), writeBytes: field("write_bytes") };
}

/**
 * Publish `n` messages keeping `window` unacknowledged (QoS 2: until PUBCOMP); resolves
 * with the elapsed ms.
 */
async function publish(
  port: number,
  n: number,
  topic: (i: number) => string,
  clientId = "bench-pub",
  qos: 1 | 2 = 1,
): Promise<number> {
  const { peer } = await MqttPeer.connect(port, 5, { clientId });
  let sent = 0;
  let acked = 0;
  const t0 = performance.now();
  await new Promise<void>((resolve, reject) => {
    const send = () => {
      const id = (sent % 65_535) + 1;
      peer.send({ cmd: "publish", topic: topic(sent), payload, qos, retain: false, dup: false, messageId: id });
      sent++;
    };
    peer.onPacket = (p: Packet) => {
      if (p.cmd === "pubrec") {
        if ((p.reasonCode ?? 0) >= 0x80) return reject(new Error(`PUBREC ${p.reasonCode}`));
        return peer.send({ cmd: "pubrel", messageId: p.messageId! });
      }
      if (p.cmd !== (qos === 1 ? "puback" : "pubcomp")) return;
      if (p.cmd === "puback" && (p.reasonCode ?? 0) >= 0x80) return reject(new Error(`PUBACK ${p.reasonCode}`));
      if (++acked === n) return resolve();
      if (sent < n) send();
    };
    void peer.closed.then(() => reject(new Error("publisher disconnected")));
    while (sent < Math.min(window, n)) send();
  });
  const ms = performance.now() - t0;
  await peer.disconnect();
  return ms;
}

/** A subscriber that acknowledges everything; `received()` counts completed deliveries. */
async function subscriber(port: number, clientId: string, persistent: boolean, qos: 1 | 2 = 1) {
  const connect = persistent ? { clientId, clean: false, properties: { sessionExpiryInterval: 3600 } } : { clientId };
  const { peer } = await MqttPeer.connect(port, 5, connect);
  let received = 0;
  let waiter: { n: number; resolve: () => void } | undefined;
  const arrived = () => {
    received++;
    if (waiter && received >= waiter.n) waiter.resolve();
  };
  peer.onPacket = (p: Packet) => {
    if (p.cmd === "pubrel") {
      peer.send({ cmd: "pubcomp", messageId: p.messageId! });
      return arrived();
    }
    if (p.cmd !== "publish") return;
    if (p.qos === 2) return peer.send({ cmd: "pubrec", messageId: p.messageId! });
    if (p.qos === 1) peer.send({ cmd: "puback", messageId: p.messageId! });
    arrived();
  };
  const subscribed = peer.next((p): p is Extract<Packet, { cmd: "suback" }> => p.cmd === "suback");
  peer.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "bench/#", qos }] });
  await subscribed;
  return {
    peer,
    received: () => received,
    waitFor: (
      n: number,
    ) => (received >= n ? Promise.resolve() : new Promise<void>((resolve) => (waiter = { n, resolve }))),
  };
}

async function bytesPerMessage(): Promise<void> {
  console.log(
    `\n## Bytes written by the broker per 64-byte QoS 1 message (${fmt(count)} messages, window ${window}, commit)`,
  );
  console.log("| subscribers | write_bytes/msg | wchar/msg | write_bytes total |");
  console.log("|---|---|---|---|");
  for (const withSubscriber of [false, true]) {
    const dataDir = freshDir();
    const b = await broker(dataDir, "commit");
    try {
      if (withSubscriber) {
        const s = await subscriber(b.port, "offline-sub", true);
        await s.peer.disconnect();
      }
      // Warm-up: schema, first WAL frames, the publisher's session.
      await publish(b.port, 200, (i) => `bench/${i % 100}`);
      const before = procIo(b.pid);
      await publish(b.port, count, (i) => `bench/${i % 100}`);
      const after = procIo(b.pid);
      const wb = after.writeBytes - before.writeBytes;
      const wc = after.wchar - before.wchar;
      const label = withSubscriber ? "1 persistent subscriber, offline (QoS 1)" : "none";
      console.log(`| ${label} | ${fmt(wb / count)} | ${fmt(wc / count)} | ${fmt(wb)} |`);
    } finally {
      await b.kill("SIGKILL");
    }
  }
}

/** Messages per second through a fresh broker: published and acknowledged (and delivered, with a subscriber). */
async function rate(mode: "commit" | "periodic" | "memory", withSubscriber: boolean, qos: 1 | 2 = 1): Promise<number> {
  const b = await broker(freshDir(), mode);
  try {
    await publish(b.port, 200, (i) => `warm/${i}`, "warm"); // warm-up, matches no subscription
    const s = withSubscriber ? await subscriber(b.port, "online-sub", true, qos) : undefined;
    const t0 = performance.now();
    await publish(b.port, count, (i) => `bench/${i % 100}`, "bench-pub", qos);
    await s?.waitFor(count);
    const ms = performance.now() - t0;
    await s?.peer.disconnect();
    return (count / ms) * 1000;
  } finally {
    await b.kill("SIGKILL");
  }
}

async function throughput(): Promise<void> {
  console.log(
    `\n## QoS 1 throughput through the broker (${
      fmt(count)
    } × 64-byte messages, publisher window ${window}, median of 3)`,
  );
  console.log(
    "| durability | no subscriber: msg/s acknowledged | 1 persistent subscriber online, acking: msg/s delivered |",
  );
  console.log("|---|---|---|");
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  for (const mode of ["commit", "periodic", "memory"] as const) {
    const cells: string[] = [];
    for (const withSubscriber of [false, true]) {
      const runs: number[] = [];
      for (let i = 0; i < 3; i++) runs.push(await rate(mode, withSubscriber));
      cells.push(`${fmt(median(runs))} (${runs.map((r) => fmt(r)).join(", ")})`);
    }
    console.log(`| ${mode} | ${cells.join(" | ")} |`);
  }
  const q2: string[] = [];
  for (const withSubscriber of [false, true]) {
    const runs: number[] = [];
    for (let i = 0; i < 3; i++) runs.push(await rate("commit", withSubscriber, 2));
    q2.push(`${fmt(median(runs))} (${runs.map((r) => fmt(r)).join(", ")})`);
  }
  console.log(`| commit, QoS 2 end to end (PUBCOMP; subscriber at QoS 2) | ${q2.join(" | ")} |`);
}

/** Writes the state a broker would have, through the store API the broker uses. */
async function prepare(dataDir: string, retained: number, queued: number): Promise<void> {
  mkdirSync(dataDir, { recursive: true });
  const store = new SqliteStore(bunSqliteDriver, { path: join(dataDir, "ferry.db"), durability: "commit" });
  const { nextOffset } = await store.open();
  let offset = nextOffset;
  const now = Date.now();
  const msg = (topic: string): Message => ({
    offset: offset++,
    topic,
    payload,
    qos: 1,
    retain: false,
    receivedAt: now,
    origin: "bench",
  });
  await store.commit([{
    op: "session-put",
    session: {
      clientId: "sleeper",
      expiryInterval: 0xffffffff,
      protocolVersion: 5,
      disconnectedAt: now,
      subscriptions: [{ filter: "queued/#", qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0 }],
    },
  }]);
  const batch = 5000;
  for (let i = 0; i < retained; i += batch) {
    const list: Mutation[] = [];
    for (let j = i; j < Math.min(retained, i + batch); j++) {
      list.push({ op: "retain", topic: `retained/${j}`, message: { ...msg(`retained/${j}`), retain: true } });
    }
    await store.commit(list);
  }
  for (let i = 0; i < queued; i += batch) {
    const list: Mutation[] = [];
    for (let j = i; j < Math.min(queued, i + batch); j++) {
      const m = msg(`queued/${j % 100}`);
      list.push({ op: "append", message: m });
      list.push({
        op: "delivery-put",
        delivery: { clientId: "sleeper", offset: m.offset, qos: 1, retain: false, phase: "queued" },
      });
    }
    await store.commit(list);
  }
  await store.close();
}

async function startup(): Promise<void> {
  console.log(`\n## Start-up time: spawn to the \`listening\` line (median of 3, commit)`);
  console.log("| stored state | start-up | database size |");
  console.log("|---|---|---|");
  const cases: Array<[string, number, number]> = [
    ["empty", 0, 0],
    [`${fmt(stored)} retained messages`, stored, 0],
    [`${fmt(stored)} messages queued for one persistent session`, 0, stored],
    [`both`, stored, stored],
  ];
  for (const [label, retained, queued] of cases) {
    const dataDir = freshDir();
    await prepare(dataDir, retained, queued);
    const times: number[] = [];
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      const b = await broker(dataDir, "commit");
      times.push(performance.now() - t0);
      await b.kill("SIGTERM");
    }
    times.sort((a, b) => a - b);
    const size = Bun.file(join(dataDir, "ferry.db")).size;
    const shown = size < 1024 * 1024 ? `${fmt(size / 1024)} KiB` : `${fmt(size / 1024 / 1024, 1)} MiB`;
    console.log(`| ${label} | ${fmt(times[1]!)} ms (${times.map((t) => fmt(t)).join(", ")}) | ${shown} |`);
  }
}

console.log(
  `# Ferry durability benchmark — bun ${Bun.version}, ${process.platform}/${process.arch}, data under ${baseDir}`,
);
try {
  if (parts.includes("bytes")) await bytesPerMessage();
  if (parts.includes("throughput")) await throughput();
  if (parts.includes("startup")) await startup();
} finally {
  rmSync(baseDir, { recursive: true, force: true });
}
