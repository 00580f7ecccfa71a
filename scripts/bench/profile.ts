#!/usr/bin/env bun
/**
 * CPU profile of Ferry under benchmark load: starts Ferry with `bun --cpu-prof`, drives
 * a scenario from run.ts with the load generator, stops Ferry (the profile is written
 * at exit) and prints the hottest functions over the loaded interval.
 *
 *   npx bun scripts/bench/profile.ts [--scenarios fanin-q1,fanout-q0] [--broker ferry|ferry-memory]
 *       [--duration 8] [--interval-us 500] [--top 25] [--out DIR]
 *   npx bun scripts/bench/profile.ts --analyse FILE.cpuprofile [--top 25]
 *   npx bun scripts/bench/profile.ts --perf [--scenarios dev-cpu-200x1] [--duration 20] [--env K=V,K2=V2]
 *       [--ferry-cmd "[NAME=VALUE ...] dist/ferry-linux-x64"]
 *
 * "self" = samples whose innermost frame is that function; a native frame (no source
 * file: Buffer methods, typed-array slice, socket write) is listed under its name
 * with the nearest JavaScript caller after "←", so that its cost lands somewhere
 * actionable. "total" = samples with the function anywhere on the stack. Percentages
 * are of all samples taken while load was running (JSC samples only while JavaScript
 * or its native callees run on the main thread; idle time is not sampled). The interval
 * analysed starts after the scenario's warmup, so connection set-up is left out.
 *
 * `--perf` answers what the JavaScript profile cannot see: how the whole process's CPU
 * splits between its threads (event loop, storage thread, JIT, GC, allocator) and, per
 * thread, between system calls (by name), other kernel work, JIT-compiled JavaScript and
 * native code in the bun binary (JSC, SQLite, uSockets; the binary is stripped, so no
 * finer). It runs `perf record -F 999 -g -p PID` over the measured window, without
 * --cpu-prof, and reads `perf script`. `--ferry-cmd` profiles another command than
 * `bun edge/main.ts`, e.g. the compiled executable as users run it (its leading NAME=VALUE
 * words are its environment, as in scripts/measure-idle.ts); perf mode only, since
 * --cpu-prof is a flag of bun's command line.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { type BrokerName, ferryRevision, ROOT, snapshotFerry, startBroker, type StartOptions } from "./brokers.ts";
import { splitCommand } from "../command-env.ts";
import { runLoadgen, SCENARIOS } from "./run.ts";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Roots whose prefix is cut from file names (the repository, and the source snapshot). */
const roots = [ROOT];

