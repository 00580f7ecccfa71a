#!/usr/bin/env bun
/**
 * CPU profile of Ferry under benchmark load: starts Ferry with `bun --cpu-prof`, drives
 * a scenario from run.ts with the load generator, stops Ferry (the profile is written
 * at exit) and prints the hottest functions over the loaded interval.
 *
 *   npx bun scripts/bench/profile.ts [--scenarios fanin-q1,fanout-q0] [--broker ferry|ferry-memory]
 *       [--duration 8] [--interval-us 500] [--top 25] [--out DIR]
 *   npx bun scripts/bench/profile.ts --analyse FILE.cpuprofile [--top 25]
 *
 * "self" = samples whose innermost frame is that function; a native frame (no source
 * file: Buffer methods, typed-array slice, socket write) is listed under its name
 * with the nearest JavaScript caller after "←", so that its cost lands somewhere
 * actionable. "total" = samples with the function anywhere on the stack. Percentages
 * are of all samples taken while load was running (JSC samples only while JavaScript
 * or its native callees run on the main thread; idle time is not sampled).
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { type BrokerName, ferryRevision, ROOT, snapshotFerry, startBroker } from "./brokers.ts";
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
  if (f.has("analyse")) {
    console.log(analyse(JSON.parse(readFileSync(f.get("analyse")!, "utf8")) as CpuProfile, top));
    return;
  }
  const ids = (f.get("scenarios") ?? "fanin-q1,fanout-q0").split(",");
  const broker = (f.get("broker") ?? "ferry") as BrokerName;
  const duration = Number(f.get("duration") ?? 8);
  const out = f.get("out") ?? mkdtempSync(join(tmpdir(), "ferry-profile-"));
  const ferryRoot = snapshotFerry();
  console.log(`ferry ${ferryRevision(ferryRoot)}; bun ${Bun.version}`);
  roots.push(ferryRoot);
  for (const id of ids) {
    const s = SCENARIOS.find((x) => x.id === id);
    if (!s || s.mode !== "throughput") throw new Error(`no throughput scenario ${id}`);
    const dir = join(out, id);
    const b = await startBroker(broker, {
      ferryRoot,
      bunArgs: ["--cpu-prof", "--cpu-prof-dir", dir, "--cpu-prof-interval", f.get("interval-us") ?? "500"],
    });
    const from = Date.now() * 1000;
    const result = await runLoadgen(s, b, { duration, warmup: 1 });
    const to = Date.now() * 1000;
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
