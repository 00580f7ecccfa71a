/**
 * What one misbehaving client can make a broker hold, Ferry and Mosquitto side by side in
 * the same run (issue 13, the rows about single connections):
 *
 *   flood    a client sends PINGREQs and never reads: the broker's RSS growth while the
 *            client tries to send --flood-mb MB (for at most --flood-seconds), per 10 MB
 *            it got to send
 *   floodq1  the same with QoS 1 PUBLISHes (64 B, to a topic nobody subscribes to) whose
 *            PUBACKs the client never reads
 *   connect  --sockets sockets each send all but the last byte of a 1 MiB CONNECT: RSS
 *            growth 1 s after the last write (its peak meanwhile, and what is left
 *            --settle-seconds after the client closed them all), and how many sockets the
 *            broker closed
 *   trickle  a client sends a 1 MiB PUBLISH a byte every --trickle-every seconds after
 *            login (keep alive --keepalive): how long until the broker closes it (gives up
 *            after --trickle-max seconds)
 *   stuck    a subscriber of "stuck" (QoS 0) that never reads, and a publisher sending 64 B
 *            QoS 0 messages to it as fast as the broker takes them, for --stuck-seconds:
 *            the broker's peak RSS, and the messages it took per second
 *   qos0     the same publisher with no subscriber at all
 *
 * Usage: bun scripts/measure-connection-bounds.ts [--cmd "dist/ferry-linux-x64"] [--rounds 1]
 *   [--cases flood,connect,trickle,stuck,qos0] [--flood-mb 100] [--flood-seconds 20] [--sockets 600]
 *   [--settle-seconds 10]
 *   [--keepalive 10] [--trickle-every 2] [--trickle-max 120] [--stuck-seconds 30] [--json FILE]
 *
 * Both brokers get their defaults, except that the clients, all on loopback, are exempt
 * from Ferry's per-address connection limits (`limits.exempt_loopback`; its memory bounds
 * apply whatever it says) and the admin API is off, and that Mosquitto gets
 * `set_tcp_nodelay true` (Bun sets TCP_NODELAY on accepted sockets) and
 * `max_inflight_messages 64` (Ferry's `mqtt.max_inflight`). The executable is evicted from
 * the page cache before each start (scripts/page-cache.ts). RSS from /proc/PID/status.
 * Rounds alternate the brokers. Prints a Markdown table; --json writes the figures too.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { dropFromPageCache } from "./page-cache.ts";

const ROOT = join(import.meta.dir, "..");

function option(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : fallback;
}
const FERRY = option("cmd", join(ROOT, "dist", "ferry-linux-x64")).split(/\s+/).filter(Boolean);
const MOSQUITTO = process.env.MOSQUITTO ?? "/usr/sbin/mosquitto";
const ROUNDS = Number(option("rounds", "1"));
const CASES = option("cases", "flood,connect,trickle,stuck").split(",");
const FLOOD_MB = Number(option("flood-mb", "100"));
const FLOOD_SECONDS = Number(option("flood-seconds", "20"));
const SOCKETS = Number(option("sockets", "600"));
const SETTLE_SECONDS = Number(option("settle-seconds", "10"));
const KEEPALIVE = Number(option("keepalive", "10"));
const TRICKLE_EVERY = Number(option("trickle-every", "2"));
const TRICKLE_MAX = Number(option("trickle-max", "120"));
const STUCK_SECONDS = Number(option("stuck-seconds", "30"));
const JSON_OUT = option("json", "");
const MIB = 1024 * 1024;

type Name = "ferry" | "mosquitto";

interface Broker {
  pid: number;
  port: number;
  stop(): Promise<void>;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function rssMb(pid: number): number {
  const m = /^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return (Number(m?.[1]) * 1024) / 1e6;
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function start(name: Name): Promise<Broker> {
  const dir = mkdtempSync(join(tmpdir(), `bounds-${name}-`));
  const port = await freePort();
  let cmd: string[];
  if (name === "ferry") {
    writeFileSync(join(dir, "ferry.json"), JSON.stringify({ limits: { exempt_loopback: true } }));
    cmd = [
      ...FERRY,
      "serve",
      "-c",
      join(dir, "ferry.json"),
      "--mqtt-port",
      String(port),
      "--admin-port",
      "off",
      "--data-dir",
      join(dir, "data"),
    ];
  } else {
    writeFileSync(
      join(dir, "mosquitto.conf"),
      `listener ${port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\nmax_inflight_messages 64\n`,
    );
    cmd = [MOSQUITTO, "-c", join(dir, "mosquitto.conf")];
  }
  if (!dropFromPageCache(cmd[0]!)) console.error(`could not evict ${cmd[0]} from the page cache`);
  const proc = Bun.spawn(cmd, { cwd: ROOT, stdin: "ignore", stdout: "ignore", stderr: "ignore" });
  // Ready once it accepts a connection.
  for (let i = 0;; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1", () => {
        s.destroy();
        resolve(true);
      });
      s.on("error", () => resolve(false));
    });
    if (ok) break;
    if (i > 200 || proc.exitCode !== null) throw new Error(`${name} did not start`);
    await sleep(50);
  }
  await sleep(500);
  return {
    pid: proc.pid,
    port,
    stop: async () => {
      proc.kill("SIGTERM");
      const guard = setTimeout(() => proc.kill("SIGKILL"), 10_000);
      await proc.exited;
      clearTimeout(guard);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** MQTT 3.1.1 CONNECT, clean session, client id `id`. */
