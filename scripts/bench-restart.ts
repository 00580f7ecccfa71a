#!/usr/bin/env bun
/**
 * Restart with a large backlog, and a persistent session's SUBSCRIBE storm: Ferry and
 * Mosquitto side by side in the same run (issue 13, parts 5 and 6).
 *
 *  1. restart: a broker holds N retained messages and M QoS 1 messages queued for one
 *     offline persistent session (made over MQTT, then the broker is stopped with
 *     SIGTERM). It is started again on the same files; measured: spawn → accepting TCP
 *     connections, and VmRSS / VmHWM (peak) at that moment. Then, once: the session
 *     reconnects and drains its queue (time, peak RSS), and a client subscribes to every
 *     retained topic (time, peak RSS).
 *  2. subscribe: one persistent session (MQTT 5, session expiry 1 h) sends K SUBSCRIBEs of
 *     one filter each, all written at once (pipelined); measured: time to the last SUBACK,
 *     RSS growth, and the longest PINGREQ → PINGRESP wait of another client meanwhile.
 *     With --sequential the client waits for each SUBACK before the next SUBSCRIBE.
 *
 *   npx bun scripts/bench-restart.ts [--retained 100000] [--queued 100000] [--subscribes 20000]
 *        [--rounds 3] [--cases restart,subscribe] [--sequential] [--cold]
 *        [--ferry LABEL=COMMAND]... [--no-mosquitto] [--json FILE]
 *
 * Ferry: commit durability (SQLite, the default), `mqtt.max_queued_messages` raised past M.
 * Mosquitto: `persistence true` (it writes its database at SIGTERM and loads it at start),
 * `max_queued_messages 0` (no limit), `max_inflight_messages 64` as Ferry's default.
 * Each --ferry adds a Ferry to compare, e.g. `--ferry before=/tmp/old/ferry-linux-x64
 * --ferry after=dist/ferry-linux-x64` (a command whose first word is a .ts file runs under
 * this bun); without any, `ferry` is this tree's edge/main.ts. A command may start with
 * `NAME=VALUE` words (environment for it alone) and end with ` | {json}` (config keys for it,
 * top-level keys replacing this script's), e.g.
 * `--ferry 'nothread=dist/ferry-linux-x64 | {"storage":{"writer_thread":false}}'`. Brokers take turns in each
 * round, in alternating order. With --cold an executable is evicted from the page cache
 * before each start (scripts/page-cache.ts), as after a reboot. --json writes every figure
 * as JSON too (scripts/bench-memory.ts reads it).
 */
import { type Subprocess } from "bun";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Packet } from "mqtt-packet";
import { MqttPeer } from "../test/helpers/mqtt-peer.ts";
import { dropFromPageCache } from "./page-cache.ts";

const ROOT = resolve(import.meta.dir, "..");
const MOSQUITTO = process.env.MOSQUITTO ?? "/usr/sbin/mosquitto";

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}
const RETAINED = Number(flag("retained", "100000"));
const QUEUED = Number(flag("queued", "100000"));
const SUBSCRIBES = Number(flag("subscribes", "20000"));
const ROUNDS = Number(flag("rounds", "3"));
const CASES = flag("cases", "restart,subscribe").split(",");
const SEQUENTIAL = process.argv.includes("--sequential");
const COLD = process.argv.includes("--cold");
const JSON_OUT = flag("json", "");
/** Every figure measured, by case and broker (for --json). */
const results: {
  restart: Record<string, Array<{ ms: number; rssKb: number; hwmKb: number }>>;
  afterRestart: Record<string, { drainMs: number; drainPeakKb: number; retainedMs: number; retainedPeakKb: number }>;
  subscribe: Record<string, Array<{ ms: number; growthKb: number; laterKb: number; peakKb: number; stallMs: number }>>;
} = { restart: {}, afterRestart: {}, subscribe: {} };
const PAYLOAD = Buffer.alloc(64, 0x42);

/** A broker's name in the tables; "mosquitto", or a Ferry's label. */
type BrokerName = string;

