/**
 * Uplink drain benchmark: Ferry (a child process, `commit` durability) holds a backlog
 * of N QoS 1 messages (64-byte payloads, topics bench/0 … bench/99) for a cloud that
 * is down, then a local mosquitto comes up and the link drains the backlog into it.
 *
 *   npx bun scripts/bench-uplink.ts [--messages 1000000] [--inflight N] [--no-subscriber] [--profile DIR]
 *       [--ferry-root DIR] [--bridge] [--protocol 4|5] [--stamp full|dedup|none]
 *
 * `--ferry-root` runs Ferry from another tree (before and after, side by side). `--bridge`
 * measures a Mosquitto bridge instead of Ferry, for comparison: an edge mosquitto
 * (persistence on, `max_queued_messages 0`, the same in-flight window as the uplink's
 * `max_inflight`, default 100) whose bridge (`cleansession false`, `topic bench/# out 1`,
 * MQTT 3.1.1) holds the backlog while the cloud is down and drains it when it comes up. It
 * is not restarted before the drain (what it holds is not safe from kill -9 anyway: mosquitto
 * saves its persistence file on exit or every `autosave_interval`); the drain rate counted at
 * the cloud subscriber is the figure to compare.
 *
 * `--protocol 4` has Ferry's uplink speak MQTT 3.1.1, as the bridge does: no MQTT 5 properties
 * (Ferry's five User Properties per message, which the cloud parses and forwards too); the
 * default is 5, the uplink's own default. `--stamp` sets the uplink's `stamp` (default `full`,
 * the five or six User Properties; `dedup` three or four; `none` none, the bytes a bridge sends).
 *
 * Ferry is then stopped (SIGTERM) and started again on the same data directory, so the
 * drain starts from the saved cursor in a fresh process.
 *
 * Reported: how fast the backlog went in (publisher → Ferry, for reference), Ferry's
 * VmRSS idle, holding the backlog (the process that took it in, and the fresh one), peak
 * and after the drain (from /proc/PID/status), Ferry's and mosquitto's CPU use, and
 * the drain rate, measured two ways: at the link (the `acknowledged` counter Ferry
 * publishes under $SYS every second: PUBACKs from the cloud) and at the cloud (a live
 * QoS 0 subscriber on mosquitto counting arrivals, first to last). Also Ferry's CPU per
 * message (µs), the same CPU by thread name and the kernel's part of each (the main thread,
 * the storage `Worker`, JavaScriptCore's JIT and heap threads, the allocator's scavenger),
 * and the main thread's context switches per 1,000 messages; for `--bridge`, the edge's CPU
 * per message and context switches and the cloud's CPU.
 *
 * With --profile DIR the restarted Ferry runs under Bun's CPU profiler (--cpu-prof,
 * --cpu-prof-md), so the profile covers the drain only; it is written to DIR when Ferry
 * stops (SIGTERM) at the end.
 *
 * Prints one JSON object (the result) as the last line of stdout; progress on stderr.
 */
import type { Subprocess } from "bun";
import mqttPacket from "mqtt-packet";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Conn } from "./bench/loadgen.ts";

const SCRIPTS_ROOT = resolve(import.meta.dir, "..");
const MOSQUITTO = process.env.MOSQUITTO ?? "/usr/sbin/mosquitto";

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i]!;
  if (!a.startsWith("--")) continue;
  const next = process.argv[i + 1];
  if (next !== undefined && !next.startsWith("--")) {
    args.set(a.slice(2), next);
    i++;
  } else args.set(a.slice(2), "");
}
const N = Number(args.get("messages") ?? 1_000_000);
const INFLIGHT = args.has("inflight") ? Number(args.get("inflight")) : undefined;
const SUBSCRIBER = !args.has("no-subscriber");
/** Directory for a CPU profile of Ferry (Bun --cpu-prof, markdown too); Ferry then stops with SIGTERM. */
const PROFILE = args.get("profile");
/** The Ferry tree to run (default: this one). */
const ROOT = resolve(args.get("ferry-root") || SCRIPTS_ROOT);
const BRIDGE = args.has("bridge");
const PROTOCOL = Number(args.get("protocol") ?? 5);
if (PROTOCOL !== 4 && PROTOCOL !== 5) throw new Error("--protocol takes 4 or 5");
const STAMP = args.get("stamp") ?? "full";
if (!["full", "dedup", "none"].includes(STAMP)) throw new Error("--stamp takes full, dedup or none");
const TOPICS = 100;
const PAYLOAD = 64;

