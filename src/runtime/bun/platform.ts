import type { Platform } from "../platform.ts";
import { fstatSync } from "node:fs";
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
  async readTextFile(path) {
    const file = Bun.file(path);
    return (await file.exists()) ? await file.text() : undefined;
  },
  readFile: (path) => Bun.file(path).bytes(),
  startServer,
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