/** The Ferries to compare: label → command (before `serve`), environment and config added. */
const FERRIES = new Map<string, string[]>();
const FERRY_ENV = new Map<string, Record<string, string>>();
const FERRY_CONFIG = new Map<string, Record<string, unknown>>();
for (let i = 0; i < process.argv.length - 1; i++) {
  if (process.argv[i] !== "--ferry") continue;
  const spec = process.argv[i + 1]!;
  const eq = spec.indexOf("=");
  const label = spec.slice(0, eq);
  // `LABEL=[NAME=VALUE ...] COMMAND [| {config}]`: variables for that command only, and
  // config keys merged over this script's (top-level keys replace).
  const bar = spec.indexOf(" | ");
  const words = spec.slice(eq + 1, bar < 0 ? undefined : bar).split(/\s+/).filter(Boolean);
  const env: Record<string, string> = {};
  while (/^[A-Z_][A-Z0-9_]*=/.test(words[0] ?? "")) {
    const [name, ...value] = words.shift()!.split("=");
    env[name!] = value.join("=");
  }
  FERRIES.set(label, words[0]!.endsWith(".ts") ? [process.execPath, ...words] : words);
  FERRY_ENV.set(label, env);
  if (bar >= 0) FERRY_CONFIG.set(label, JSON.parse(spec.slice(bar + 3)) as Record<string, unknown>);
}
if (FERRIES.size === 0) FERRIES.set("ferry", [process.execPath, join(ROOT, "edge/main.ts")]);
const BROKERS: BrokerName[] = [...FERRIES.keys(), ...(process.argv.includes("--no-mosquitto") ? [] : ["mosquitto"])];

