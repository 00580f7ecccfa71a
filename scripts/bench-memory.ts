#!/usr/bin/env bun
/**
 * Issue 13's table, every row, Ferry's executable and Mosquitto side by side in the same run:
 * this script runs the benchmarks that measure the rows as child processes and prints the
 * figures as one table (and the children's own tables above it).
 *
 *   row                                                         measured by
 *   a client floods PINGREQs (or QoS 1 PUBLISHes) and never reads  measure-connection-bounds.ts flood, floodq1
 *   a subscriber never reads, a publisher floods 64 B QoS 0       measure-connection-bounds.ts stuck
 *   restart with 100,000 retained + 100,000 queued                bench-restart.ts restart
 *   4 QoS 1 publishers at a subscriber slower than them           bench-fanin-slow.ts
 *   a persistent session sends 20,000 SUBSCRIBEs                  bench-restart.ts subscribe
 *   600 sockets send all but the last byte of a 1 MiB CONNECT     measure-connection-bounds.ts connect
 *   a 1 MiB PUBLISH a byte at a time                              measure-connection-bounds.ts trickle
 *   and one of Ferry's own: its memory budget filled by a subscriber that acknowledges nothing
 *   (what the budget counted at its peak, and the RSS then)       this script
 *
 * Ferry is the executable (`npm run build`), evicted from the page cache before each start
 * (scripts/page-cache.ts), on its defaults but for `limits.exempt_loopback` (every client is
 * on loopback). Mosquitto gets `set_tcp_nodelay true` and `max_inflight_messages 64` (Ferry's
 * `mqtt.max_inflight`) everywhere, and `max_queued_messages 0` (no limit) where a row queues
 * (restart, fan-in; its default of 1,000 would drop), `persistence true` for the restart.
 *
 *   npx bun scripts/bench-memory.ts [--cmd dist/ferry-linux-x64] [--rounds 1] [--quick]
 *        [--rows flood,floodq1,stuck,restart,fanin,subscribe,connect,trickle,budget] [--json FILE]
 *
 * `--rows qos0` adds the stuck row's flood with no subscriber at all (not a row of the issue).
 *
 * --quick shortens every case (for a look, not for the record). The load average before and
 * after is printed: on a busy machine, read the ratios.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import mqttPacket from "mqtt-packet";
import { dropFromPageCache } from "./page-cache.ts";

const ROOT = resolve(import.meta.dir, "..");

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}
const CMD = resolve(flag("cmd", join(ROOT, "dist", "ferry-linux-x64")));
const ROUNDS = flag("rounds", "1");
const QUICK = process.argv.includes("--quick");
const ROWS = new Set(flag("rows", "flood,floodq1,stuck,restart,fanin,subscribe,connect,trickle,budget").split(","));
const JSON_OUT = flag("json", "");
const MiB = 1024 * 1024;

const log = (msg: string) => process.stderr.write(`[bench-memory] ${msg}\n`);
const loadavg = () => readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Run `script` (under scripts/) with `args` under this bun; its stdout goes on ours too. Returns its --json file. */
async function child(script: string, args: string[]): Promise<unknown> {
  const dir = mkdtempSync(join(tmpdir(), "bench-memory-"));
  const out = join(dir, "out.json");
  const cmd = [process.execPath, join(ROOT, "scripts", script), ...args, "--json", out];
  log(cmd.slice(1).join(" "));
  const proc = Bun.spawn(cmd, { cwd: ROOT, stdout: "inherit", stderr: "inherit" });
  const code = await proc.exited;
  try {
    if (code !== 0) throw new Error(`${script} exited with ${code}`);
    return JSON.parse(readFileSync(out, "utf8"));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- the children's records -----------------------------------------------------------

interface BoundsRecord {
  case: string;
  broker: "ferry" | "mosquitto";
  round: number;
  text: string;
  figures: Record<string, number>;
}
interface FaninRecord {
  target: string;
  acked: number;
  dropped: number;
  ackedPerS: number;
  deliveredPerS: number;
  rssPeakMb: number;
}
interface RestartRecords {
  restart: Record<string, Array<{ ms: number; rssKb: number; hwmKb: number }>>;
  afterRestart: Record<string, { drainMs: number; drainPeakKb: number; retainedMs: number; retainedPeakKb: number }>;
  subscribe: Record<string, Array<{ ms: number; growthKb: number; laterKb: number; peakKb: number; stallMs: number }>>;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const range = (xs: number[], digits = 1) =>
  xs.length === 1 ? xs[0]!.toFixed(digits) : `${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)}`;

/** The table: one line per row of the issue, Mosquitto's figure, Ferry's, the goal and whether it is met. */
const table: Array<{ row: string; mosquitto: string; ferry: string; goal: string; met: string }> = [];

function boundsRows(records: BoundsRecord[]): void {
  const of = (c: string, b: string) => records.filter((r) => r.case === c && r.broker === b).map((r) => r.figures);
  const flood = (c: string, what: string) => {
    const m = of(c, "mosquitto");
    const f = of(c, "ferry");
    if (f.length === 0) return;
    const fmt = (xs: Array<Record<string, number>>) =>
      `+${range(xs.map((x) => x.growthMb!))} MB for ${range(xs.map((x) => x.sentMb!), 0)} MB sent (${
        range(xs.map((x) => x.growthPer10Mb!), 2)
      } MB per 10 MB)`;
    table.push({
      row: `${what}, never reads: RSS growth per 10 MB sent`,
      mosquitto: fmt(m),
      ferry: fmt(f),
      goal: "≤ +8 MB per 10 MB",
      met: f.every((x) => x.growthPer10Mb! <= 8) ? "yes" : "no",
    });
  };
  flood("flood", "a client sends PINGREQs");
  flood("floodq1", "a client sends QoS 1 PUBLISHes (64 B) whose PUBACKs it");
  const stuck = (c: string, row: string, goal: string, limit: number) => {
    const m = of(c, "mosquitto");
    const f = of(c, "ferry");
    if (f.length === 0) return;
    const fmt = (xs: Array<Record<string, number>>) =>
      `${range(xs.map((x) => x.rssPeakMb!))} MB (${range(xs.map((x) => x.msgPerS! / 1e6), 2)} M msg/s taken)`;
    table.push({
      row,
      mosquitto: fmt(m),
      ferry: fmt(f),
      goal,
      met: f.every((x) => x.rssPeakMb! <= limit) ? "yes" : "no",
    });
  };
  stuck("stuck", "a subscriber never reads; a publisher floods 64 B QoS 0 at it: peak RSS", "≤ 64 MB", 64);
  stuck("qos0", "the same flood with no subscriber: peak RSS", "(none)", Infinity);
  const connect = (xs: Array<Record<string, number>>) =>
    `+${range(xs.map((x) => x.growthMb!))} MB (peak +${range(xs.map((x) => x.peakGrowthMb!))}), ${
      range(xs.map((x) => x.closed!), 0)
    } closed`;
  if (of("connect", "ferry").length > 0) {
    table.push({
      row: "600 sockets send all but the last byte of a 1 MiB CONNECT: RSS growth 1 s after the last write (peak)",
      mosquitto: connect(of("connect", "mosquitto")),
      ferry: connect(of("connect", "ferry")),
      goal: "bounded by a pre-auth budget (limits.max_preauth_bytes: 32 MiB)",
      met: of("connect", "ferry").every((x) => x.growthMb! <= 64) ? "yes" : "no",
    });
  }
  const trickle = (xs: Array<Record<string, number>>) =>
    xs.map((x) => `${x.closed ? "closed" : "open"} after ${x.seconds!.toFixed(0)} s`).join(", ");
  if (of("trickle", "ferry").length > 0) {
    table.push({
      row: "a 1 MiB PUBLISH sent a byte every 2 s after login",
      mosquitto: trickle(of("trickle", "mosquitto")),
      ferry: trickle(of("trickle", "ferry")),
      goal: "closed by a per-packet deadline (limits.packet_timeout: 60 s)",
      met: of("trickle", "ferry").every((x) => x.closed === 1) ? "yes" : "no",
    });
  }
}

function restartRows(r: RestartRecords): void {
  const mb = (kb: number) => kb / 1024;
  if (r.restart.ferry) {
    const fmt = (xs: Array<{ ms: number; rssKb: number }>) =>
      `${mb(median(xs.map((x) => x.rssKb))).toFixed(0)} MB / ${
        median(xs.map((x) => x.ms)).toFixed(0)
      } ms (median of ${xs.length})`;
    const f = r.restart.ferry;
    table.push({
      row: "restart with 100,000 retained + 100,000 queued for an offline session: RSS / time at accepting",
      mosquitto: r.restart.mosquitto ? fmt(r.restart.mosquitto) : "-",
      ferry: fmt(f),
      goal: "≤ 120 MB / ≤ 1 s",
      met: mb(median(f.map((x) => x.rssKb))) <= 120 && median(f.map((x) => x.ms)) <= 1000 ? "yes" : "no",
    });
  }
  if (r.subscribe.ferry) {
    const fmt = (xs: Array<{ ms: number; growthKb: number; stallMs: number }>) =>
      `${range(xs.map((x) => x.ms / 1000), 2)} s, +${range(xs.map((x) => mb(x.growthKb)), 0)} MB, others wait ≤ ${
        range(xs.map((x) => x.stallMs / 1000), 2)
      } s`;
    const f = r.subscribe.ferry;
    table.push({
      row: "a persistent session sends 20,000 SUBSCRIBEs of one filter each: time, RSS growth",
      mosquitto: r.subscribe.mosquitto ? fmt(r.subscribe.mosquitto) : "-",
      ferry: fmt(f),
      goal: "linear: ≤ 3 s, ≤ 50 MB",
      met: f.every((x) => x.ms <= 3000 && mb(x.growthKb) <= 50) ? "yes" : "no",
    });
  }
}

function faninRows(rows: FaninRecord[]): void {
  const fmt = (xs: FaninRecord[]) =>
    xs.length === 0
      ? "-"
      : `${xs.map((x) => `${x.dropped} of ${x.acked}`).join(", ")} dropped; acked ${
        range(xs.map((x) => x.ackedPerS / 1000), 1)
      }k/s, delivered ${range(xs.map((x) => x.deliveredPerS / 1000), 1)}k/s, RSS ≤ ${
        range(xs.map((x) => x.rssPeakMb), 0)
      } MB`;
  const ferry = rows.filter((r) => r.target.startsWith("ferry"));
  for (const target of [...new Set(ferry.map((r) => r.target))]) {
    const f = rows.filter((r) => r.target === target);
    table.push({
      row: `4 QoS 1 publishers → 1 online subscriber reading 5,000 msg/s: acknowledged, then dropped (${
        target === "ferry" ? "commit" : target.replace("ferry-", "")
      })`,
      mosquitto: fmt(rows.filter((r) => r.target === "mosquitto")),
      ferry: fmt(f),
      goal: "0 acknowledged messages dropped to an online subscriber",
      met: f.every((x) => x.dropped === 0) ? "yes" : "no",
    });
  }
}

// ---- Ferry's own row: the budget filled ---------------------------------------------------

function freePort(): number {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = l.port;
  l.stop(true);
  return port;
}

function rssMb(pid: number): number {
  const m = /^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(m?.[1]) / 1024;
}

/** A socket to `port` that sent `first` (a CONNECT) and got an answer; rejects if the connection fails. */
function socketTo(port: number, first: Buffer): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1", () => s.write(first));
    s.once("error", reject);
    s.once("close", () => reject(new Error("closed before an answer")));
    s.once("data", () => {
      s.removeAllListeners("error");
      s.removeAllListeners("close");
      s.on("error", () => {});
      resolve(s);
    });
  });
}