function where(cf: CallFrame): string {
  let file = cf.url.replace(/^file:\/\//, "");
  for (const r of roots) if (file.startsWith(`${r}/`)) file = relative(r, file);
  file = file.replace(/^.*\/ferry-bench-src-[^/]+\//, "");
  file = file.replace(/^node_modules\//, "");
  return `${file}:${cf.lineNumber + 1}`;
}

/** Top functions by self and total samples within [fromUs, toUs] (epoch µs; whole profile if absent). */
export function analyse(p: CpuProfile, top: number, fromUs = -Infinity, toUs = Infinity): string {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const isJs = (cf: CallFrame) => cf.url !== "" && !cf.url.startsWith("node:") && cf.url !== "[native code]";
  const selfKey = new Map<number, string>();
  const stackKeys = new Map<number, string[]>();
  const keyOf = (id: number): string => {
    const cached = selfKey.get(id);
    if (cached !== undefined) return cached;
    const cf = byId.get(id)!.callFrame;
    let key: string;
    if (isJs(cf)) key = `${cf.functionName || "(anonymous)"}  ${where(cf)}`;
    else {
      let up = parent.get(id);
      while (up !== undefined && !isJs(byId.get(up)!.callFrame)) up = parent.get(up);
      const name = cf.functionName || "(native)";
      const caller = up === undefined
        ? ""
        : ` ← ${byId.get(up)!.callFrame.functionName || "(anonymous)"}  ${where(byId.get(up)!.callFrame)}`;
      key = `[${name}]${caller}`;
    }
    selfKey.set(id, key);
    return key;
  };
  const stack = (id: number): string[] => {
    const cached = stackKeys.get(id);
    if (cached) return cached;
    const keys = new Set<string>();
    for (let x: number | undefined = id; x !== undefined; x = parent.get(x)) {
      const cf = byId.get(x)!.callFrame;
      if (isJs(cf)) keys.add(`${cf.functionName || "(anonymous)"}  ${where(cf)}`);
    }
    const list = [...keys];
    stackKeys.set(id, list);
    return list;
  };
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  const files = new Map<string, number>();
  let t = p.startTime;
  let n = 0;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    if (t < fromUs || t > toUs) continue;
    const id = p.samples[i]!;
    const name = byId.get(id)!.callFrame.functionName;
    if (name === "(root)" || name === "(idle)" || name === "(program)") continue;
    n++;
    const k = keyOf(id);
    self.set(k, (self.get(k) ?? 0) + 1);
    for (const s of stack(id)) total.set(s, (total.get(s) ?? 0) + 1);
    const file = k.startsWith("[")
      ? "(native: Buffer/typed arrays/sockets/builtins)"
      : k.split("  ")[1]!.replace(/:\d+$/, "");
    files.set(file, (files.get(file) ?? 0) + 1);
  }
  const pct = (v: number) => `${((100 * v) / Math.max(1, n)).toFixed(1).padStart(5)}%`;
  const out: string[] = [`${n} samples under load`, "", "self time by function:"];
  for (const [k, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) out.push(`  ${pct(v)}  ${k}`);
  out.push("", "self time by file:");
  for (const [k, v] of [...files].sort((a, b) => b[1] - a[1]).slice(0, 15)) out.push(`  ${pct(v)}  ${k}`);
  out.push("", "total (inclusive) time, Ferry's own functions:");
  const own = [...total].filter(([k]) => / (src|edge)\//.test(k)).sort((a, b) => b[1] - a[1]).slice(0, top);
  for (const [k, v] of own) out.push(`  ${pct(v)}  ${k}`);
  return out.join("\n");
}

/** Which of Bun's threads a perf sample came from. */
function threadOf(comm: string, tid: number, pid: number): string {
  if (tid === pid) return "event loop (main thread)";
  if (comm === "Worker") return "storage thread (Worker: SQLite, fsync)";
  if (/^JITWorker/.test(comm)) return "JIT compiler threads";
  // JavaScriptCore's heap-block warm-up (BUN_JSC_useWarmUpMarkedBlocks), not a compiler: 1-2 ms/s at 200 msg/s.
  if (/^JSCWarmUp/.test(comm)) return "heap warm-up (JSCWarmUp)";
  if (/HeapHelper|ollector/.test(comm)) return "garbage collector threads";
  if (/^mi-/.test(comm)) return "allocator (mimalloc scavenger)";
  return `other: ${comm}`;
}

/** What a sample's stack (leaf first) was doing: a system call by name, other kernel work, or user code. */
function activityOf(frames: { sym: string; dso: string }[]): string {
  for (const f of frames) {
    const m = /^__(?:x64|se|do)_sys_(\w+)/.exec(f.sym);
    if (m) return `syscall ${m[1]}`;
  }
  const leaf = frames[0];
  if (!leaf) return "?";
  if (leaf.dso.includes("kernel")) return "kernel, no syscall (interrupts, faults, scheduling)";
  if (leaf.dso.includes("perf-") || leaf.dso.startsWith("[JIT]")) return "JIT-compiled JavaScript";
  if (/bun(\.exe)?$|ferry/.test(leaf.dso)) return "native code in bun (JSC, SQLite, uSockets)";
  if (leaf.dso.includes("libc")) return "libc";
  return leaf.dso;
}

/** Split perf samples by thread and activity; shares of all samples and ms of CPU per second. */
export function analysePerf(script: string, pid: number, seconds: number, hz: number): string {
  const byThread = new Map<string, number>();
  const byBoth = new Map<string, number>();
  const byActivity = new Map<string, number>();
  let n = 0;
  for (const block of script.split(/\n\s*\n/)) {
    const lines = block.split("\n").filter((l) => l.trim() !== "");
    const head = /^\s*(.+?)\s+(\d+)\s*$/.exec(lines[0] ?? "");
    if (!head) continue;
    const frames = lines.slice(1).map((l) => {
      const m = /^\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$/.exec(l);
      return { sym: m?.[1] ?? "", dso: m?.[2] ?? "" };
    });
    const thread = threadOf(head[1]!, Number(head[2]), pid);
    const what = activityOf(frames);
    n++;
    byThread.set(thread, (byThread.get(thread) ?? 0) + 1);
    byActivity.set(what, (byActivity.get(what) ?? 0) + 1);
    byBoth.set(`${thread}\t${what}`, (byBoth.get(`${thread}\t${what}`) ?? 0) + 1);
  }
  const pct = (v: number) => `${((100 * v) / Math.max(1, n)).toFixed(1).padStart(5)}%`;
  const ms = (v: number) => `${((v / hz / seconds) * 1000).toFixed(1).padStart(6)} ms/s`;
  const sorted = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]);
  const out = [`${n} samples at ${hz} Hz over ${seconds} s (${ms(n).trim()} of CPU)`, "", "by thread:"];
  for (const [k, v] of sorted(byThread)) out.push(`  ${pct(v)} ${ms(v)}  ${k}`);
  out.push("", "by activity, all threads:");
  for (const [k, v] of sorted(byActivity)) if (v / n >= 0.005) out.push(`  ${pct(v)} ${ms(v)}  ${k}`);
  out.push("", "by thread and activity (≥ 0.5 %):");
  for (const [k, v] of sorted(byBoth)) {
    if (v / n >= 0.005) out.push(`  ${pct(v)} ${ms(v)}  ${k.replace("\t", " | ")}`);
  }
  return out.join("\n");
}

async function perfRun(
  s: (typeof SCENARIOS)[number],
  broker: BrokerName,
  ferryRoot: string,
  duration: number,
  dir: string,
  start: StartOptions,
): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const b = await startBroker(broker, { ferryRoot, ...start });
  const warmup = s.warmup ?? 1;
  const data = join(dir, "perf.data");
  const hz = 999;
  const loadgen = runLoadgen({ ...s, duration }, b, { duration, warmup });
  // Connections are set up before the warmup starts; 1 s more covers that.
  await Bun.sleep((warmup + 1) * 1000);
  const seconds = Math.max(1, duration - 1);
  const rec = Bun.spawn(
    ["perf", "record", "-q", "-F", String(hz), "-g", "-p", String(b.pid), "-o", data, "--", "sleep", String(seconds)],
    { stdout: "ignore", stderr: "pipe" },
  );
  const recCode = await rec.exited;
  const result = await loadgen;
  await b.stop();
  if (recCode !== 0) throw new Error(`perf record failed: ${await new Response(rec.stderr).text()}`);
  const script = Bun.spawnSync(["perf", "script", "-i", data, "-F", "comm,tid,ip,sym,dso"], { stderr: "ignore" });
  console.log(
    `\n## ${s.id} (${s.title}) on ${broker}, perf: ${
      Math.round(result.deliveredPerSec)
    } msg/s delivered, lost ${result.lost}, broker CPU ${result.brokerCpuPct.toFixed(1)}% of a core, ${
      result.brokerCpuUsPerMsg.toFixed(1)
    } µs per message`,
  );
  console.log(`perf data: ${data}\n`);
  console.log(analysePerf(new TextDecoder().decode(script.stdout), b.pid, seconds, hz));
}

async function main(): Promise<void> {
  const f = new Map<string, string>();
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith("--")) continue;
    const next = argv[i + 1];
    if (next === undefined || next.startsWith("--")) f.set(a.slice(2), "true");
    else {
      f.set(a.slice(2), next);
      i++;
    }
  }
  const top = Number(f.get("top") ?? 25);
  // Environment for Ferry: --env MIMALLOC_PURGE_DELAY=1000,BUN_JSC_...=...
  const env = Object.fromEntries(
    (f.get("env") ?? "").split(",").filter(Boolean).map((
      kv,
    ) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]),
  );
  const cmd = f.get("ferry-cmd");
  const custom = cmd === undefined ? undefined : splitCommand(cmd);
  if (custom && !f.has("perf")) {
    throw new Error("--ferry-cmd needs --perf (--cpu-prof is a flag of bun's own command line)");
  }
  if (f.has("analyse")) {
    console.log(analyse(JSON.parse(readFileSync(f.get("analyse")!, "utf8")) as CpuProfile, top));
    return;
  }
  const ids = (f.get("scenarios") ?? "fanin-q1,fanout-q0").split(",");
  const broker = (f.get("broker") ?? "ferry") as BrokerName;
  const duration = Number(f.get("duration") ?? 8);
  const out = f.get("out") ?? mkdtempSync(join(tmpdir(), "ferry-profile-"));
  const ferryRoot = snapshotFerry();
  console.log(`ferry ${cmd ?? ferryRevision(ferryRoot)}; bun ${Bun.version}`);
  roots.push(ferryRoot);
  for (const id of ids) {
    const s = SCENARIOS.find((x) => x.id === id);
    if (!s || s.mode !== "throughput") throw new Error(`no throughput scenario ${id}`);
    const dir = join(out, id);
    if (f.has("perf")) {
      await perfRun(s, broker, ferryRoot, duration, dir, {
        ferryEnv: { ...env, ...custom?.env },
        ...(custom ? { ferryCommand: custom.argv } : {}),
      });
      continue;
    }
    const b = await startBroker(broker, {
      ferryRoot,
      ferryEnv: env,
      bunArgs: ["--cpu-prof", "--cpu-prof-dir", dir, "--cpu-prof-interval", f.get("interval-us") ?? "500"],
    });
    // The measured window: after connecting (~1 s at most) and the warmup, for `duration`.
    const from = (Date.now() + ((s.warmup ?? 1) + 1) * 1000) * 1000;
    const to = from + (duration - 1) * 1e6;
    // --duration wins over a scenario's own measured seconds; its warmup stays.
    const result = await runLoadgen({ ...s, duration }, b, { duration, warmup: s.warmup ?? 1 });
    await b.stop();
    const file = readdirSync(dir).find((n) => n.endsWith(".cpuprofile"));
    if (!file) throw new Error(`no profile written in ${dir}`);
    console.log(
      `\n## ${s.id} (${s.title}) on ${broker}: ${
        Math.round(result.deliveredPerSec)
      } msg/s delivered, lost ${result.lost}, broker CPU ${Math.round(result.brokerCpuPct)}% (profiling on)`,
    );
    console.log(`profile: ${join(dir, file)}\n`);
    console.log(analyse(JSON.parse(readFileSync(join(dir, file), "utf8")) as CpuProfile, top, from, to));
  }
  rmSync(ferryRoot, { recursive: true, force: true });
}

if (import.meta.main) await main();