const log = (msg: string) => process.stderr.write(`[bench-uplink] ${msg}\n`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const fmt = (n: number) => Math.round(n).toLocaleString("en-US");

function rssKb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? NaN);
}

/** CPU seconds (user + system) a process has used so far, from /proc/PID/stat. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}

/** CPU seconds per thread (by thread id, with its name) of a process so far, from /proc/PID/task/TID/stat. */
function threadCpu(pid: number): Map<number, { name: string; secs: number; sys: number }> {
  const out = new Map<number, { name: string; secs: number; sys: number }>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      out.set(Number(tid), { name, secs: (Number(f[11]) + Number(f[12])) / 100, sys: Number(f[12]) / 100 });
    } catch { /* the thread ended */ }
  }
  return out;
}

/**
 * CPU seconds per thread name between two threadCpu() readings (threads that started in
 * between count from zero), the main thread as "main", and the part of each spent in the
 * kernel as "NAME (system)".
 */
function threadCpuDelta(
  pid: number,
  before: Map<number, { name: string; secs: number; sys: number }>,
  after: Map<number, { name: string; secs: number; sys: number }>,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [tid, t] of after) {
    const name = tid === pid ? "main" : t.name;
    const was = before.get(tid);
    out[name] = +((out[name] ?? 0) + t.secs - (was?.secs ?? 0)).toFixed(2);
    const sys = `${name} (system)`;
    out[sys] = +((out[sys] ?? 0) + t.sys - (was?.sys ?? 0)).toFixed(2);
  }
  return out;
}

/** Context switches of a process's main thread so far (voluntary: it blocked; involuntary: it was preempted). */
function contextSwitches(pid: number): { voluntary: number; involuntary: number } {
  const status = readFileSync(`/proc/${pid}/task/${pid}/status`, "utf8");
  return {
    voluntary: Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? NaN),
    involuntary: Number(/^nonvoluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? NaN),
  };
}

/** Context switches of the main thread per 1,000 messages since `before`, as "voluntary/involuntary". */
function switchesPerThousand(pid: number, before: { voluntary: number; involuntary: number }): string {
  const now = contextSwitches(pid);
  const per = (n: number) => ((n * 1000) / N).toFixed(1);
  return `${per(now.voluntary - before.voluntary)}/${per(now.involuntary - before.involuntary)}`;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
    srv.once("error", reject);
  });
}

async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 400; i++) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect(port, "127.0.0.1", () => {
        s.destroy();
        r(true);
      });
      s.once("error", () => r(false));
    });
    if (ok) return;
    await sleep(25);
  }
  throw new Error(`nothing listening on ${port}`);
}

/** Ferry through its CLI; resolves with the port from its `listening` line. */
async function spawnFerry(
  dir: string,
  config: Record<string, unknown>,
  profile = false,
): Promise<{ proc: Subprocess<"ignore", "pipe", "pipe">; port: number }> {
  const configPath = join(dir, "ferry.json");
  // The publishers are all on loopback, which is no longer exempt from per-address limits by default.
  writeFileSync(configPath, JSON.stringify({ limits: { exempt_loopback: true }, ...config }));
  const proc = Bun.spawn(
    [
      process.execPath,
      ...(profile && PROFILE ? ["--cpu-prof", "--cpu-prof-md", `--cpu-prof-dir=${PROFILE}`] : []),
      join(ROOT, "edge/main.ts"),
      "serve",
      "--config",
      configPath,
      "--host",
      "127.0.0.1",
      "--mqtt-port",
      "0",
      "--admin-port",
      "off",
      "--data-dir",
      join(dir, "data"),
    ],
    { stdin: "ignore", stdout: "pipe", stderr: "pipe" },
  );
  void (async () => {
    const r = proc.stderr.getReader();
    const d = new TextDecoder();
    for (let x = await r.read(); !x.done; x = await r.read()) process.stderr.write(`[ferry] ${d.decode(x.value)}`);
  })().catch(() => {});
  const reader = proc.stdout.getReader();
  const decoder = new TextDecoder();
  let out = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) throw new Error(`ferry exited before listening: ${out}`);
    out += decoder.decode(value, { stream: true });
    const m = /listening mqtt:\/\/[^\s]+:(\d+)/.exec(out);
    if (m) {
      void (async () => {
        while (!(await reader.read()).done) { /* discard */ }
      })().catch(() => {});
      return { proc, port: Number(m[1]) };
    }
  }
}