/**
 * Ferry on its defaults (limits.max_memory 128 MiB) with a subscriber that takes 8 messages
 * at a time and acknowledges none, and four 3.1.1 publishers writing 4 KiB QoS 1 messages to
 * it as fast as Ferry reads them, for `seconds`: the budget's count at its peak (admin API)
 * against the process's RSS, and what the budget did.
 */
async function budgetRow(seconds: number): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "bench-memory-budget-"));
  const port = freePort();
  const admin = freePort();
  writeFileSync(
    join(dir, "ferry.json"),
    JSON.stringify({
      limits: { exempt_loopback: true },
      log_level: "warn",
      ...JSON.parse(process.env.BUDGET_EXTRA ?? "{}"),
    }),
  );
  dropFromPageCache(CMD);
  const proc = Bun.spawn(
    [
      CMD,
      "serve",
      "-c",
      join(dir, "ferry.json"),
      "--mqtt-port",
      String(port),
      "--admin-port",
      String(admin),
      "-d",
      join(dir, "data"),
    ],
    { stdout: "ignore", stderr: "ignore" },
  );
  try {
    for (let i = 0; i < 200; i++) {
      try {
        (await socketTo(
          port,
          mqttPacket.generate({ cmd: "connect", clientId: "probe", protocolVersion: 4 } as mqttPacket.Packet),
        ))
          .destroy();
        break;
      } catch {
        await sleep(50);
      }
    }
    const broker = async () =>
      (await (await fetch(`http://127.0.0.1:${admin}/api/v1/broker`)).json()) as {
        memory: {
          limit_bytes: number;
          used_bytes: number;
          peak_bytes: number;
          publishers_slowed_total: number;
          refused_publishes: number;
          /** Full collections the resident watch asked for (absent before it existed). */
          collections_total?: number;
        };
      };
    const sub = await socketTo(
      port,
      mqttPacket.generate(
        {
          cmd: "connect",
          clientId: "taker",
          protocolVersion: 5,
          clean: true,
          properties: { receiveMaximum: 8 },
        } as mqttPacket.Packet,
        { protocolVersion: 5 },
      ),
    );
    sub.on("data", () => {}); // reads, acknowledges nothing
    sub.write(
      mqttPacket.generate(
        { cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "fill/#", qos: 1 }] } as mqttPacket.Packet,
        { protocolVersion: 5 },
      ),
    );
    const packet = (k: number) =>
      mqttPacket.generate(
        {
          cmd: "publish",
          topic: `fill/${k}`,
          payload: Buffer.alloc(4096, 0x61),
          qos: 1,
          messageId: 1,
          retain: false,
          dup: false,
        },
      );
    const pubs = await Promise.all(
      [0, 1, 2, 3].map((k) =>
        socketTo(
          port,
          mqttPacket.generate({ cmd: "connect", clientId: `filler-${k}`, protocolVersion: 4 } as mqttPacket.Packet),
        )
      ),
    );
    const batches = pubs.map((_, k) => Buffer.concat(Array.from({ length: 16 }, () => packet(k))));
    let rssPeak = 0;
    let countedPeak = 0;
    let closed = 0;
    for (const p of pubs) p.on("close", () => closed++);
    const t0 = Date.now();
    let lastLook = 0;
    while (Date.now() - t0 < seconds * 1000) {
      for (let k = 0; k < pubs.length; k++) {
        if (!pubs[k]!.destroyed && pubs[k]!.writableLength < MiB) pubs[k]!.write(batches[k]!);
      }
      if (Date.now() - lastLook > 200) {
        lastLook = Date.now();
        rssPeak = Math.max(rssPeak, rssMb(proc.pid));
        countedPeak = Math.max(countedPeak, (await broker()).memory.used_bytes);
        if (process.env.TRACE) {
          const t = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
          const v = (n: string) => (Number(new RegExp(`^${n} (\\S+)$`, "m").exec(t)?.[1]) / MiB).toFixed(1);
          log(
            `t ${((Date.now() - t0) / 1000).toFixed(1)} rss ${rssMb(proc.pid).toFixed(0)} heap ${
              v("process_heap_bytes")
            } used ${v("ferry_memory_used_bytes")} msgs ${v('ferry_memory_bytes\\{part="messages"\\}')} out ${
              v('ferry_memory_bytes\\{part="output"\\}')
            } in ${v('ferry_memory_bytes\\{part="input"\\}')} queued ${
              Number(/^ferry_queued_messages (\S+)$/m.exec(t)?.[1])
            }`,
          );
        }
      }
      await sleep(1);
    }
    const b = await broker();
    rssPeak = Math.max(rssPeak, rssMb(proc.pid));
    const limit = b.memory.limit_bytes / MiB;
    table.push({
      row:
        `Ferry's memory budget (limits.max_memory ${limit} MiB) filled for ${seconds} s by a subscriber that acknowledges nothing: counted at peak / RSS at peak`,
      mosquitto: "(no budget)",
      ferry: `${(b.memory.peak_bytes / MiB).toFixed(1)} MiB / ${
        rssPeak.toFixed(0)
      } MB; publishers slowed ${b.memory.publishers_slowed_total} times, ${b.memory.refused_publishes} publishes refused, ${closed} of 4 publishers closed (3.1.1 at the budget), ${
        b.memory.collections_total ?? "no"
      } collections asked for`,
      goal: "counted ≤ the budget plus the margin",
      met: b.memory.peak_bytes <= b.memory.limit_bytes + 4 * MiB ? "yes" : "no",
    });
    log(`budget: counted peak ${(countedPeak / MiB).toFixed(1)} MiB (sampled), RSS peak ${rssPeak.toFixed(0)} MB`);
    for (const s of [...pubs, sub]) s.destroy();
  } finally {
    proc.kill("SIGTERM");
    await proc.exited;
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- main -----------------------------------------------------------------------------

if (!existsSync(CMD)) throw new Error(`${CMD} not found: npm run build first`);
const version = new TextDecoder().decode(Bun.spawnSync([CMD, "version"]).stdout).trim();
const before = loadavg();
log(`${version}; load average before: ${before}`);

// "qos0" (the stuck row's flood with no subscriber at all) only when asked for: it is no row of the issue.
const boundsCases = ["flood", "floodq1", "stuck", "qos0", "connect", "trickle"].filter((c) => ROWS.has(c));
if (boundsCases.length > 0) {
  const args = ["--cmd", CMD, "--cases", boundsCases.join(","), "--rounds", ROUNDS];
  if (QUICK) {
    args.push(
      "--flood-mb",
      "30",
      "--flood-seconds",
      "8",
      "--stuck-seconds",
      "8",
      "--sockets",
      "200",
      "--trickle-max",
      "70",
    );
  }
  boundsRows((await child("measure-connection-bounds.ts", args)) as BoundsRecord[]);
}
const restartCases = ["restart", "subscribe"].filter((c) => ROWS.has(c));
if (restartCases.length > 0) {
  const args = [
    "--cases",
    restartCases.join(","),
    "--cold",
    "--ferry",
    `ferry=${CMD}`,
    "--rounds",
    QUICK ? "1" : ROUNDS,
  ];
  if (QUICK) args.push("--retained", "20000", "--queued", "20000", "--subscribes", "5000");
  restartRows((await child("bench-restart.ts", args)) as RestartRecords);
}
if (ROWS.has("fanin")) {
  const args = ["--brokers", "ferry,ferry-memory,mosquitto", "--ferry-cmd", CMD, "--cold", "--rate", "5000"];
  args.push("--duration", QUICK ? "3" : "5", "--rounds", ROUNDS);
  faninRows((await child("bench-fanin-slow.ts", args)) as FaninRecord[]);
}
if (ROWS.has("budget")) await budgetRow(QUICK ? 8 : 20);

const after = loadavg();
console.log(`\n## Issue 13, every row: ${version} and Mosquitto, ${new Date().toISOString()}`);
console.log(
  `Load average before ${before}, after ${after} (${
    (await Bun.file("/proc/cpuinfo").text()).split("processor").length - 1
  } CPUs)${QUICK ? "; --quick" : ""}\n`,
);
console.log("| case | Mosquitto | Ferry | goal | met |\n|---|---|---|---|---|");
for (const r of table) console.log(`| ${r.row} | ${r.mosquitto} | ${r.ferry} | ${r.goal} | ${r.met} |`);
if (JSON_OUT) writeFileSync(JSON_OUT, JSON.stringify({ version, before, after, quick: QUICK, table }, null, 1));
process.exit(0);
