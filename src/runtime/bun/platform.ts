import type { Platform } from "../platform.ts";
import { fstatSync } from "node:fs";
import { readFileBytes, readTextIfExists } from "./read-file.ts";
import { stderrIsJournal } from "../log-output.ts";
import { startServer } from "./server.ts";
import { bunNotifier, monotonicUsec } from "./sd-notify.ts";

/** Linux/macOS names as Ferry's release files use them: linux-x64, linux-arm64. */
const target = `${process.platform}-${process.arch}`;

export const bunPlatform: Platform = {
  runtime: `bun ${Bun.version}`,
  target,
  // argv: [bun, script] from source; [bun, /$bunfs/root/ferry] in a compiled executable.
  args: process.argv.slice(2),
  readTextFile: readTextIfExists,
  readFile: readFileBytes,
  async startServer(config, version, logger, build) {
    const server = await startServer(config, version, logger, build);
    // The executable starts with the JIT reluctant (`--compile-jit-policy` in
    // cross-build/build.ts): start-up code runs once, and compiling it cost about 5 MB of
    // idle RSS (machine code, and the compilers' own code paged in). From here on the JIT
    // works as usual. From source the policy is 1 throughout and this changes nothing.
    Bun.unsafe.setJITPolicy(1);
    return server;
  },
  env: (name) => process.env[name],
  pid: process.pid,
  monotonicUsec,
  notifierFor: bunNotifier,
  stderrIsJournal: () => stderrIsJournal(process.env, () => fstatSync(2)),
  onSignal(signal, handler) {
    process.on(signal, handler);
  },
  exit(code): never {
    process.exit(code);
  },
};