function connectPacket(id: string, keepalive: number): Buffer {
  const body = Buffer.from([
    0,
    4,
    77,
    81,
    84,
    84,
    4,
    2,
    keepalive >> 8,
    keepalive & 0xff,
    0,
    id.length,
    ...Buffer.from(id),
  ]);
  return Buffer.concat([Buffer.from([0x10, body.length]), body]);
}

/** A fixed header claiming `total` bytes, then the start of a CONNECT, `n` bytes in all. */
function partialConnect(total: number, n: number): Buffer {
  const out = Buffer.alloc(n);
  let rem = total - 4;
  const head = [0x10];
  for (let i = 0; i < 3; i++) {
    head.push((rem & 0x7f) | (i < 2 ? 0x80 : 0));
    rem >>= 7;
  }
  out.set([...head, 0, 4, 77, 81, 84, 84, 4, 2, 0, 0]);
  return out;
}

async function loggedIn(port: number, id: string, keepalive = 0): Promise<net.Socket> {
  const s = net.connect(port, "127.0.0.1");
  s.on("error", () => {});
  await new Promise((r) => s.once("connect", r));
  s.write(connectPacket(id, keepalive));
  await new Promise((r) => s.once("data", r));
  return s;
}

/** What a case measured: a line for the table, and its figures by name (for --json). */
interface Outcome {
  text: string;
  figures: Record<string, number>;
}

/** 64 KiB of PINGREQs, or of QoS 1 PUBLISHes (64 B payload, packet id 1) to "flood". */
function floodBatch(kind: "pingreq" | "qos1"): Buffer {
  if (kind === "pingreq") {
    const batch = Buffer.alloc(64 * 1024);
    for (let i = 0; i < batch.length; i += 2) batch[i] = 0xc0;
    return batch;
  }
  const one = Buffer.concat([Buffer.from([0x32, 2 + 5 + 2 + 64, 0, 5]), Buffer.from("flood"), Buffer.from([0, 1])]);
  const packet = Buffer.concat([one, Buffer.alloc(64, 0x61)]);
  return Buffer.concat(Array.from({ length: Math.floor((64 * 1024) / packet.length) }, () => packet));
}

