/**
 * Whole-file reads for Bun's platform: the config file, password and ACL files,
 * certificates, and the clock probe's marker files. All are small and read at start or on
 * SIGHUP, so they are read synchronously. `Bun.file().bytes()` would read them on Bun's
 * thread pool, whose two threads (stacks, and the runtime code they run) stay for the
 * life of the process: about 1 MB of an idle broker's resident memory for a few reads.
 * (Since the store's fsyncs moved to that pool, it starts with the first commit anyway;
 * reading synchronously still costs nothing, and keeps start-up free of the pool's wake-ups.)
 */
import { readFileSync } from "node:fs";

export function readFileBytes(path: string): Promise<Uint8Array> {
  try {
    return Promise.resolve(readFileSync(path));
  } catch (err) {
    return Promise.reject(err);
  }
}

/** The file's text, or undefined when there is no such file. */
export function readTextIfExists(path: string): Promise<string | undefined> {
  try {
    return Promise.resolve(readFileSync(path, "utf8"));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return Promise.resolve(undefined);
    return Promise.reject(err);
  }
}