const noEvents = { publish() {}, ack() {}, afterData() {}, drained() {} };

/** Publish N QoS 1 messages with up to `window` unacknowledged; resolves when all are acknowledged. */
async function fill(port: number, n: number, window = 500): Promise<number> {
  let acked = 0;
  let sent = 0;
  let done: () => void = () => {};
  const finished = new Promise<void>((r) => (done = r));
  const templates = Array.from({ length: TOPICS }, (_, t) => {
    const topic = `bench/${t}`;
    const b = mqttPacket.generate({
      cmd: "publish",
      topic,
      payload: Buffer.alloc(PAYLOAD, 0x61),
      qos: 1,
      messageId: 1,
      retain: false,
      dup: false,
    }, { protocolVersion: 4 });
    const bytes = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
    return { bytes, idOff: 2 + 2 + topic.length }; // 1-byte remaining length (< 128)
  });
  const pump = (c: Conn) => {
    while (sent < n && c.inflight < window && !c.blocked) {
      const t = templates[sent % TOPICS]!;
      const id = c.takeId();
      t.bytes[t.idOff] = id >> 8;
      t.bytes[t.idOff + 1] = id & 0xff;
      c.send(t.bytes);
      c.inflight++;
      sent++;
    }
  };
  const conn = await Conn.open("127.0.0.1", port, {
    ...noEvents,
    ack(c, _type, id) {
      c.used[id] = 0;
      c.inflight--;
      acked++;
      if (acked === n) done();
    },
    afterData: (c) => pump(c),
    drained: (c) => pump(c),
  }, "publisher");
  await conn.connect("bench-publisher", 4, 0);
  const t0 = performance.now();
  pump(conn);
  const progress = setInterval(() => log(`filled ${fmt(acked)} / ${fmt(n)}`), 5000);
  await finished;
  clearInterval(progress);
  const secs = (performance.now() - t0) / 1000;
  conn.close();
  return n / secs;
}

/** A live QoS 0 subscriber at the cloud that counts arrivals and notes the first and last. */
async function cloudCounter(
  port: number,
): Promise<{ count(): number; first(): number; last(): number; close(): void }> {
  let count = 0;
  let first = 0;
  let last = 0;
  const conn = await Conn.open("127.0.0.1", port, {
    ...noEvents,
    publish() {
      const t = performance.now();
      if (count === 0) first = t;
      last = t;
      count++;
    },
  }, "cloud-subscriber");
  await conn.connect("bench-cloud-subscriber", 4, 0);
  await conn.subscribe("site/#", 0);
  return { count: () => count, first: () => first, last: () => last, close: () => conn.close() };
}

/** $SYS counters of the uplink via the mqtt client (a handful of messages per second). */
async function watchSys(port: number): Promise<{ get(name: string): number; close(): void }> {
  const { default: mqtt } = await import("mqtt");
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0 });
  const values = new Map<string, string>();
  client.on(
    "message",
    (topic, payload) => values.set(topic.slice("$SYS/broker/uplink/bench/".length), payload.toString()),
  );
  await client.subscribeAsync("$SYS/broker/uplink/bench/#");
  return { get: (name) => Number(values.get(name) ?? NaN), close: () => client.end(true) };
}

/**
 * The same drain through a Mosquitto bridge: an edge mosquitto takes the backlog while the
 * cloud is down, then the cloud comes up and the bridge forwards it.
 */