async function flood(b: Broker, kind: "pingreq" | "qos1" = "pingreq"): Promise<Outcome> {
  const before = rssMb(b.pid);
  const s = await loggedIn(b.port, "flood");
  s.pause(); // never reads again
  const batch = floodBatch(kind);
  let sent = 0;
  let peak = before;
  const end = Date.now() + FLOOD_SECONDS * 1000;
  while (sent < FLOOD_MB * 1e6 && Date.now() < end) {
    // Only what the kernel took counts as sent: keep a little queued in the client.
    if (s.writableLength < 1024 * 1024) {
      s.write(batch);
      sent += batch.byteLength;
    } else await sleep(5);
    peak = Math.max(peak, rssMb(b.pid));
  }
  const taken = sent - s.writableLength;
  await sleep(1000);
  peak = Math.max(peak, rssMb(b.pid));
  s.destroy();
  const growth = peak - before;
  const per10 = taken > 0 ? (growth * 10e6) / taken : NaN;
  return {
    text: `${(taken / 1e6).toFixed(0)} MB sent; RSS ${before.toFixed(1)} → ${peak.toFixed(1)} MB (+${
      growth.toFixed(1)
    }, ${taken > 0 ? per10.toFixed(2) : "-"} MB per 10 MB)`,
    figures: { sentMb: taken / 1e6, rssBeforeMb: before, rssPeakMb: peak, growthMb: growth, growthPer10Mb: per10 },
  };
}

async function partialConnects(b: Broker): Promise<Outcome> {
  const before = rssMb(b.pid);
  const part = partialConnect(MIB, MIB - 1);
  const sockets: net.Socket[] = [];
  let closed = 0;
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, rssMb(b.pid))), 50);
  for (let i = 0; i < SOCKETS; i++) {
    const s = net.connect(b.port, "127.0.0.1");
    s.on("error", () => {});
    s.on("close", () => closed++);
    s.write(part);
    sockets.push(s);
    if (i % 50 === 49) await sleep(20);
  }
  // Until every socket has written what it could, or the broker stopped reading them.
  const end = Date.now() + 20_000;
  while (Date.now() < end && sockets.some((s) => !s.closed && s.writableLength > 0)) await sleep(100);
  await sleep(1000);
  clearInterval(sampler);
  const after = rssMb(b.pid);
  peak = Math.max(peak, after);
  const closedByBroker = closed;
  // What is left once the sockets are gone and the runtime has had time to give freed pages back.
  for (const s of sockets) s.destroy();
  await sleep(SETTLE_SECONDS * 1000);
  const settled = rssMb(b.pid);
  const text = `RSS ${before.toFixed(1)} → ${after.toFixed(1)} MB (+${(after - before).toFixed(1)}; peak +${
    (peak - before).toFixed(1)
  }; +${
    (settled - before).toFixed(1)
  } ${SETTLE_SECONDS} s after the sockets closed); ${closedByBroker} of ${SOCKETS} closed`;
  return {
    text,
    figures: {
      rssBeforeMb: before,
      rssAfterMb: after,
      growthMb: after - before,
      peakGrowthMb: peak - before,
      settledGrowthMb: settled - before,
      closed: closedByBroker,
    },
  };
}

async function trickle(b: Broker): Promise<Outcome> {
  const s = await loggedIn(b.port, "trickle", KEEPALIVE);
  // A QoS 0 PUBLISH to "t" just under 1 MiB (Ferry's default mqtt.max_packet_size is 1 MiB).
  const rem = MIB - 1024;
  const head = [0x30, (rem & 0x7f) | 0x80, ((rem >> 7) & 0x7f) | 0x80, rem >> 14, 0, 1, 0x74];
  const publish = Buffer.concat([Buffer.from(head), Buffer.alloc(rem - 3)]);
  let closed = false;
  s.on("close", () => (closed = true));
  const t0 = Date.now();
  for (let i = 0; !closed && Date.now() - t0 < TRICKLE_MAX * 1000; i++) {
    s.write(publish.subarray(i, i + 1));
    for (let w = 0; w < TRICKLE_EVERY * 10 && !closed; w++) await sleep(100);
  }
  const seconds = (Date.now() - t0) / 1000;
  s.destroy();
  return {
    text: closed ? `closed after ${seconds.toFixed(0)} s` : `still open after ${seconds.toFixed(0)} s`,
    figures: { seconds, closed: closed ? 1 : 0 },
  };
}

/** MQTT 3.1.1 SUBSCRIBE of `topic` at QoS 0, packet id 1. */
function subscribePacket(topic: string): Buffer {
  const body = Buffer.from([0, 1, topic.length >> 8, topic.length & 0xff, ...Buffer.from(topic), 0]);
  return Buffer.concat([Buffer.from([0x82, body.length]), body]);
}

