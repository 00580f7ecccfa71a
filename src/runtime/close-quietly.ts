/** Closing a file descriptor that may already be gone; nothing is left to release then. */
import { closeSync } from "node:fs";

export function closeQuietly(fd: number | undefined): void {
  if (fd === undefined) return;
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}
