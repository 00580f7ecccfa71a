/**
 * How long the test suite sleeps: a preload for `bun test` that records every
 * `Bun.sleep` the tests ask for (the test file and line that asked, and the ms).
 *
 *   rm -f /tmp/sleeps.tsv; SLEEP_METER_OUT=/tmp/sleeps.tsv npx bun test --preload ./scripts/sleep-meter.ts
 *   awk -F'\t' '{n++; t+=$2} END {print n, "sleeps,", t, "ms"}' /tmp/sleeps.tsv
 *
 * Lines attributed to test/helpers/clients.ts are `eventually()` polls (10 ms each);
 * the rest are explicit waits. Timers made with setTimeout are not counted.
 */
import { appendFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const out = process.env.SLEEP_METER_OUT ?? join(tmpdir(), "ferry-sleeps.tsv");
const original = Bun.sleep;
(Bun as { sleep: typeof Bun.sleep }).sleep = ((ms: number | Date) => {
  const n = typeof ms === "number" ? ms : ms.getTime() - Date.now();
  const frame = new Error().stack?.split("\n").slice(2).find((l) => l.includes("/test/")) ?? "";
  const where = /(test\/[^:)]+):(\d+)/.exec(frame);
  appendFileSync(out, `${where ? `${where[1]}:${where[2]}` : "?"}\t${Math.round(n)}\n`);
  return original(ms);
}) as typeof Bun.sleep;
