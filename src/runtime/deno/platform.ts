import type { Platform } from "../platform.ts";
import { deno } from "./deno-api.ts";
import { fstatSync } from "node:fs";
import { stderrIsJournal } from "../log-output.ts";
import { startServer } from "./server.ts";

const ARCH: Record<string, string> = { x86_64: "x64", aarch64: "arm64" };

export const denoPlatform: Platform = {
  runtime: `deno ${deno.version.deno}`,
  target: `${deno.build.os}-${ARCH[deno.build.arch] ?? deno.build.arch}`,
  args: deno.args,
  async readTextFile(path) {
    try {
      return await deno.readTextFile(path);
    } catch (err) {
      if (err instanceof deno.errors.NotFound) return undefined;
      throw err;
    }
  },
  readFile: (path) => deno.readFile(path),
  startServer,
  env: (name) => deno.env.get(name),
  pid: deno.pid,
  monotonicUsec: () => Promise.reject(new Error("CLOCK_MONOTONIC is not available here")),
  // Deno reaches a unix datagram socket only through --unstable-net or FFI (--allow-ffi); the
  // systemd unit runs the Bun executable, so under Deno use Type=simple.
  notifierFor: undefined,
  stderrIsJournal: () => stderrIsJournal({ JOURNAL_STREAM: deno.env.get("JOURNAL_STREAM") }, () => fstatSync(2)),
  onSignal(signal, handler) {
    deno.addSignalListener(signal, handler);
  },
  exit(code): never {
    return deno.exit(code);
  },
};
