/**
 * Start and stop the brokers under test: Ferry (this repository, on the Bun that runs
 * this script) and Mosquitto (/usr/sbin/mosquitto), each on a free loopback port with
 * its own temporary directory and a raised open-files limit.
 */
import type { Subprocess } from "bun";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { dropFromPageCache } from "../page-cache.ts";

export const ROOT = resolve(import.meta.dir, "../..");
export const MOSQUITTO = process.env.MOSQUITTO ?? "/usr/sbin/mosquitto";
/** Open files the 10,000-connection scenario needs in the broker and in the load generator. */
export const NOFILE_NEEDED = 12_000;

/** Soft and hard RLIMIT_NOFILE of this process (children inherit them). */
export function nofileLimits(): { soft: number; hard: number } {
  const line = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync("/proc/self/limits", "utf8"));
  const n = (v: string | undefined) => (v === undefined || v === "unlimited" ? Infinity : Number(v));
  return { soft: n(line?.[1]), hard: n(line?.[2]) };
}

export type BrokerName = "ferry" | "ferry-memory" | "mosquitto";

export interface RunningBroker {
  name: BrokerName;
  pid: number;
  port: number;
  dir: string;
  /** VmRSS 500 ms after it started accepting, before any client connected. */
  idleRssKb: number;
  stop(): Promise<number | null>;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function rssKb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? NaN);
}

/**
 * Run `cmd` with the soft RLIMIT_NOFILE raised to the hard limit when the soft one is
 * too low (raising the hard limit needs CAP_SYS_RESOURCE, which sandboxes often lack).
 * prlimit execs the command, so the pid is the command's.
 */
export function withNofile(cmd: string[]): string[] {
  const { soft, hard } = nofileLimits();
  if (soft >= NOFILE_NEEDED || !existsSync("/usr/bin/prlimit")) return cmd;
  const target = Number.isFinite(hard) ? hard : 65536;
  return ["/usr/bin/prlimit", `--nofile=${target}:${Number.isFinite(hard) ? hard : "unlimited"}`, "--", ...cmd];
}

/**
 * Ferry's config for a benchmark run: defaults except the durability mode, and the
 * admin HTTP API (when this version has one) on a free port instead of the fixed 8080,
 * so that runs never collide with another Ferry on the machine.
 */
export function ferryConfig(durability: "commit" | "memory", root = ROOT): Record<string, unknown> {
  const schema = readFileSync(join(root, "src/config/schema.ts"), "utf8");
  return {
    storage: { durability },
    ...(/\badmin: z\.object/.test(schema) ? { admin: { port: 0 } } : {}),
    // Every benchmark client is on loopback; Mosquitto has no per-address limits either.
    ...(/\bexempt_loopback:/.test(schema) ? { limits: { exempt_loopback: true } } : {}),
  };
}

/** Mosquitto's config for a benchmark run; the comments say why each line is there. */
export function mosquittoConfig(port: number): string {
  return [
    `listener ${port} 127.0.0.1`,
    "allow_anonymous true",
    "# Mosquitto drops QoS>0 messages beyond 1000 queued per client by default; 0 = no limit.",
    "# (Ferry's mqtt.max_queued_messages default is 10,000; the load generator's closed loop",
    "# keeps both brokers' queues below that, so neither limit should be reached.)",
    "max_queued_messages 0",
    "# Ferry's mqtt.max_inflight default is 64 (Mosquitto's default is 20).",
    "max_inflight_messages 64",
    "# Bun sets TCP_NODELAY on accepted sockets; give Mosquitto the same socket option.",
    "set_tcp_nodelay true",
    "persistence false",
    "log_dest stderr",
    "log_type error",
    "log_type warning",
    "",
  ].join("\n");
}

function freePort(): Promise<number> {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = l.port;
  l.stop(true);
  return Promise.resolve(port);
}

async function waitTcp(port: number, ms: number): Promise<void> {
  const end = performance.now() + ms;
  for (;;) {
    try {
      const s = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } });
      s.end();
      return;
    } catch {
      if (performance.now() > end) throw new Error(`nothing listening on port ${port} after ${ms} ms`);
      await sleep(20);
    }
  }
}

function stopper(proc: Subprocess, dir: string, keepDir: boolean): () => Promise<number | null> {
  return async () => {
    proc.kill("SIGTERM");
    const t = setTimeout(() => proc.kill("SIGKILL"), 15_000);
    const code = await proc.exited;
    clearTimeout(t);
    if (!keepDir) rmSync(dir, { recursive: true, force: true });
    return code;
  };
}

/**
 * Copy Ferry's sources (edge/, src/, package.json and the configs Bun reads) into a
 * temp dir, with node_modules linked, so that every run of one benchmark uses the same
 * code even while the working tree is being edited. Returns the copy's root.
 */
export function snapshotFerry(): string {
  const dir = mkdtempSync(join(tmpdir(), "ferry-bench-src-"));
  for (const name of ["edge", "src", "package.json", "tsconfig.json", "bunfig.toml"]) {
    if (existsSync(join(ROOT, name))) cpSync(join(ROOT, name), join(dir, name), { recursive: true });
  }
  symlinkSync(join(ROOT, "node_modules"), join(dir, "node_modules"));
  return dir;
}

