/**
 * Measure the single executable the way an operator meets it (after `npm run build`):
 *
 *   - size of dist/ferry-linux-{x64,arm64}, raw and gzipped, next to Bun's own runtime
 *   - time from start to the `listening` line (median of several starts)
 *   - resident memory (VmRSS) once idle after start
 *   - resident memory with N idle MQTT connections (default 10,000), each one CONNECTed
 *
 * Usage: bun scripts/measure-binary.ts [--connections N] [--starts N] [--cmd "CMD ARGS"]
 *   --cmd  measure another way of running Ferry instead of dist/ferry-linux-x64, e.g.
 *          --cmd "bun edge/main.ts" or --cmd "node_modules/.bin/deno run -A edge/main.ts";
 *          leading NAME=VALUE words set environment variables for it, e.g.
 *          --cmd "BUN_OPTIONS=--smol dist/ferry-linux-x64"
 *
 * Memory is measured with the executable first evicted from the page cache, as after a
 * reboot (scripts/page-cache.ts): right after a build it would read 4-5 MB higher.
 *
 * Needs Linux (/proc) and enough file descriptors for both ends: `ulimit -n` of at least
 * 2 × N + 100 (Bun raises its soft limit to the hard limit; raise the hard one if needed).
 * Prints a Markdown table.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Socket, Subprocess } from "bun";
import { splitCommand } from "./command-env.ts";
import { dropFromPageCache } from "./page-cache.ts";

const ROOT = join(import.meta.dir, "..");

function option(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const CONNECTIONS = Number(option("--connections") ?? 10_000);
const STARTS = Number(option("--starts") ?? 5);
const { env: CMD_ENV, argv: CMD } = splitCommand(option("--cmd") ?? join(ROOT, "dist", "ferry-linux-x64"));

const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;
const gzipSize = (path: string) => Bun.gzipSync(readFileSync(path), { level: 9 }).byteLength;

/** VmRSS, and the part of it that is anonymous memory (heap, stacks) rather than file pages. */
function rssOf(pid: number): { total: number; anon: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (field: string) => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(status);
    if (!m) throw new Error(`no ${field} for ${pid}`);
    return Number(m[1]) * 1024;
  };
  return { total: kb("VmRSS"), anon: kb("RssAnon") };
}

