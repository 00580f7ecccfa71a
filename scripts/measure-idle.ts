/**
 * Resident memory of an idle broker: start Ferry with the default config (no clients),
 * wait, read VmRSS (and its anonymous / file-backed parts) from /proc/PID/status, stop it;
 * several runs for each way of running it. Only what an operator meets: no flags beyond
 * the ports (0, so runs never collide) and a fresh data directory.
 *
 * Usage: bun scripts/measure-idle.ts [--runs N] [--wait MS] [--cmd "CMD ARGS"]... [--config FILE]
 *                                    [--args "SERVE ARGS"]
 *   --cmd     a way of running Ferry (repeatable). Default: `bun edge/main.ts` from source
 *             and dist/ferry-linux-x64 when it exists (`npm run build`). Leading NAME=VALUE
 *             words set environment variables for that command only, e.g.
 *             --cmd "BUN_JSC_useJIT=0 dist/ferry-linux-x64".
 *   --config  pass -c FILE to each broker (e.g. one with `storage.writer_thread: false`).
 *   --args    more `serve` options, after the default ones (so they win), e.g. "--admin-port off".
 *   --admin   GET this admin API path once after start (e.g. /healthz, as a health probe
 *             would), then wait and read: the admin app is only built on its first request.
 *   --wait    milliseconds between the `listening` line and the reading. Default 1500.
 *   --warm    leave the executable in the page cache as it is. By default each run first
 *             evicts it (scripts/page-cache.ts), as after a reboot: a freshly built or copied
 *             executable otherwise reads 4-5 MB higher.
 *
 * Needs Linux (/proc). Prints a Markdown table: every run, then the median.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { splitCommand } from "./command-env.ts";
import { dropFromPageCache } from "./page-cache.ts";

const ROOT = join(import.meta.dir, "..");

function options(name: string): string[] {
  const found: string[] = [];
  for (let i = 0; i < process.argv.length - 1; i++) {
    if (process.argv[i] === name) found.push(process.argv[i + 1]!);
  }
  return found;
}

const RUNS = Number(options("--runs")[0] ?? 5);
const WAIT_MS = Number(options("--wait")[0] ?? 1500);
const CONFIG = options("--config")[0];
const EXTRA = (options("--args")[0] ?? "").split(/\s+/).filter(Boolean);
const ADMIN_PATH = options("--admin")[0];
const COLD = !process.argv.includes("--warm");
const BINARY = join(ROOT, "dist", "ferry-linux-x64");
const COMMANDS: string[] = options("--cmd").length > 0
  ? options("--cmd")
  : [`${process.execPath} edge/main.ts`, ...(existsSync(BINARY) ? [BINARY] : [])];

interface Reading {
  rss: number;
  anon: number;
  file: number;
  threads: number;
}

function read(pid: number): Reading {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const field = (name: string) => {
    const m = new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(status);
    if (!m) throw new Error(`no ${name} for ${pid}`);
    return Number(m[1]);
  };
  // kB in /proc; reported in MB (10^6 bytes) like measure-binary.ts.
  const mb = (name: string) => (field(name) * 1024) / 1e6;
  return { rss: mb("VmRSS"), anon: mb("RssAnon"), file: mb("RssFile"), threads: field("Threads") };
}

async function measureOnce(command: string): Promise<Reading> {
  const { env, argv: cmd } = splitCommand(command);
  if (COLD && !dropFromPageCache(cmd[0]!)) console.error(`could not evict ${cmd[0]} from the page cache`);
  const dataDir = mkdtempSync(join(tmpdir(), "ferry-idle-"));
  const proc = Bun.spawn(
    [
      ...cmd,
      "serve",
      "--host",
      "127.0.0.1",
      "--mqtt-port",
      "0",
      "--admin-port",
      "0",
      "--data-dir",
      dataDir,
      ...(CONFIG ? ["-c", CONFIG] : []),
      ...EXTRA,
    ],
    { cwd: ROOT, env: { ...process.env, ...env }, stdin: "ignore", stdout: "pipe", stderr: "pipe" },
  );
  try {
    const reader = proc.stdout.getReader();
    const decoder = new TextDecoder();
    let out = "";
    // main.ts prints every `listening` line at once (the admin API's last), after the
    // whole server has started.
    while (
      !/listening mqtt:\/\//.test(out) || (ADMIN_PATH !== undefined && !/listening http:\/\/\S+[^\n]*\n/.test(out))
    ) {
      const { done, value } = await reader.read();
      if (done) throw new Error(`ferry exited before listening: ${out}${await new Response(proc.stderr).text()}`);
      out += decoder.decode(value, { stream: true });
    }
    void (async () => {
      while (!(await reader.read()).done) { /* drain */ }
    })().catch(() => {});
    void new Response(proc.stderr).text().catch(() => {});
    if (ADMIN_PATH !== undefined) {
      const admin = /listening (http:\/\/\S+)/.exec(out);
      if (!admin) throw new Error(`no admin API to ask for ${ADMIN_PATH}: ${out}`);
      const response = await fetch(`${admin[1]}${ADMIN_PATH}`);
      await response.arrayBuffer();
      if (!response.ok) throw new Error(`GET ${ADMIN_PATH}: ${response.status}`);
    }
    await Bun.sleep(WAIT_MS);
    return read(proc.pid);
  } finally {
    proc.kill("SIGTERM");
    const guard = setTimeout(() => proc.kill("SIGKILL"), 10_000);
    await proc.exited;
    clearTimeout(guard);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const f = (x: number) => x.toFixed(1);

console.log(
  `Idle RSS in MB, ${WAIT_MS} ms after "listening"${CONFIG ? `, config ${CONFIG}` : ", default config"}${
    EXTRA.length > 0 ? `, serve ${EXTRA.join(" ")}` : ""
  }${ADMIN_PATH !== undefined ? `, after GET ${ADMIN_PATH}` : ""}; executable ${
    COLD ? "evicted from the page cache before each run" : "left in the page cache"
  }\n`,
);
console.log("| command | runs: VmRSS (anon + file) | median VmRSS | threads |\n| --- | --- | --- | --- |");
// Runs alternate between the commands, so a drift on the machine (page cache, other load)
// does not favour whichever command happens to run first.
const all: Reading[][] = COMMANDS.map(() => []);
for (let i = 0; i < RUNS; i++) {
  for (const [j, cmd] of COMMANDS.entries()) all[j]!.push(await measureOnce(cmd));
}
for (const [j, cmd] of COMMANDS.entries()) {
  const readings = all[j]!;
  const runs = readings.map((r) => `${f(r.rss)} (${f(r.anon)}+${f(r.file)})`).join(", ");
  const name = cmd.split(/\s+/).map((c) => (c === process.execPath ? "bun" : c.replace(`${ROOT}/`, ""))).join(" ");
  console.log(`| ${name} | ${runs} | ${f(median(readings.map((r) => r.rss)))} | ${readings[0]!.threads} |`);
}
process.exit(0);