/** The commit, how many of Ferry's source files differ from it, and a hash of the sources used. */
export function ferryRevision(root = ROOT): string {
  const git = (...args: string[]) =>
    new TextDecoder().decode(Bun.spawnSync(["git", "-C", ROOT, ...args]).stdout).trimEnd();
  const head = git("rev-parse", "--short", "HEAD");
  const dirty = git("status", "--porcelain", "--", "src", "edge").split("\n").filter(Boolean);
  const files = new Bun.Glob("{src,edge}/**/*.ts").scanSync({ cwd: root });
  const hash = new Bun.CryptoHasher("sha256");
  for (const f of [...files].sort()) hash.update(f).update(readFileSync(join(root, f)));
  const state = dirty.length === 0
    ? "clean"
    : `${dirty.length} files in src/ and edge/ changed or new since the commit`;
  return `${head} (${state}); sources sha256 ${hash.digest("hex").slice(0, 12)}`;
}

export interface StartOptions {
  /** Where Ferry's sources are (default: this repository). */
  ferryRoot?: string;
  /** Evict the broker's executable from the page cache before it starts (scripts/page-cache.ts). */
  cold?: boolean;
  /** Extra arguments for bun before the script (e.g. --cpu-prof). */
  bunArgs?: string[];
  /**
   * Run Ferry with this command instead of `bun edge/main.ts` from `ferryRoot` (e.g. a
   * compiled executable); `serve` and its options follow it. `ferryRoot` still decides the
   * config's keys.
   */
  ferryCommand?: string[];
  /** Extra Ferry config keys. */
  ferryExtra?: Record<string, unknown>;
  /** Extra environment variables for Ferry (e.g. MIMALLOC_* or BUN_JSC_* settings read at start-up). */
  ferryEnv?: Record<string, string>;
  keepDir?: boolean;
  /** Extra lines for Mosquitto's config (a later line overrides an earlier one); `{dir}` is its temp dir. */
  mosquittoLines?: string[];
}

export async function startBroker(name: BrokerName, opts: StartOptions = {}): Promise<RunningBroker> {
  const dir = mkdtempSync(join(tmpdir(), `bench-${name}-`));
  let proc: Subprocess | undefined;
  try {
    return await launch(name, dir, opts, (p) => (proc = p));
  } catch (err) {
    proc?.kill("SIGKILL");
    await proc?.exited;
    if (!opts.keepDir) rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

async function launch(
  name: BrokerName,
  dir: string,
  opts: StartOptions,
  started: (p: Subprocess) => void,
): Promise<RunningBroker> {
  let proc: Subprocess;
  let port: number;
  if (name === "mosquitto") {
    port = await freePort();
    const conf = join(dir, "mosquitto.conf");
    const extra = (opts.mosquittoLines ?? []).map((l) => l.replaceAll("{dir}", dir));
    writeFileSync(conf, mosquittoConfig(port) + extra.map((l) => `${l}\n`).join(""));
    if (opts.cold) dropFromPageCache(MOSQUITTO);
    proc = Bun.spawn(withNofile([MOSQUITTO, "-c", conf]), {
      stdout: Bun.file(join(dir, "stdout.log")),
      stderr: Bun.file(join(dir, "stderr.log")),
    });
    started(proc);
    await waitTcp(port, 5000);
  } else {
    const conf = join(dir, "ferry.json");
    writeFileSync(
      conf,
      JSON.stringify({ ...ferryConfig(name === "ferry" ? "commit" : "memory", opts.ferryRoot), ...opts.ferryExtra }),
    );
    const base = opts.ferryCommand ??
      [process.execPath, ...(opts.bunArgs ?? []), join(opts.ferryRoot ?? ROOT, "edge/main.ts")];
    if (opts.cold && opts.ferryCommand) dropFromPageCache(opts.ferryCommand[0]!);
    const cmd = [
      ...base,
      "serve",
      "--host",
      "127.0.0.1",
      "--mqtt-port",
      "0",
      "--data-dir",
      join(dir, "data"),
      "--config",
      conf,
    ];
    proc = Bun.spawn(withNofile(cmd), {
      ...(opts.ferryEnv ? { env: { ...process.env, ...opts.ferryEnv } } : {}),
      stdout: "pipe",
      stderr: Bun.file(join(dir, "stderr.log")),
      cwd: opts.ferryRoot ?? ROOT,
    });
    started(proc);
    port = await readListening(proc);
  }
  await sleep(500);
  const idleRssKb = rssKb(proc.pid);
  return { name, pid: proc.pid, port, dir, idleRssKb, stop: stopper(proc, dir, opts.keepDir ?? false) };
}

/** Read Ferry's stdout until `listening mqtt://HOST:PORT`; keep draining it afterwards. */
async function readListening(proc: Subprocess): Promise<number> {
  const stdout = proc.stdout as ReadableStream<Uint8Array>;
  const reader = stdout.getReader();
  const dec = new TextDecoder();
  let text = "";
  const deadline = setTimeout(() => proc.kill("SIGKILL"), 20_000);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`ferry exited before listening: ${text}`);
      text += dec.decode(value, { stream: true });
      const m = /listening mqtt:\/\/[^\s]+:(\d+)/.exec(text);
      if (m) {
        void (async () => {
          while (!(await reader.read()).done) {
            // discard
          }
        })();
        return Number(m[1]);
      }
    }
  } finally {
    clearTimeout(deadline);
  }
}

export function versions(): { bun: string; mosquitto: string } {
  const r = Bun.spawnSync([MOSQUITTO, "-h"]);
  const text = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
  return {
    bun: `${Bun.version} (${Bun.revision.slice(0, 9)})`,
    mosquitto: /mosquitto version (\S+)/.exec(text)?.[1] ?? "?",
  };
}
