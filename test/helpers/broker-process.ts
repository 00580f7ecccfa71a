/**
 * Ferry as a child process, started through the real CLI (`edge/main.ts serve`) on a
 * data directory the test owns, so that it can be killed with SIGKILL and restarted
 * on the same files. Port 0; the port is read from the `listening` line. `spawnServe`
 * is the one way tests start a serving process (CLI, admin, executables, crash tests).
 */
import type { Subprocess } from "bun";
import { writeFileSync } from "node:fs";
import { join } from "node:path";

const MAIN = join(import.meta.dir, "..", "..", "edge", "main.ts");

export interface BrokerProcess {
  readonly proc: Subprocess<"ignore", "pipe", "pipe">;
  readonly pid: number;
  readonly port: number;
  /** Everything the broker wrote to stderr so far (its log). */
  stderr(): string;
  /** Send `signal` and wait until the process is gone. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export interface SpawnOptions {
  dataDir: string;
  /** Config file contents; written next to the data directory's files. */
  config?: Record<string, unknown>;
  /** Where to write the config file; default `<dataDir>.config.json`. */
  configPath?: string;
  /** How long to wait for the `listening` line. */
  startTimeoutMs?: number;
}

/** A `serve` process started by `spawnServe`. */
export interface Serving {
  readonly proc: Subprocess<"ignore", "pipe", "pipe">;
  /** Its output (stdout, or stderr with `from: "stderr"`) up to the moment every awaited line had appeared. */
  readonly out: string;
  /** Everything it wrote to the other stream (stderr, or stdout) so far. */
  stderr(): string;
  /** Send `signal` (default SIGKILL) unless it has exited, and wait until it is gone. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * Run `command` (a `serve` of the CLI under Bun or Deno, a built executable, or another
 * broker: mosquitto, nats-server) and resolve once its output matches every pattern in
 * `until` (its `listening …` lines): stdout, or stderr with `from: "stderr"`. Both keep
 * being drained afterwards, so the child never blocks on a full pipe; a child that does
 * not get there within `timeoutMs` is killed and the promise rejects.
 */
export async function spawnServe(
  command: string[],
  options: { until: RegExp[]; timeoutMs?: number; cwd?: string; from?: "stdout" | "stderr" },
): Promise<Serving> {
  const proc = Bun.spawn(command, { stdin: "ignore", stdout: "pipe", stderr: "pipe", cwd: options.cwd });
  const fromStderr = options.from === "stderr";
  let log = "";
  // Whatever part of the output is not watched for readiness is kept as the log.
  void (async () => {
    const decoder = new TextDecoder();
    const other = (fromStderr ? proc.stdout : proc.stderr).getReader();
    for (let r = await other.read(); !r.done; r = await other.read()) log += decoder.decode(r.value, { stream: true });
  })().catch(() => {});
  const kill = async (signal: NodeJS.Signals = "SIGKILL") => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    await proc.exited;
  };
  const reader = (fromStderr ? proc.stderr : proc.stdout).getReader();
  const decoder = new TextDecoder();
  let out = "";
  const deadline = setTimeout(() => proc.kill("SIGKILL"), options.timeoutMs ?? 15_000);
  try {
    while (!options.until.every((re) => re.test(out))) {
      const { done, value } = await reader.read();
      if (done) {
        await proc.exited;
        throw new Error(`${command[0]} exited (${proc.exitCode ?? proc.signalCode}) before listening:\n${out}\n${log}`);
      }
      out += decoder.decode(value, { stream: true });
    }
  } catch (error) {
    await kill();
    throw error;
  } finally {
    clearTimeout(deadline);
  }
  void (async () => {
    while (!(await reader.read()).done) { /* keep the pipe drained */ }
  })().catch(() => {});
  return { proc, out, stderr: () => log, kill };
}

/**
 * The CLI arguments for `serve` on 127.0.0.1, MQTT on a free port, on `dataDir`; with `ws`
 * WebSocket on a free port too, with `admin` the admin API on one (otherwise it is off).
 */
export function serveArgs(dataDir: string, listeners: { ws?: boolean; admin?: boolean } = {}): string[] {
  return [
    "serve",
    "--host",
    "127.0.0.1",
    "--mqtt-port",
    "0",
    ...(listeners.ws ? ["--ws-port", "0"] : []),
    "--admin-port",
    listeners.admin ? "0" : "off",
    "--data-dir",
    dataDir,
  ];
}

/** Spawn `ferry serve` and resolve once it prints `listening mqtt://HOST:PORT`. */
export async function spawnBroker(options: SpawnOptions): Promise<BrokerProcess> {
  const args = [process.execPath, MAIN, ...serveArgs(options.dataDir, { admin: true })];
  // Every test client comes from 127.0.0.1, so per-address limits are off unless the test sets them.
  const config = { ...options.config, limits: { exempt_loopback: true, ...(options.config?.limits as object) } };
  const path = options.configPath ?? `${options.dataDir.replace(/\/$/, "")}.config.json`;
  writeFileSync(path, JSON.stringify(config));
  args.push("--config", path);
  const listening = /listening mqtt:\/\/[^\s]+:(\d+)/;
  const s = await spawnServe(args, { until: [listening], timeoutMs: options.startTimeoutMs ?? 15_000 });
  const port = Number(listening.exec(s.out)![1]);
  return { proc: s.proc, pid: s.proc.pid, port, stderr: s.stderr, kill: s.kill };
}
