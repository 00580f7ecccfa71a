import type { FerryConfig } from "../config/schema.ts";
import type { Logger } from "../core/logger.ts";
import type { BuildDetails, RunningServer } from "./start-server.ts";
import type { Notifier } from "./sd-notify.ts";

/**
 * What the command line needs from the runtime it runs on: its arguments, files,
 * signals, exit, and the server wired with that runtime's adapters. `edge/main.ts`
 * imports nothing runtime-specific; `loadPlatform()` picks Bun's or Deno's at start.
 */
export interface Platform {
  /** "bun 1.4.4" or "deno 2.9.6". */
  readonly runtime: string;
  /** "linux-x64", "linux-arm64", … */
  readonly target: string;
  /** Command-line arguments after the program (and script) name. */
  readonly args: readonly string[];
  /** A text file's contents, or undefined when there is no such file. */
  readTextFile(path: string): Promise<string | undefined>;
  /** A whole file; rejects when it is missing or unreadable (the error's `code` says which). */
  readFile(path: string): Promise<Uint8Array>;
  startServer(config: FerryConfig, version: string, logger?: Logger, build?: BuildDetails): Promise<RunningServer>;
  /** An environment variable (NOTIFY_SOCKET, JOURNAL_STREAM, …). */
  env(name: string): string | undefined;
  /** Whether stderr is the systemd journal (JOURNAL_STREAM names its device and inode). */
  stderrIsJournal(): boolean;
  /** This process's id (WATCHDOG_PID is compared with it). */
  readonly pid: number;
  /** CLOCK_MONOTONIC in microseconds, for sd_notify's MONOTONIC_USEC. */
  monotonicUsec(): Promise<bigint>;
  /** Sends sd_notify datagrams to a $NOTIFY_SOCKET path; undefined when the runtime cannot. */
  readonly notifierFor: ((socketPath: string) => Notifier) | undefined;
  onSignal(signal: "SIGINT" | "SIGTERM" | "SIGHUP", handler: () => void): void;
  exit(code: number): never;
}

/** Replaced with "bun" by `cross-build/build.ts` (`--define`), so the Deno branch is not bundled. */
declare const FERRY_RUNTIME: string | undefined;

/** Bun's platform, or Deno's when running under Deno; neither is imported by the other. */
export async function loadPlatform(): Promise<Platform> {
  const forced = typeof FERRY_RUNTIME === "string" ? FERRY_RUNTIME : undefined;
  if (forced !== "bun" && "Deno" in globalThis) {
    return (await import("./deno/platform.ts")).denoPlatform;
  }
  return (await import("./bun/platform.ts")).bunPlatform;
}
