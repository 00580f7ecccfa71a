/**
 * Evict an executable's pages from the page cache, so the next start reads it from disk
 * as after a reboot or a fresh install.
 *
 * Why: the resident size of a process counts the executable's pages it maps, and how many
 * pages one page fault maps depends on how the file sits in the page cache. A file just
 * written (a build, a copy) maps about 4-5 MB more of Ferry's 110 MB executable than the
 * same bytes read back from disk: same binary, same work, different VmRSS. Measuring
 * every binary from the same state makes before/after comparisons fair.
 */
import { realpathSync } from "node:fs";

/** Best effort, Linux with GNU coreutils: `sync FILE` first, since dirty pages cannot be dropped. */
export function dropFromPageCache(file: string): boolean {
  let path: string;
  try {
    path = realpathSync(file.includes("/") ? file : (Bun.which(file) ?? file));
  } catch {
    return false;
  }
  const quiet = { stdout: "ignore", stderr: "ignore" } as const;
  if (Bun.spawnSync(["sync", path], quiet).exitCode !== 0) return false;
  // count=0 with iflag=nocache asks the kernel to drop the whole file's cached pages.
  return Bun.spawnSync(["dd", `if=${path}`, "iflag=nocache", "count=0", "status=none"], quiet).exitCode === 0;
}