const fmt = (n: number, digits = 0) => n.toLocaleString("en-US", { maximumFractionDigits: digits });
const mb = (kb: number) => fmt(kb / 1024, 1);
const log = (msg: string) => process.stderr.write(`[restart] ${msg}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function status(pid: number): { rssKb: number; hwmKb: number } {
  const text = readFileSync(`/proc/${pid}/status`, "utf8");
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(text)?.[1] ?? NaN);
  return { rssKb: field("VmRSS"), hwmKb: field("VmHWM") };
}

function freePort(): number {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = l.port;
  l.stop(true);
  return port;
}

/** Resolves once a TCP connection to `port` succeeds, polling every 2 ms. */
async function accepting(port: number, proc: Subprocess, ms = 120_000): Promise<void> {
  const end = performance.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((done) => {
      const s = net.connect(port, "127.0.0.1", () => {
        s.destroy();
        done(true);
      });
      s.once("error", () => done(false));
    });
    if (ok) return;
    if (proc.exitCode !== null) throw new Error(`broker exited (${proc.exitCode}) before accepting`);
    if (performance.now() > end) throw new Error(`nothing accepting on ${port} after ${ms} ms`);
    await sleep(2);
  }
}

interface Running {
  name: BrokerName;
  proc: Subprocess;
  port: number;
  /** Spawn → accepting, ms. */
  startMs: number;
  /** VmRSS and VmHWM the moment it accepted. */
  atListen: { rssKb: number; hwmKb: number };
  stop(): Promise<void>;
}

/** A broker on `dir` (kept between starts, so a restart finds its files). */
async function start(name: BrokerName, dir: string): Promise<Running> {
  mkdirSync(dir, { recursive: true });
  const port = freePort();
  let cmd: string[];
  if (name === "mosquitto") {
    const conf = join(dir, "mosquitto.conf");
    // Started as root, Mosquitto drops to its own user, which must be able to write here.
    chmodSync(dir, 0o777);
    writeFileSync(
      conf,
      [
        `listener ${port} 127.0.0.1`,
        "allow_anonymous true",
        "persistence true",
        `persistence_location ${dir}/`,
        "# no limit on a session's queue (its default, 1000, would drop most of the backlog)",
        "max_queued_messages 0",
        "max_inflight_messages 64",
        "set_tcp_nodelay true",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "",
      ].join("\n"),
    );
    cmd = [MOSQUITTO, "-c", conf];
  } else {
    const conf = join(dir, "ferry.json");
    writeFileSync(
      conf,
      JSON.stringify({
        log_level: "warn",
        storage: { durability: "commit" },
        mqtt: { sys_interval: 0, max_queued_messages: Math.max(10_000, 2 * QUEUED) },
        limits: { exempt_loopback: true },
        ...FERRY_CONFIG.get(name),
      }),
    );
    const base = FERRIES.get(name)!;
    if (COLD && base[0] !== process.execPath) dropFromPageCache(base[0]!);
    cmd = [...base, "serve", "--host", "127.0.0.1", "--mqtt-port", String(port), "--ws-port", "0"];
    cmd.push("--admin-port", "off", "--data-dir", join(dir, "data"), "--config", conf);
  }
  const t0 = performance.now();
  const proc = Bun.spawn(cmd, {
    env: { ...process.env, ...FERRY_ENV.get(name) },
    stdout: "ignore",
    stderr: Bun.file(join(dir, `stderr-${Date.now()}.log`)),
    cwd: ROOT,
  });
  await accepting(port, proc);
  const startMs = performance.now() - t0;
  const atListen = status(proc.pid);
  return {
    name,
    proc,
    port,
    startMs,
    atListen,
    stop: async () => {
      proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), 60_000);
      await proc.exited;
      clearTimeout(t);
    },
  };
}

/** Publish `n` QoS 1 messages keeping `window` unacknowledged. */
async function publish(port: number, n: number, topic: (i: number) => string, retain: boolean): Promise<void> {
  const { peer } = await MqttPeer.connect(port, 5, { clientId: `pub-${Date.now()}` });
  let sent = 0;
  let acked = 0;
  const window = 200;
  await new Promise<void>((resolve, reject) => {
    const send = () => {
      peer.send({
        cmd: "publish",
        topic: topic(sent),
        payload: PAYLOAD,
        qos: 1,
        retain,
        dup: false,
        messageId: (sent % 65_535) + 1,
      });
      sent++;
    };
    peer.onPacket = (p: Packet) => {
      if (p.cmd !== "puback") return;
      if ((p.reasonCode ?? 0) >= 0x80) return reject(new Error(`PUBACK ${p.reasonCode}`));
      if (++acked === n) return resolve();
      if (sent < n) send();
    };
    void peer.closed.then(() => reject(new Error("publisher disconnected")));
    while (sent < Math.min(window, n)) send();
  });
  await peer.disconnect();
}

const SLEEPER = { clientId: "sleeper", clean: false, properties: { sessionExpiryInterval: 0xffffffff } };

/** The state to restart with: retained messages, and a backlog for the offline session "sleeper". */
async function prepare(name: BrokerName, dir: string): Promise<void> {
  const b = await start(name, dir);
  try {
    const { peer } = await MqttPeer.connect(b.port, 5, SLEEPER);
    const subscribed = peer.next((p): p is Extract<Packet, { cmd: "suback" }> => p.cmd === "suback");
    peer.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "queued/#", qos: 1 }] });
    await subscribed;
    await peer.disconnect();
    await publish(b.port, RETAINED, (i) => `retained/${i}`, true);
    await publish(b.port, QUEUED, (i) => `queued/${i % 100}`, false);
  } finally {
    await b.stop();
  }
}

/** Reads the broker's RSS every 10 ms until stopped; returns the highest. */
function rssSampler(pid: number): () => number {
  let peak = 0;
  const t = setInterval(() => {
    try {
      peak = Math.max(peak, status(pid).rssKb);
    } catch {
      // exited
    }
  }, 10);
  return () => {
    clearInterval(t);
    try {
      peak = Math.max(peak, status(pid).rssKb);
    } catch {
      // exited
    }
    return peak;
  };
}

/** Connect a client, subscribe or resume, and count PUBLISHes (acked) until `n` arrived. */
async function receive(
  port: number,
  n: number,
  connect: Record<string, unknown>,
  subscribe?: string,
): Promise<{ ms: number; got: number }> {
  const t0 = performance.now();
  const { peer } = await MqttPeer.connect(port, 5, connect);
  let got = 0;
  const done = new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 120_000);
    peer.onPacket = (p: Packet) => {
      if (p.cmd !== "publish") return;
      if (p.qos === 1) peer.send({ cmd: "puback", messageId: p.messageId! });
      if (++got >= n) {
        clearTimeout(timer);
        resolve();
      }
    };
  });
  if (subscribe) peer.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: subscribe, qos: 1 }] });
  await done;
  const ms = performance.now() - t0;
  await peer.disconnect();
  return { ms, got };
}

async function restartCase(): Promise<void> {
  console.log(
    `\n## Restart with ${fmt(RETAINED)} retained + ${fmt(QUEUED)} queued for one offline session (64 B payloads)`,
  );
  const dirs = new Map<BrokerName, string>();
  for (const name of BROKERS) {
    const dir = mkdtempSync(join(tmpdir(), `bench-restart-${name}-`));
    dirs.set(name, dir);
    log(`${name}: preparing the state`);
    await prepare(name, dir);
  }
  const rows = new Map<BrokerName, Array<{ ms: number; rss: number; hwm: number }>>();
  for (let round = 0; round < ROUNDS; round++) {
    for (const name of round % 2 === 0 ? BROKERS : [...BROKERS].reverse()) {
      const b = await start(name, dirs.get(name)!);
      await b.stop();
      const list = rows.get(name) ?? [];
      list.push({ ms: b.startMs, rss: b.atListen.rssKb, hwm: b.atListen.hwmKb });
      rows.set(name, list);
      (results.restart[name] ??= []).push({ ms: b.startMs, rssKb: b.atListen.rssKb, hwmKb: b.atListen.hwmKb });
      log(`${name} round ${round + 1}: ${fmt(b.startMs)} ms, ${mb(b.atListen.rssKb)} MB`);
    }
  }
  console.log("| broker | spawn → accepting (median; runs) | VmRSS at accepting (median; runs) | VmHWM at accepting |");
  console.log("|---|---|---|---|");
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  for (const name of BROKERS) {
    const r = rows.get(name)!;
    console.log(
      `| ${name} | ${fmt(median(r.map((x) => x.ms)))} ms (${r.map((x) => fmt(x.ms)).join(", ")}) | ${
        mb(median(r.map((x) => x.rss)))
      } MB (${r.map((x) => mb(x.rss)).join(", ")}) | ${mb(median(r.map((x) => x.hwm)))} MB |`,
    );
  }

  console.log(
    "\n| broker | session resumes: all queued received | peak RSS | subscribe retained/#: all received | peak RSS |",
  );
  console.log("|---|---|---|---|---|");
  for (const name of BROKERS) {
    const b = await start(name, dirs.get(name)!);
    try {
      let stopSampling = rssSampler(b.proc.pid);
      const drain = await receive(b.port, QUEUED, SLEEPER);
      const drainPeak = stopSampling();
      stopSampling = rssSampler(b.proc.pid);
      const ret = await receive(b.port, RETAINED, { clientId: "reader" }, "retained/#");
      const retPeak = stopSampling();
      results.afterRestart[name] = {
        drainMs: drain.ms,
        drainPeakKb: drainPeak,
        retainedMs: ret.ms,
        retainedPeakKb: retPeak,
      };
      console.log(
        `| ${name} | ${fmt(drain.got)} in ${fmt(drain.ms)} ms | ${mb(drainPeak)} MB | ${fmt(ret.got)} in ${
          fmt(ret.ms)
        } ms | ${mb(retPeak)} MB |`,
      );
    } finally {
      await b.stop();
    }
  }
  for (const dir of dirs.values()) rmSync(dir, { recursive: true, force: true });
}

