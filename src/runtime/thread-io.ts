/**
 * Bytes the calling thread has caused to be written to storage: `write_bytes` of
 * /proc/thread-self/io, which Linux counts when a page of a file is dirtied (so a commit that
 * rewrites part of a 4 KiB page counts 4,096 bytes, as the flash sees it). Per thread, so the
 * storage thread's reading is the store's alone, without the logs or anything else the
 * process writes. Undefined where there is no such file (not Linux, or no task I/O
 * accounting); the first failure is remembered, so such a system pays for one attempt.
 * (node:fs: Bun and Deno both provide it, in workers too.)
 */
import { readFileSync } from "node:fs";

let available = true;

export function threadWrittenBytes(): number | undefined {
  if (!available) return undefined;
  try {
    const text = readFileSync("/proc/thread-self/io", "latin1");
    const m = /^write_bytes:\s*(\d+)/m.exec(text);
    if (m) return Number(m[1]);
  } catch {
    // no /proc, or no thread-self (Linux before 3.17)
  }
  available = false;
  return undefined;
}
