#!/usr/bin/env bun
/**
 * CPU of Ferry's threads over time under one scenario's load: every `--every` seconds, the
 * CPU each group of threads used (event loop, storage thread, JIT compiler threads, heap
 * warm-up, garbage collector, allocator), in ms per second, from /proc/PID/task/TID/stat.
 * It shows what a single measured window cannot: how long the JIT keeps compiling after
 * the load starts, and what a broker that has run for minutes costs.
 *
 *   npx bun scripts/bench/thread-cpu.ts [--scenario dev-cpu-200x1] [--seconds 240] [--every 10]
 *       [--ferry-cmd "[NAME=VALUE ...] dist/ferry-linux-x64"] [--config '{"storage":{...}}']
 *       [--broker ferry|mosquitto] [--from 120]
 *
 * `--broker mosquitto` measures Mosquitto the same way (configured as in run.ts), so that a
 * steady state longer than the benchmark's 20 s window can be compared. The last line gives
 * the mean from `--from` seconds on (default 120, past the JIT's tier-up), in ms per second
 * and in µs per message at the scenario's rate.
 *
 * The load runs without a warmup, for `--seconds`; the first row starts when the broker
 * listens (connections are made in the first second). Without `--ferry-cmd`, Ferry runs
 * from this tree with `bun edge/main.ts`. Thread names as Bun 1.4.4 sets them: the event
 * loop is the process's first thread, `Worker` the storage thread, `JITWorker` the JIT
 * compilers, `JSCWarmUp` JavaScriptCore's heap-block warm-up, `HeapHelper` the collector's
 * helpers, `mi-scavenger` mimalloc's purge thread.
 */
import { readdirSync, readFileSync } from "node:fs";
import { splitCommand } from "../command-env.ts";
import { startBroker, type StartOptions } from "./brokers.ts";
import { runLoadgen, SCENARIOS } from "./run.ts";

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

/** Clock ticks per second of /proc's utime/stime (USER_HZ; 100 on Linux). */
const TICKS = 100;

/** A thread's group: the event loop by its id, the others by name (digits at the end dropped). */
function groupOf(tid: string, pid: number, comm: string): string {
  return tid === String(pid) ? "event loop" : comm.replace(/\d+$/, "");
}

/** CPU ticks by thread group, threads that ended included (their last value is kept). */
function sample(pid: number, last: Map<string, { group: string; ticks: number }>): Map<string, number> {
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      last.set(tid, { group: groupOf(tid, pid, comm), ticks: Number(fields[11]) + Number(fields[12]) });
    } catch {
      // the thread ended between readdir and read: its last sample stands
    }
  }
  const byGroup = new Map<string, number>();
  for (const { group, ticks } of last.values()) byGroup.set(group, (byGroup.get(group) ?? 0) + ticks);
  return byGroup;
}

async function main(): Promise<void> {
  const id = flag("scenario", "dev-cpu-200x1");
  const seconds = Number(flag("seconds", "240"));
  const every = Number(flag("every", "10"));
  const s = SCENARIOS.find((x) => x.id === id);
  if (!s || s.mode !== "throughput") throw new Error(`no throughput scenario ${id}`);
  const cmd = process.argv.includes("--ferry-cmd") ? splitCommand(flag("ferry-cmd", "")) : undefined;
  const start: StartOptions = {
    ...(cmd ? { ferryCommand: cmd.argv, ferryEnv: cmd.env } : {}),
    ferryExtra: JSON.parse(flag("config", "{}")) as Record<string, unknown>,
  };
  const broker = flag("broker", "ferry");
  if (broker !== "ferry" && broker !== "mosquitto") throw new Error("--broker is ferry or mosquitto");
  const from = Number(flag("from", "120"));
  const b = await startBroker(broker, start);
  const what = broker === "mosquitto" ? "mosquitto" : `ferry: ${cmd ? flag("ferry-cmd", "") : "bun edge/main.ts"}`;
  console.log(`${s.id} (${s.title}) for ${seconds} s; ${what}`);
  const loadgen = runLoadgen({ ...s, warmup: 0, duration: seconds }, b, { warmup: 0, duration: seconds });
  const threads = new Map<string, { group: string; ticks: number }>();
  let prev = sample(b.pid, threads);
  const groups = new Set<string>();
  const rows: Array<{ t: number; ms: Map<string, number> }> = [];
  try {
    for (let t = every; t <= seconds; t += every) {
      await Bun.sleep(every * 1000);
      const now = sample(b.pid, threads);
      const ms = new Map<string, number>();
      for (const [g, ticks] of now) {
        const v = ((ticks - (prev.get(g) ?? 0)) * 1000) / TICKS / every;
        if (v > 0) groups.add(g);
        ms.set(g, v);
      }
      rows.push({ t, ms });
      prev = now;
    }
    const result = await loadgen;
    const cols = [...groups].sort();
    console.log(`\nCPU per thread group, ms per second of wall time (USER_HZ ${TICKS}: 1 tick = 10 ms per interval)\n`);
    console.log(`| s | all | ${cols.join(" | ")} |`);
    console.log(`|--:|--:|${"--:|".repeat(cols.length)}`);
    for (const r of rows) {
      const all = [...r.ms.values()].reduce((a, v) => a + v, 0);
      console.log(`| ${r.t} | ${all.toFixed(0)} | ${cols.map((c) => (r.ms.get(c) ?? 0).toFixed(0)).join(" | ")} |`);
    }
    const steady = rows.filter((r) => r.t - every >= from);
    if (steady.length > 0 && s.rate !== undefined) {
      const mean = steady.reduce((a, r) => a + [...r.ms.values()].reduce((x, v) => x + v, 0), 0) / steady.length;
      console.log(
        `\nfrom ${from} s to ${seconds} s: ${mean.toFixed(1)} ms of CPU per second, ${
          (mean * 1000 / s.rate).toFixed(1)
        } µs per message at ${s.rate} msg/s`,
      );
    }
    console.log(
      `\n${Math.round(result.deliveredPerSec)} msg/s delivered, lost ${result.lost}, ack p99 ${
        result.ackLatencyMs?.p99?.toFixed(1)
      } ms, broker CPU over the whole run ${result.brokerCpuUsPerMsg.toFixed(0)} µs per message`,
    );
  } finally {
    await b.stop();
  }
}

if (import.meta.main) await main();