async function bridgeMain(dir: string, cloudPort: number): Promise<void> {
  const edgePort = await freePort();
  const inflight = INFLIGHT ?? 100;
  writeFileSync(
    join(dir, "edge.conf"),
    [
      `listener ${edgePort} 127.0.0.1`,
      "allow_anonymous true",
      "persistence true",
      `persistence_location ${dir}/`,
      "max_queued_messages 0",
      `max_inflight_messages ${inflight}`,
      "set_tcp_nodelay true",
      "log_dest none",
      "connection cloud",
      `address 127.0.0.1:${cloudPort}`,
      'topic bench/# out 1 "" site/edge/',
      "cleansession false",
      "restart_timeout 1",
      "bridge_protocol_version mqttv311",
      "",
    ].join("\n"),
  );
  const edge = Bun.spawn([MOSQUITTO, "-c", join(dir, "edge.conf")], { stdout: "ignore", stderr: "ignore" });
  let cloud: Subprocess | undefined;
  let counter: Awaited<ReturnType<typeof cloudCounter>> | undefined;
  try {
    await waitForPort(edgePort);
    const idleRss = rssKb(edge.pid);
    log(`edge mosquitto pid ${edge.pid} on ${edgePort}, idle RSS ${fmt(idleRss / 1024)} MiB; filling ${fmt(N)}`);
    const fillRate = await fill(edgePort, N);
    log(`filled at ${fmt(fillRate)} msg/s`);
    await sleep(2500);
    const backlogRss = rssKb(edge.pid);
    cloud = Bun.spawn([MOSQUITTO, "-c", join(dir, "mosquitto.conf")], { stdout: "ignore", stderr: "ignore" });
    await waitForPort(cloudPort);
    counter = await cloudCounter(cloudPort);
    const start = performance.now();
    const edgeCpu0 = cpuSeconds(edge.pid);
    const cloudCpu0 = cpuSeconds(cloud.pid);
    const switches0 = contextSwitches(edge.pid);
    let peakRss = backlogRss;
    let lastCount = -1;
    let stillSince = performance.now();
    for (;;) {
      await sleep(250);
      peakRss = Math.max(peakRss, rssKb(edge.pid));
      const c = counter.count();
      if (c !== lastCount) {
        lastCount = c;
        stillSince = performance.now();
        log(`cloud counted ${fmt(c)}, edge RSS ${fmt(peakRss / 1024)} MiB`);
      }
      if (c >= N) break;
      // The QoS 0 counter may miss a few; a count that stopped moving for 3 s is the end.
      if (c > 0 && performance.now() - stillSince > 3000) break;
      if (performance.now() - start > 600_000) throw new Error("drain did not finish within 10 minutes");
    }
    const cloudRate = (counter.count() - 1) / ((counter.last() - counter.first()) / 1000);
    const drainSecs = (counter.last() - start) / 1000;
    const result = {
      edge: "mosquitto bridge",
      messages: N,
      payloadBytes: PAYLOAD,
      maxInflight: inflight,
      fillRatePerSec: Math.round(fillRate),
      idleRssMiB: +(idleRss / 1024).toFixed(1),
      backlogRssMiB: +(backlogRss / 1024).toFixed(1),
      peakDrainRssMiB: +(peakRss / 1024).toFixed(1),
      drainRateAtCloudPerSec: Math.round(cloudRate),
      cloudCounted: counter.count(),
      drainSeconds: +drainSecs.toFixed(1),
      edgeCpuCores: +((cpuSeconds(edge.pid) - edgeCpu0) / drainSecs).toFixed(2),
      /** The edge's CPU during the drain per message, in µs. */
      edgeCpuUsPerMsg: +(((cpuSeconds(edge.pid) - edgeCpu0) * 1e6) / N).toFixed(1),
      edgeSwitchesPer1k: switchesPerThousand(edge.pid, switches0),
      mosquittoCpuCores: +((cpuSeconds(cloud.pid) - cloudCpu0) / drainSecs).toFixed(2),
    };
    log(`drain: ${fmt(cloudRate)} msg/s at the cloud`);
    console.log(JSON.stringify(result));
  } finally {
    counter?.close();
    edge.kill("SIGKILL");
    await edge.exited;
    cloud?.kill("SIGTERM");
    await cloud?.exited;
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "ferry-bench-uplink-"));
  const cloudPort = await freePort();
  writeFileSync(
    join(dir, "mosquitto.conf"),
    [
      `listener ${cloudPort} 127.0.0.1`,
      "allow_anonymous true",
      "max_queued_messages 0",
      "max_inflight_messages 0",
      "set_tcp_nodelay true",
      "persistence false",
      "log_dest none",
      "",
    ].join("\n"),
  );
  if (BRIDGE) {
    try {
      await bridgeMain(dir, cloudPort);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    return;
  }
  const uplink: Record<string, unknown> = {
    name: "bench",
    url: `mqtt://127.0.0.1:${cloudPort}`,
    protocol_version: PROTOCOL,
    stamp: STAMP,
    forward: [{ filter: "bench/#", topic: "site/${edge_id}/${topic}", qos: 1 }],
    backoff: { min_ms: 100, max_ms: 200, jitter: 0 },
  };
  if (INFLIGHT !== undefined) uplink.max_inflight = INFLIGHT;
  const ferryConfig = {
    log_level: "error",
    storage: { durability: "commit" },
    mqtt: { sys_interval: 1 },
    uplinks: [uplink],
  };
  let ferry = await spawnFerry(dir, ferryConfig);
  let cloud: Subprocess | undefined;
  let counter: Awaited<ReturnType<typeof cloudCounter>> | undefined;
  let sys: Awaited<ReturnType<typeof watchSys>> | undefined;
  try {
    await sleep(500);
    const idleRss = rssKb(ferry.proc.pid);
    log(
      `ferry pid ${ferry.proc.pid} on ${ferry.port}, idle RSS ${fmt(idleRss / 1024)} MiB; filling ${
        fmt(N)
      } messages (cloud down)`,
    );
    const fillRate = await fill(ferry.port, N);
    log(`filled at ${fmt(fillRate)} msg/s`);
    sys = await watchSys(ferry.port);
    await sleep(2500);
    const backlogRss = rssKb(ferry.proc.pid);
    const backlogEntries = sys.get("backlog/entries");
    log(`holding backlog of ${fmt(backlogEntries)} entries, RSS ${fmt(backlogRss / 1024)} MiB`);
    // The process that took the backlog in still carries what ingesting it cost; a fresh
    // one on the same data directory shows what holding it costs (and that it survives).
    sys.close();
    ferry.proc.kill("SIGTERM");
    await ferry.proc.exited;
    ferry = await spawnFerry(dir, ferryConfig, true);
    sys = await watchSys(ferry.port);
    await sleep(2500);
    const restartedRss = rssKb(ferry.proc.pid);
    const restartedBacklog = sys.get("backlog/entries");
    log(
      `restarted${PROFILE ? " under the profiler" : ""}: backlog ${fmt(restartedBacklog)} entries, RSS ${
        fmt(restartedRss / 1024)
      } MiB`,
    );
    if (restartedBacklog < N) throw new Error(`the backlog did not survive the restart: ${restartedBacklog} entries`);

    cloud = Bun.spawn([MOSQUITTO, "-c", join(dir, "mosquitto.conf")], { stdout: "ignore", stderr: "ignore" });
    await waitForPort(cloudPort);
    if (SUBSCRIBER) counter = await cloudCounter(cloudPort);
    const ackedBefore = sys.get("acknowledged") || 0;
    const start = performance.now();
    const ferryCpu0 = cpuSeconds(ferry.proc.pid);
    const threads0 = threadCpu(ferry.proc.pid);
    const switches0 = contextSwitches(ferry.proc.pid);
    const cloudCpu0 = cpuSeconds(cloud.pid);
    let peakRss = restartedRss;
    const samples: Array<{ t: number; acked: number }> = [];
    let lastSeen = NaN;
    let allAckedAt: number | undefined;
    for (;;) {
      await sleep(250);
      peakRss = Math.max(peakRss, rssKb(ferry.proc.pid));
      const acked = sys.get("acknowledged") - ackedBefore;
      if (acked !== lastSeen) {
        samples.push({ t: performance.now(), acked });
        lastSeen = acked;
        log(
          `acknowledged ${fmt(acked)}, cloud counted ${fmt(counter?.count() ?? NaN)}, RSS ${fmt(peakRss / 1024)} MiB`,
        );
      }
      if (acked >= N) {
        // The QoS 0 counter at the cloud may miss a few (mosquitto drops QoS 0 to a slow
        // reader); the link's count of PUBACKs is the measure, the counter a cross-check.
        allAckedAt ??= performance.now();
        if (!counter || counter.count() >= N || performance.now() - allAckedAt > 3000) break;
      }
      if (performance.now() - start > 600_000) throw new Error("drain did not finish within 10 minutes");
    }
    // Rate at the link: between the first $SYS sample showing progress and the one showing the end.
    const firstMoving = samples.find((s) => s.acked > 0)!;
    const prev = samples[samples.indexOf(firstMoving) - 1];
    const end = samples[samples.length - 1]!;
    const linkRate = (end.acked - (prev?.acked ?? 0)) / ((end.t - (prev?.t ?? start)) / 1000);
    const cloudRate = counter ? (counter.count() - 1) / ((counter.last() - counter.first()) / 1000) : NaN;
    const afterRss = rssKb(ferry.proc.pid);
    const drainSecs = (end.t - start) / 1000;
    const ferryCpuSecs = cpuSeconds(ferry.proc.pid) - ferryCpu0;
    const ferryCpu = ferryCpuSecs / drainSecs;
    const threads = threadCpuDelta(ferry.proc.pid, threads0, threadCpu(ferry.proc.pid));
    const cloudCpu = (cpuSeconds(cloud.pid) - cloudCpu0) / drainSecs;
    const result = {
      messages: N,
      payloadBytes: PAYLOAD,
      maxInflight: INFLIGHT ?? "default",
      protocol: PROTOCOL,
      stamp: STAMP,
      fillRatePerSec: Math.round(fillRate),
      idleRssMiB: +(idleRss / 1024).toFixed(1),
      /** The process that took the backlog in, 2.5 s after the last PUBACK. */
      backlogRssMiB: +(backlogRss / 1024).toFixed(1),
      /** A fresh Ferry on the same data directory, holding the backlog, before the cloud is up. */
      restartedWithBacklogRssMiB: +(restartedRss / 1024).toFixed(1),
      peakDrainRssMiB: +(peakRss / 1024).toFixed(1),
      afterDrainRssMiB: +(afterRss / 1024).toFixed(1),
      drainRateAtLinkPerSec: Math.round(linkRate),
      drainRateAtCloudPerSec: Math.round(cloudRate),
      cloudCounted: counter?.count() ?? null,
      drainSeconds: +drainSecs.toFixed(1),
      /** CPU used during the drain, in cores (1 = one core busy all the time). */
      ferryCpuCores: +ferryCpu.toFixed(2),
      /** Ferry's CPU during the drain per message acknowledged, in µs. */
      ferryCpuUsPerMsg: +((ferryCpuSecs * 1e6) / N).toFixed(1),
      /** The same CPU seconds by thread name (the storage Worker's thread among them). */
      ferryThreadCpuSecs: threads,
      /** The main thread's context switches per 1,000 messages, voluntary/involuntary. */
      ferryMainSwitchesPer1k: switchesPerThousand(ferry.proc.pid, switches0),
      mosquittoCpuCores: +cloudCpu.toFixed(2),
    };
    log(`drain: ${fmt(linkRate)} msg/s at the link, ${fmt(cloudRate)} msg/s at the cloud`);
    console.log(JSON.stringify(result));
  } finally {
    counter?.close();
    sys?.close();
    ferry.proc.kill(PROFILE ? "SIGTERM" : "SIGKILL");
    await ferry.proc.exited;
    cloud?.kill("SIGTERM");
    await cloud?.exited;
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
