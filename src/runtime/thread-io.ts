/**
 * Bytes the calling thread has caused to be written to storage: `write_bytes` of
 * /proc/thread-self/io, which Linux counts when a page of a file is dirtied (so a commit that
 * rewrites part of a 4 KiB page counts 4,096 bytes, as the flash sees it). Per thread, so the
 * store's reading is the store's alone (on its storage thread, or on the event loop without
 * one), without the logs or anything else the process writes. Undefined where there is no
 * such file (not Linux, or no task I/O accounting).
 * (node:fs: Bun and Deno both provide it, in workers too.)
 */
import { openSync, readSync } from "node:fs";
import { closeQuietly } from "./close-quietly.ts";
import type { WriteCounter } from "../store/sqlite/driver.ts";

const FILE = "/proc/thread-self/io";

const KEY = Array.from("write_bytes:", (c) => c.charCodeAt(0));

/** The write_bytes figure in the first `n` bytes of `bytes`, read without making a string. */
function writeBytesIn(bytes: Uint8Array, n: number): number | undefined {
  outer: for (let at = 0; at + KEY.length <= n; at++) {
    if (at > 0 && bytes[at - 1] !== 0x0a) continue; // the key starts a line
    for (let k = 0; k < KEY.length; k++) if (bytes[at + k] !== KEY[k]) continue outer;
    let i = at + KEY.length;
    while (i < n && bytes[i] === 0x20) i++;
    let value = 0;
    const first = i;
    for (; i < n && bytes[i]! >= 0x30 && bytes[i]! <= 0x39; i++) value = value * 10 + (bytes[i]! - 0x30);
    return i > first ? value : undefined;
  }
  return undefined;
}

/**
 * A counter for the calling thread, kept open: the store reads it up to ten times a second
 * (to time its checkpoints), and a read of the open file at offset 0 costs one system call
 * where opening it each time cost three (strace at 200 msg/s: `openat` of /proc 33 µs,
 * `read` and `close` 7-8 µs each; `openat` alone was 1.5 % of perf's samples of the
 * process). The descriptor names the thread that opened it, whichever thread reads.
 */
export function threadWriteCounter(): WriteCounter {
  let fd: number | undefined;
  try {
    fd = openSync(FILE, "r");
  } catch {
    // no /proc, or no thread-self (Linux before 3.17): every read is undefined
  }
  const buffer = new Uint8Array(512);
  return {
    read(): number | undefined {
      if (fd === undefined) return undefined;
      try {
        return writeBytesIn(buffer, readSync(fd, buffer, 0, buffer.length, 0));
      } catch {
        return undefined;
      }
    },
    close(): void {
      const open = fd;
      fd = undefined;
      closeQuietly(open);
    },
  };
}

/** One reading for the calling thread (tests ask whether the system counts at all). */
export function threadWrittenBytes(): number | undefined {
  const counter = threadWriteCounter();
  try {
    return counter.read();
  } finally {
    counter.close();
  }
}