/**
 * A publisher sends 64 B QoS 0 messages to "stuck" as fast as the broker reads them, for
 * --stuck-seconds; with `subscriber`, a client subscribed to "stuck" never reads. RSS is read
 * every 50 ms; the peak is what a device must have room for.
 */
async function qos0Flood(b: Broker, subscriber: boolean): Promise<Outcome> {
  const before = rssMb(b.pid);
  let sub: net.Socket | undefined;
  if (subscriber) {
    sub = await loggedIn(b.port, "stuck-sub");
    sub.write(subscribePacket("stuck"));
    await new Promise((r) => sub!.once("data", r)); // SUBACK
    sub.pause(); // never reads again
  }
  const pub = await loggedIn(b.port, "stuck-pub");
  pub.on("data", () => {});
  const one = Buffer.concat([Buffer.from([0x30, 2 + 5 + 64, 0, 5]), Buffer.from("stuck"), Buffer.alloc(64, 0x61)]);
  const batch = Buffer.concat(Array.from({ length: Math.floor((64 * 1024) / one.length) }, () => one));
  const perBatch = batch.length / one.length;
  let batches = 0;
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, rssMb(b.pid))), 50);
  const t0 = Date.now();
  const end = t0 + STUCK_SECONDS * 1000;
  while (Date.now() < end) {
    // Only what the kernel took counts as sent: keep a little queued in the client.
    if (pub.writableLength < 1024 * 1024) {
      pub.write(batch);
      batches++;
    } else await sleep(1);
  }
  const seconds = (Date.now() - t0) / 1000;
  const taken = batches * perBatch - Math.ceil(pub.writableLength / one.length);
  await sleep(500);
  clearInterval(sampler);
  peak = Math.max(peak, rssMb(b.pid));
  pub.destroy();
  sub?.destroy();
  const rate = taken / seconds;
  return {
    text: `${(rate / 1e6).toFixed(2)} M msg/s taken for ${seconds.toFixed(0)} s; RSS ${before.toFixed(1)} → peak ${
      peak.toFixed(1)
    } MB`,
    figures: { msgPerS: rate, seconds, rssBeforeMb: before, rssPeakMb: peak },
  };
}

const RUNNERS: Record<string, (b: Broker) => Promise<Outcome>> = {
  flood: (b) => flood(b, "pingreq"),
  floodq1: (b) => flood(b, "qos1"),
  connect: partialConnects,
  trickle,
  stuck: (b) => qos0Flood(b, true),
  qos0: (b) => qos0Flood(b, false),
};

async function main(): Promise<void> {
  if (!existsSync(FERRY[0]!) && !Bun.which(FERRY[0]!)) throw new Error(`${FERRY[0]} not found: npm run build first`);
  const rows: string[] = [];
  const records: Array<{ case: string; broker: Name; round: number } & Outcome> = [];
  for (let round = 0; round < ROUNDS; round++) {
    const order: Name[] = round % 2 === 0 ? ["ferry", "mosquitto"] : ["mosquitto", "ferry"];
    for (const c of CASES) {
      const run = RUNNERS[c];
      if (!run) throw new Error(`unknown case ${c}; cases: ${Object.keys(RUNNERS).join(", ")}`);
      for (const name of order) {
        const b = await start(name);
        try {
          const outcome = await run(b);
          rows.push(`| ${c} | ${name} | ${round + 1} | ${outcome.text} |`);
          records.push({ case: c, broker: name, round: round + 1, ...outcome });
        } finally {
          await b.stop();
        }
      }
    }
  }
  if (JSON_OUT) writeFileSync(JSON_OUT, JSON.stringify(records, null, 1));
  console.log(
    `Connection bounds, ${
      FERRY.join(" ")
    } and ${MOSQUITTO}; flood ${FLOOD_MB} MB / ${FLOOD_SECONDS} s, ${SOCKETS} partial 1 MiB CONNECTs, a byte every ${TRICKLE_EVERY} s (keep alive ${KEEPALIVE} s), QoS 0 floods ${STUCK_SECONDS} s\n`,
  );
  console.log("| case | broker | round | result |\n| --- | --- | --- | --- |");
  for (const r of rows) console.log(r);
}

await main();
process.exit(0);