/** The longest PINGREQ → PINGRESP wait seen by a client pinging every 10 ms, until stopped. */
async function pinger(port: number): Promise<() => Promise<number>> {
  const { peer } = await MqttPeer.connect(port, 5, { clientId: `pinger-${Date.now()}` });
  let worst = 0;
  let sentAt = 0;
  let running = true;
  peer.onPacket = (p: Packet) => {
    if (p.cmd !== "pingresp") return;
    worst = Math.max(worst, performance.now() - sentAt);
    sentAt = 0;
  };
  const t = setInterval(() => {
    if (!running) return;
    if (sentAt !== 0) {
      worst = Math.max(worst, performance.now() - sentAt);
      return; // still waiting for the last one
    }
    sentAt = performance.now();
    peer.send({ cmd: "pingreq" });
  }, 10);
  return async () => {
    running = false;
    clearInterval(t);
    if (sentAt !== 0) worst = Math.max(worst, performance.now() - sentAt);
    await peer.disconnect();
    return worst;
  };
}

async function subscribeOnce(name: BrokerName, n: number, sequential: boolean) {
  const dir = mkdtempSync(join(tmpdir(), `bench-subscribe-${name}-`));
  const b = await start(name, dir);
  try {
    const { peer } = await MqttPeer.connect(b.port, 5, {
      clientId: "many-subs",
      clean: false,
      properties: { sessionExpiryInterval: 3600 },
    });
    await sleep(200);
    const before = status(b.proc.pid).rssKb;
    const stopPinger = await pinger(b.port);
    const stopSampling = rssSampler(b.proc.pid);
    let acked = 0;
    const t0 = performance.now();
    const send = (i: number) =>
      peer.send({ cmd: "subscribe", messageId: (i % 65_535) + 1, subscriptions: [{ topic: `s/${i}/+`, qos: 1 }] });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`only ${acked} SUBACKs within 600 s`)), 600_000);
      peer.onPacket = (p: Packet) => {
        if (p.cmd !== "suback") return;
        if (++acked === n) {
          clearTimeout(timer);
          resolve();
        } else if (sequential) send(acked);
      };
      if (sequential) send(0);
      else for (let i = 0; i < n; i++) send(i);
    });
    const ms = performance.now() - t0;
    const peak = stopSampling();
    const stall = await stopPinger();
    const after = status(b.proc.pid).rssKb;
    await sleep(3000);
    const later = status(b.proc.pid).rssKb;
    await peer.disconnect();
    return { ms, growthKb: after - before, laterKb: later - before, peakKb: peak, beforeKb: before, stall };
  } finally {
    await b.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function subscribeCase(): Promise<void> {
  const how = SEQUENTIAL ? "each waiting for the previous SUBACK" : "pipelined";
  console.log(`\n## One persistent session sends ${fmt(SUBSCRIBES)} SUBSCRIBEs of one filter each (${how})`);
  console.log(
    "| broker | round | time to last SUBACK | RSS before → after (growth) | growth 3 s later | peak RSS | longest PINGREQ wait of another client |",
  );
  console.log("|---|---|---|---|---|---|---|");
  for (let round = 0; round < ROUNDS; round++) {
    for (const name of round % 2 === 0 ? BROKERS : [...BROKERS].reverse()) {
      const r = await subscribeOnce(name, SUBSCRIBES, SEQUENTIAL);
      (results.subscribe[name] ??= []).push({
        ms: r.ms,
        growthKb: r.growthKb,
        laterKb: r.laterKb,
        peakKb: r.peakKb,
        stallMs: r.stall,
      });
      console.log(
        `| ${name} | ${round + 1} | ${fmt(r.ms)} ms | ${mb(r.beforeKb)} → ${mb(r.beforeKb + r.growthKb)} MB (+${
          mb(r.growthKb)
        }) | +${mb(r.laterKb)} MB | ${mb(r.peakKb)} MB | ${fmt(r.stall)} ms |`,
      );
    }
  }
}

/** What a Ferry command says of itself (`version`), or its command line. */
function describe(cmd: string[]): string {
  const out = new TextDecoder().decode(Bun.spawnSync([...cmd, "version"], { cwd: ROOT }).stdout).trim();
  return out || cmd.join(" ");
}

const mosq = new TextDecoder().decode(Bun.spawnSync([MOSQUITTO, "-h"]).stdout);
console.log(`# bench-restart, load average ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}`);
for (const [label, cmd] of FERRIES) console.log(`- ${label}: ${cmd.join(" ")} — ${describe(cmd)}`);
console.log(`- mosquitto ${/mosquitto version (\S+)/.exec(mosq)?.[1] ?? "?"}`);
if (CASES.includes("restart")) await restartCase();
if (CASES.includes("subscribe")) await subscribeCase();
if (JSON_OUT) await Bun.write(JSON_OUT, JSON.stringify(results, null, 1));
