#!/usr/bin/env bun
/**
 * Broker CPU time per delivered message, for comparing two Ferry trees on a machine too busy
 * for throughput figures to mean much: each scenario runs closed loop as in run.ts (window
 * 2,000, 64 unacknowledged per publisher, commit durability), alternating trees, and the
 * broker's utime + stime over the measured window is divided by the messages delivered.
 * CPU time still drifts with contention (caches, frequency), so compare medians of rounds.
 *
 *   npx bun scripts/bench/cpu-per-message.ts --roots /tmp/before,/tmp/after --rounds 3
 *   npx bun scripts/bench/cpu-per-message.ts --payload 65536 --cases fanin-q1 --env FERRY_X=1 --config '{"storage":{...}}'
 *
 * `--env` and `--config` (merged into Ferry's config; a top-level key replaces the default's)
 * apply to every tree; to compare two settings of one tree, run the script once per setting.
 */
import { resolve } from "node:path";
import { ROOT, startBroker } from "./brokers.ts";
import { throughput } from "./loadgen.ts";

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

const roots = flag("roots", ROOT).split(",").map((r) => resolve(r));
const rounds = Number(flag("rounds", "3"));
const payload = Number(flag("payload", "64"));
const extra = JSON.parse(flag("config", "{}")) as Record<string, unknown>;
const env = Object.fromEntries(
  process.argv.flatMap((a, i) => (process.argv[i - 1] === "--env" ? [a.split("=") as [string, string]] : [])),
);
const ALL_CASES = [
  { id: "fanin-q1", pubs: 4, subs: 1, qos: 1 as const },
  { id: "fanout-q1", pubs: 1, subs: 8, qos: 1 as const },
  { id: "q2", pubs: 1, subs: 1, qos: 2 as const },
];
const wanted = flag("cases", ALL_CASES.map((c) => c.id).join(",")).split(",");
const cases = ALL_CASES.filter((c) => wanted.includes(c.id));

const results = new Map<string, number[]>();
for (let r = 0; r < rounds; r++) {
  for (const c of cases) {
    for (const root of roots) {
      const broker = await startBroker("ferry", {
        ferryRoot: root,
        ...(Object.keys(extra).length > 0 ? { ferryExtra: extra } : {}),
        ...(Object.keys(env).length > 0 ? { ferryEnv: env } : {}),
      });
      try {
        const t = await throughput({
          host: "127.0.0.1",
          port: broker.port,
          pubs: c.pubs,
          subs: c.subs,
          qos: c.qos,
          payload,
          duration: 5,
          warmup: 1,
          window: 2000,
          pubWindow: 64,
          rate: 0,
          ratePerPub: 0,
          device: false,
          keepalive: 0,
          seed: 1,
          brokerPid: broker.pid,
          version: 4,
          drainTimeout: 10,
        });
        const us = (t.brokerCpuPct / 100) * 1e6 / t.deliveredPerSec;
        const key = `${c.id} ${root}`;
        results.set(key, [...(results.get(key) ?? []), us]);
        process.stderr.write(
          `[cpu] ${key}: ${Math.round(t.deliveredPerSec)} msg/s, broker ${t.brokerCpuPct.toFixed(0)} %, ` +
            `${us.toFixed(2)} µs/msg, lost ${t.lost}, other CPU ${t.otherCpuPct.toFixed(0)} %\n`,
        );
      } finally {
        await broker.stop();
      }
    }
  }
}
const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
console.log("| scenario | tree | µs of broker CPU per delivered message, per round | median |");
console.log("|---|---|---|--:|");
for (const [key, v] of results) {
  const [id, root] = key.split(" ");
  console.log(`| ${id} | ${root} | ${v.map((x) => x.toFixed(1)).join(", ")} | ${median(v).toFixed(1)} |`);
}
