/**
 * Bytes the calling thread has caused to be written to storage: `write_bytes` of
 * /proc/thread-self/io, which Linux counts when a page of a file is dirtied (so a commit that
 * rewrites part of a 4 KiB page counts 4,096 bytes, as the flash sees it). Per thread, so the
 * store's reading is the store's alone (on its storage thread, or on the event loop without
 * one), without the logs or anything else the process writes. Undefined where there is no
 * such file (not Linux, or no task I/O accounting).
 * (node:fs: Bun and Deno both provide it, in workers too.)
 */
import { closeSync, openSync, readFileSync, readSync } from "node:fs";
import type { WriteCounter } from "../store/sqlite/driver.ts";

const FILE = "/proc/thread-self/io";

function writeBytes(text: string): number | undefined {
  const m = /^write_bytes:\s*(\d+)/m.exec(text);
  return m ? Number(m[1]) : undefined;
}

/**
 * A counter for the calling thread, kept open: the store reads it up to ten times a second
 * (to time its checkpoints), and a read of the open file at offset 0 costs one system call
 * where opening it again cost three and a path walk through /proc (1.5 % of the process's
 * CPU at 200 msg/s). The descriptor names the thread that opened it, whichever thread reads.
 */
export function threadWriteCounter(): WriteCounter {
  let fd: number | undefined;
  try {
    fd = openSync(FILE, "r");
  } catch {
    // no /proc, or no thread-self (Linux before 3.17): every read is undefined
  }
  const buffer = new Uint8Array(512);
  const decoder = new TextDecoder("latin1");
  return {
    read(): number | undefined {
      if (fd === undefined) return undefined;
      try {
        const n = readSync(fd, buffer, 0, buffer.length, 0);
        return writeBytes(decoder.decode(buffer.subarray(0, n)));
      } catch {
        return undefined;
      }
    },
    close(): void {
      if (fd === undefined) return;
      const open = fd;
      fd = undefined;
      try {
        closeSync(open);
      } catch {
        // already gone
      }
    },
  };
}

/** One reading for the calling thread (tests ask whether the system counts at all). */
export function threadWrittenBytes(): number | undefined {
  try {
    return writeBytes(readFileSync(FILE, "latin1"));
  } catch {
    return undefined;
  }
}
