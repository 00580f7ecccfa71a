/**
 * Is the gateway's clock synchronised? Ferry reads only what an unprivileged process
 * can without native code (README, Uplink):
 * 1. a clock before FLOOR_MS (earlier than this Ferry was written) is wrong: "unsynced"
 *    (a gateway that booted without NTP and stamps 1970 or a stale RTC time);
 * 2. /run/systemd/timesync/synchronized exists: systemd-timesyncd touches it once the
 *    kernel clock is synchronised (systemd ≥ 239): "synced";
 * 3. timesyncd is installed (/var/lib/systemd/timesync/clock exists) but has not
 *    synchronised since boot: "unsynced";
 * 4. otherwise (chrony, ntpd, no NTP at all) it cannot tell: "unknown".
 */
import type { ClockState } from "./cloud-properties.ts";

/** 2026-01-01T00:00:00Z. */
export const FLOOR_MS = 1_767_225_600_000;
export const SYNCED_FILE = "/run/systemd/timesync/synchronized";
export const TIMESYNCD_FILE = "/var/lib/systemd/timesync/clock";

export async function probeClock(
  now: number,
  readFile: (path: string) => Promise<Uint8Array>,
  files = { synced: SYNCED_FILE, timesyncd: TIMESYNCD_FILE },
): Promise<ClockState> {
  if (now < FLOOR_MS) return "unsynced";
  const exists = (p: string) => readFile(p).then(() => true, () => false);
  if (await exists(files.synced)) return "synced";
  if (await exists(files.timesyncd)) return "unsynced";
  return "unknown";
}
