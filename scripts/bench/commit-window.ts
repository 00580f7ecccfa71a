#!/usr/bin/env bun
/**
 * What `storage.commit_window_ms` trades: bytes written per message and broker CPU per message
 * against ack latency, for device-like QoS 1 publishers (one PUBLISH per write) at fixed
 * rates, Ferry in commit durability. Windows (and trees) alternate within each round; every
 * run gets a fresh broker and data directory.
 *
 *   npx bun scripts/bench/commit-window.ts --windows 0,5,10,20,50 --rounds 2
 *   npx bun scripts/bench/commit-window.ts --windows 0,20 --cases disk-200,cpu-200x1 --roots /tmp/before,.
 *   npx bun scripts/bench/commit-window.ts --windows 0 --env FERRY_X=1      # extra environment for Ferry
 *
 * `--windows d` leaves the key out (the tree's default): a tree from before the key existed
 * refuses it (the config schema is strict): `--variants /tmp/before:d,.:0,.:50` names each
 * tree's windows instead of every root with every window.
 * Cases (the device set's rows, same loads): disk-1, disk-10, disk-200 (1 device at 1/10/200
 * msg/s, 64 B), cpu-200x1 (200 devices × 1 msg/s, 100 B), cpu-50x100 (50 × 100 msg/s), latency
 * (10 × 1,000 msg/s, 64 B, window 64), sync-1 and sync-10 (one publisher, closed loop, 1 or 10
 * in flight: a client that waits for its acknowledgements), sync-1x2 and sync-1x4 (2 or 4 such
 * publishers with 1 in flight each), disk-200-long (disk-200 for 60 s:
 * the WAL checkpoints, which the 5 s run never reaches, write each page into the database file
 * once more), disk-200-session (disk-200 for 20 s to a persistent subscriber: its deliveries
 * are written, and deleted once acknowledged).
 */
import { resolve } from "node:path";
import { ROOT, startBroker } from "./brokers.ts";
import { throughput, type ThroughputOptions } from "./loadgen.ts";

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

interface Case {
  id: string;
  pubs: number;
  /** msg/s per publisher; 0 = closed loop (as fast as acks come back, `pubWindow` in flight). */
  ratePerPub: number;
  pubWindow?: number;
  payload: number;
  warmup: number;
  duration: number;
  /** The subscriber has a persistent session (clean session 0). */
  persistent?: boolean;
}

const CASES: Case[] = [
  { id: "disk-1", pubs: 1, ratePerPub: 1, payload: 64, warmup: 1, duration: 10 },
  { id: "disk-10", pubs: 1, ratePerPub: 10, payload: 64, warmup: 1, duration: 5 },
  { id: "disk-200", pubs: 1, ratePerPub: 200, payload: 64, warmup: 1, duration: 5 },
  { id: "disk-200-long", pubs: 1, ratePerPub: 200, payload: 64, warmup: 1, duration: 60 },
  { id: "disk-200-session", pubs: 1, ratePerPub: 200, payload: 64, warmup: 1, duration: 20, persistent: true },
  { id: "cpu-200x1", pubs: 200, ratePerPub: 1, payload: 100, warmup: 10, duration: 10 },
  { id: "cpu-50x100", pubs: 50, ratePerPub: 100, payload: 100, warmup: 10, duration: 5 },
  { id: "latency", pubs: 10, ratePerPub: 1000, payload: 64, warmup: 3, duration: 5 },
  // Closed loop: one client that waits for each PUBACK before its next PUBLISH, and one
  // keeping 10 in flight (Paho's default).
  { id: "sync-1", pubs: 1, ratePerPub: 0, pubWindow: 1, payload: 64, warmup: 1, duration: 5 },
  { id: "sync-10", pubs: 1, ratePerPub: 0, pubWindow: 10, payload: 64, warmup: 1, duration: 5 },
  // A few such clients side by side (2 or 4, one in flight each): their next publishes come
  // a little apart after the commit that acknowledges them all, so the idle rule must end the
  // window on their quiet, not wait it out.
  { id: "sync-1x2", pubs: 2, ratePerPub: 0, pubWindow: 1, payload: 64, warmup: 1, duration: 5 },
  { id: "sync-1x4", pubs: 4, ratePerPub: 0, pubWindow: 1, payload: 64, warmup: 1, duration: 5 },
];

