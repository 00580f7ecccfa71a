/**
 * fsync off the event loop (`FileSync` of the SQLite drivers): node:fs's asynchronous
 * `fsync` runs on the runtime's thread pool in Bun and Deno alike, so a disk whose flush
 * takes milliseconds (an SD card) stops no socket work while it waits.
 *
 * The file is opened read-only on the first sync and kept open: fsync flushes the file
 * (its inode), whichever descriptor names it, so SQLite's writes through its own
 * descriptor are covered. Opened and closed only here, never on the database file
 * itself: closing any descriptor of a file drops the process's POSIX locks on it, and
 * SQLite holds those on the database file, not on its -wal.
 */
import { fsync, openSync } from "node:fs";
import { closeQuietly } from "./close-quietly.ts";
import type { FileSync } from "../store/sqlite/driver.ts";

export function backgroundFsync(path: string): FileSync {
  let fd: number | undefined;
  return {
    sync(): Promise<void> {
      return new Promise<void>((resolve, reject) => {
        try {
          fd ??= openSync(path, "r");
        } catch (error) {
          reject(error);
          return;
        }
        fsync(fd, (error) => (error ? reject(error) : resolve()));
      });
    },
    close(): void {
      const open = fd;
      fd = undefined;
      closeQuietly(open);
    },
  };
}
