/**
 * Ferry as a child process, started through the real CLI (`edge/main.ts serve`) on a
 * data directory the test owns, so that it can be killed with SIGKILL and restarted
 * on the same files. Port 0; the port is read from the `listening` line.
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

/** Spawn `ferry serve` and resolve once it prints `listening mqtt://HOST:PORT`. */
export async function spawnBroker(options: SpawnOptions): Promise<BrokerProcess> {
  const args = [
    process.execPath,
    MAIN,
    "serve",
    "--host",
    "127.0.0.1",
    "--mqtt-port",
    "0",
    "--admin-port",
    "0",
    "--data-dir",
    options.dataDir,
  ];
  if (options.config) {
    const path = options.configPath ?? `${options.dataDir.replace(/\/$/, "")}.config.json`;
    writeFileSync(path, JSON.stringify(options.config));
    args.push("--config", path);
  }
  const proc = Bun.spawn(args, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  let log = "";
  void (async () => {
    const decoder = new TextDecoder();
    const errors = proc.stderr.getReader();
    for (let r = await errors.read(); !r.done; r = await errors.read()) {
      log += decoder.decode(r.value, { stream: true });
    }
  })().catch(() => {});
  const kill = async (signal: NodeJS.Signals = "SIGKILL") => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
    await proc.exited;
  };

  const reader = proc.stdout.getReader();
  const decoder = new TextDecoder();
  let out = "";
  const deadline = setTimeout(() => proc.kill("SIGKILL"), options.startTimeoutMs ?? 15_000);
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) {
        await proc.exited;
        throw new Error(`ferry exited (${proc.exitCode ?? proc.signalCode}) before listening:\n${out}${log}`);
      }
      out += decoder.decode(value, { stream: true });
      const match = /listening mqtt:\/\/[^\s]+:(\d+)/.exec(out);
      if (match) {
        // Keep draining stdout so the child never blocks on a full pipe.
        void (async () => {
          while (!(await reader.read()).done) { /* discard */ }
        })().catch(() => {});
        return { proc, pid: proc.pid, port: Number(match[1]), stderr: () => log, kill };
      }
    }
  } catch (error) {
    await kill();
    throw error;
  } finally {
    clearTimeout(deadline);
  }
}