const windows = flag("windows", "0,5,10,20,50").split(",").map((w) => (w === "d" ? "d" : Number(w)));
const roots = flag("roots", ROOT).split(",").map((r) => resolve(r));
const rounds = Number(flag("rounds", "1"));
const ids = flag("cases", "disk-1,disk-10,disk-200,cpu-200x1,latency").split(",");
const env = Object.fromEntries(
  process.argv.flatMap((a, i) => (process.argv[i - 1] === "--env" ? [a.split("=") as [string, string]] : [])),
);
const cases = ids.map((id) =>
  CASES.find((c) => c.id === id) ?? (() => {
    throw new Error(`unknown case ${id}`);
  })()
);

interface Row {
  bytesPerMsg: number;
  usPerMsg: number;
  ackP50: number;
  ackP99: number;
  deliveredPerSec: number;
  lost: number;
  other: number;
}
const results = new Map<string, Row[]>();
const variants = process.argv.includes("--variants")
  ? flag("variants", "").split(",").map((v) => {
    const at = v.lastIndexOf(":");
    const w = v.slice(at + 1);
    return { root: resolve(v.slice(0, at)), w: w === "d" ? "d" as const : Number(w) };
  })
  : roots.flatMap((root) => windows.map((w) => ({ root, w })));

for (let r = 0; r < rounds; r++) {
  for (const c of cases) {
    const order = r % 2 === 0 ? variants : [...variants].reverse();
    for (const v of order) {
      const broker = await startBroker("ferry", {
        ferryRoot: v.root,
        ferryExtra: { storage: { durability: "commit", ...(v.w === "d" ? {} : { commit_window_ms: v.w }) } },
        ...(Object.keys(env).length > 0 ? { ferryEnv: env } : {}),
      });
      try {
        const o: ThroughputOptions = {
          host: "127.0.0.1",
          port: broker.port,
          pubs: c.pubs,
          subs: 1,
          qos: 1,
          payload: c.payload,
          duration: c.duration,
          warmup: c.warmup,
          window: 2000,
          pubWindow: c.pubWindow ?? 64,
          rate: 0,
          ratePerPub: c.ratePerPub,
          device: true,
          keepalive: 60,
          seed: 1,
          brokerPid: broker.pid,
          version: 4,
          drainTimeout: 10,
          ...(c.persistent ? { persistentSubs: true } : {}),
        };
        const t = await throughput(o);
        const row: Row = {
          bytesPerMsg: t.brokerWriteBytes / Math.max(1, t.sent),
          usPerMsg: t.brokerCpuUsPerMsg,
          ackP50: t.ackLatencyMs.p50,
          ackP99: t.ackLatencyMs.p99,
          deliveredPerSec: t.deliveredPerSec,
          lost: t.lost,
          other: t.otherCpuPct,
        };
        const key = `${c.id}\t${v.root}\t${v.w}`;
        results.set(key, [...(results.get(key) ?? []), row]);
        process.stderr.write(
          `[window] ${c.id} ${v.root} w=${v.w}: ${row.bytesPerMsg.toFixed(0)} B/msg, ${
            row.usPerMsg.toFixed(1)
          } µs/msg, ` +
            `ack p50 ${row.ackP50.toFixed(2)} p99 ${row.ackP99.toFixed(2)} ms, ${
              row.deliveredPerSec.toFixed(0)
            } msg/s, ` +
            `lost ${row.lost}, other CPU ${row.other.toFixed(0)} %\n`,
        );
      } finally {
        await broker.stop();
      }
    }
  }
}

const median = (v: number[]) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const cell = (v: number[], d: number) =>
  v.length === 1
    ? v[0]!.toFixed(d)
    : `${median(v).toFixed(d)} (${Math.min(...v).toFixed(d)}–${Math.max(...v).toFixed(d)})`;
console.log(
  "| case | tree | window ms | bytes written per message | broker CPU µs per message | ack p50 ms | ack p99 ms | delivered msg/s | lost |",
);
console.log("|---|---|--:|--:|--:|--:|--:|--:|--:|");
for (const [key, rows] of results) {
  const [id, root, w] = key.split("\t");
  console.log(
    `| ${id} | ${root} | ${w} | ${cell(rows.map((x) => x.bytesPerMsg), 0)} | ${
      cell(rows.map((x) => x.usPerMsg), 1)
    } | ${cell(rows.map((x) => x.ackP50), 2)} | ${cell(rows.map((x) => x.ackP99), 2)} | ${
      cell(rows.map((x) => x.deliveredPerSec), 0)
    } | ${rows.reduce((a, x) => a + x.lost, 0)} |`,
  );
}
