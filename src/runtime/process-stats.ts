/**
 * The process's `process_*` metrics, read the way the Prometheus client libraries read them
 * on Linux: resident memory and CPU time from the runtime (`process.memoryUsage`,
 * `process.cpuUsage`, which Bun and Deno both provide), open descriptors by listing
 * /proc/self/fd, the descriptor limit from /proc/self/limits. Anything unreadable (another
 * OS, a sandbox without /proc) is left out rather than reported as 0.
 */
import { readdirSync, readFileSync } from "node:fs";
import process from "node:process";
import type { ProcessStats } from "../admin/metrics-snapshot.ts";

/** Unix time this module was loaded, in seconds: the process start as near as JS can tell. */
const startTimeSeconds = Math.floor((performance.timeOrigin || Date.now()) / 1000);

let maxFds: number | undefined | null = null;

export function processStats(): ProcessStats {
  const out: ProcessStats = { startTimeSeconds };
  try {
    const mem = process.memoryUsage();
    out.residentBytes = mem.rss;
    out.heapBytes = mem.heapUsed;
  } catch { /* not available */ }
  try {
    const cpu = process.cpuUsage();
    out.cpuSeconds = (cpu.user + cpu.system) / 1e6;
  } catch { /* not available */ }
  try {
    out.openFds = readdirSync("/proc/self/fd").length;
  } catch { /* no /proc */ }
  if (maxFds === null) {
    try {
      const limit = /^Max open files\s+(\d+)/m.exec(readFileSync("/proc/self/limits", "utf8"))?.[1];
      maxFds = limit === undefined ? undefined : Number(limit);
    } catch {
      maxFds = undefined;
    }
  }
  if (maxFds !== undefined) out.maxFds = maxFds;
  return out;
}

/** Resident memory in bytes, alone and cheaply (the memory budget's sanity check); undefined where unknown. */
export function residentBytes(): number | undefined {
  try {
    return process.memoryUsage.rss();
  } catch {
    return undefined;
  }
}