function openFiles(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

function nofileLimit(): string {
  const line = readFileSync("/proc/self/limits", "utf8").split("\n").find((l) => l.startsWith("Max open files"));
  return line?.replace(/\s+/g, " ").replace("Max open files ", "") ?? "unknown";
}

interface Started {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  port: number;
  /** Milliseconds from spawn to the `listening mqtt://` line. */
  startMs: number;
  dataDir: string;
}

async function start(): Promise<Started> {
  const dataDir = mkdtempSync(join(tmpdir(), "ferry-measure-"));
  // The 10,000 clients all come from 127.0.0.1: exempt them from the per-address limits.
  const configPath = `${dataDir}.json`;
  writeFileSync(configPath, JSON.stringify({ limits: { exempt_loopback: true } }));
  const t0 = performance.now();
  const proc = Bun.spawn([
    ...CMD,
    "serve",
    "--config",
    configPath,
    "--host",
    "127.0.0.1",
    "--mqtt-port",
    "0",
    "--data-dir",
    dataDir,
  ], {
    cwd: ROOT,
    env: { ...process.env, ...CMD_ENV },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const reader = proc.stdout.getReader();
  const decoder = new TextDecoder();
  let out = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) {
      throw new Error(
        `ferry exited before listening: ${out}${await new Response(proc.stderr).text()}`,
      );
    }
    out += decoder.decode(value, { stream: true });
    const m = /listening mqtt:\/\/\S+:(\d+)/.exec(out);
    if (m) {
      const startMs = performance.now() - t0;
      void (async () => {
        while (!(await reader.read()).done) { /* drain */ }
      })().catch(() => {});
      void new Response(proc.stderr).text().catch(() => {});
      return { proc, port: Number(m[1]), startMs, dataDir };
    }
  }
}

async function stop(s: Started): Promise<void> {
  s.proc.kill("SIGTERM");
  const guard = setTimeout(() => s.proc.kill("SIGKILL"), 30_000);
  await s.proc.exited;
  clearTimeout(guard);
  rmSync(s.dataDir, { recursive: true, force: true });
}

/** MQTT 3.1.1 CONNECT, clean session, keep alive 0 (idle connections stay without PINGREQ). */
function connectPacket(clientId: string): Uint8Array {
  const id = new TextEncoder().encode(clientId);
  const body = [0, 4, 77, 81, 84, 84, 4, 0x02, 0, 0, id.length >> 8, id.length & 0xff, ...id];
  return new Uint8Array([0x10, body.length, ...body]);
}

/** Open `n` TCP connections and CONNECT each; resolves when every CONNACK arrived. */
async function openIdleClients(port: number, n: number): Promise<Socket[]> {
  const sockets: Socket[] = [];
  let acked = 0;
  const batch = 500; // stay under the listen backlog
  for (let i = 0; i < n; i += batch) {
    const wave = Array.from(
      { length: Math.min(batch, n - i) },
      (_, j) =>
        new Promise<void>((resolve, reject) => {
          let got = false;
          void Bun.connect({
            hostname: "127.0.0.1",
            port,
            socket: {
              open(socket) {
                sockets.push(socket);
                socket.write(connectPacket(`idle-${i + j}`));
              },
              data(_socket, data) {
                if (!got && data[0] === 0x20 && data[3] === 0) {
                  got = true;
                  acked++;
                  resolve();
                }
              },
              close() {
                if (!got) reject(new Error(`connection ${i + j} closed before CONNACK`));
              },
              error(_socket, err) {
                if (!got) reject(err);
              },
            },
          }).catch(reject);
        }),
    );
    await Promise.all(wave);
  }
  if (acked !== n) throw new Error(`only ${acked} of ${n} CONNACKs`);
  return sockets;
}

async function settle(ms: number): Promise<void> {
  await Bun.sleep(ms);
}

async function main(): Promise<void> {
  if (!existsSync(CMD[0]!) && !Bun.which(CMD[0]!)) {
    console.error(`${CMD[0]} not found; run npm run build first (or pass --cmd)`);
    process.exit(1);
  }
  const rows: Array<[string, string]> = [];
  const defaultBinary = option("--cmd") === undefined;

  if (defaultBinary) {
    const bunRuntime = join(ROOT, "node_modules", "bun", "bin", "bun.exe");
    for (const target of ["linux-x64", "linux-arm64"]) {
      const file = join(ROOT, "dist", `ferry-${target}`);
      if (!existsSync(file)) continue;
      rows.push([
        `dist/ferry-${target} size (gzip -9)`,
        `${mb(statSync(file).size)} (${mb(gzipSize(file))})`,
      ]);
    }
    rows.push([
      `Bun ${Bun.version} runtime linux-x64 (gzip -9)`,
      `${mb(statSync(bunRuntime).size)} (${mb(gzipSize(bunRuntime))})`,
    ]);
    const cached = join(
      ROOT,
      "cross-build",
      ".cache",
      `@oven+bun-linux-aarch64-${Bun.version}`,
      "package",
      "bin",
      "bun",
    );
    if (existsSync(cached)) {
      rows.push([
        `Bun ${Bun.version} runtime linux-arm64 (gzip -9)`,
        `${mb(statSync(cached).size)} (${mb(gzipSize(cached))})`,
      ]);
    }
  }

  const times: number[] = [];
  for (let i = 0; i < STARTS; i++) {
    const s = await start();
    times.push(s.startMs);
    await stop(s);
  }
  times.sort((a, b) => a - b);
  rows.push([
    `start → listening (median of ${STARTS})`,
    `${times[Math.floor(times.length / 2)]!.toFixed(0)} ms (min ${times[0]!.toFixed(0)}, max ${
      times.at(-1)!.toFixed(0)
    })`,
  ]);

  if (!dropFromPageCache(CMD[0]!)) console.error(`could not evict ${CMD[0]} from the page cache`);
  const s = await start();
  try {
    await settle(3000);
    const idle = rssOf(s.proc.pid);
    rows.push(["RSS idle, 3 s after start (anonymous)", `${mb(idle.total)} (${mb(idle.anon)})`]);

    const t0 = performance.now();
    const sockets = await openIdleClients(s.port, CONNECTIONS);
    const connectMs = performance.now() - t0;
    await settle(5000);
    const rss = rssOf(s.proc.pid);
    rows.push([
      `RSS with ${CONNECTIONS.toLocaleString("en")} idle connections, 5 s after the last CONNACK (anonymous)`,
      `${mb(rss.total)} (${mb(rss.anon)})`,
    ]);
    rows.push([
      `  per connection, above idle`,
      `${((rss.total - idle.total) / CONNECTIONS / 1024).toFixed(1)} KiB`,
    ]);
    rows.push([
      `  time to CONNECT all`,
      `${connectMs.toFixed(0)} ms; broker holds ${openFiles(s.proc.pid)} descriptors`,
    ]);
    for (const socket of sockets) socket.end();
  } finally {
    await stop(s);
  }

  console.log(
    `Measured ${
      option("--cmd") ?? CMD.join(" ")
    } on ${process.platform}-${process.arch}; open files limit ${nofileLimit()}\n`,
  );
  console.log("| what | measured |\n| --- | --- |");
  for (const [k, v] of rows) console.log(`| ${k} | ${v} |`);
}

await main();
process.exit(0);
