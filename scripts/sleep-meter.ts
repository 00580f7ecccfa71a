/**
 * How long the test suite sleeps: a preload for `bun test` that records every
 * `Bun.sleep` the tests ask for (the test file and line that asked, the ms, and for a
 * helper's sleep the test line that called the helper).
 *
 *   rm -f /tmp/sleeps.tsv; SLEEP_METER_OUT=/tmp/sleeps.tsv npx bun test --preload ./scripts/sleep-meter.ts
 *   awk -F'\t' '$1 !~ /helpers\/clients/ {n++; t+=$2} END {print n, "explicit sleeps,", t, "ms"}' /tmp/sleeps.tsv
 *   awk -F'\t' '$1 ~ /helpers\/clients/ {n++; t+=$2} END {print n, "eventually() polls,", t, "ms"}' /tmp/sleeps.tsv
 *
 * Lines attributed to test/helpers/clients.ts are `eventually()` polls (10 ms each, the
 * third column names the caller); the rest are explicit waits. Timers made with
 * setTimeout (deadlines, the browser's waits) are not counted.
 */
import { appendFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const out = process.env.SLEEP_METER_OUT ?? join(tmpdir(), "ferry-sleeps.tsv");
const original = Bun.sleep;
const at = (frame: string | undefined) => {
  const where = /(test\/[^:)]+):(\d+)/.exec(frame ?? "");
  return where ? `${where[1]}:${where[2]}` : "?";
};
(Bun as { sleep: typeof Bun.sleep }).sleep = ((ms: number | Date) => {
  const n = typeof ms === "number" ? ms : ms.getTime() - Date.now();
  const frames = new Error().stack?.split("\n").slice(2).filter((l) => l.includes("/test/")) ?? [];
  const caller = frames.find((l) => !l.includes("/test/helpers/"));
  appendFileSync(out, `${at(frames[0])}\t${Math.round(n)}\t${at(caller)}\n`);
  return original(ms);
}) as typeof Bun.sleep;
