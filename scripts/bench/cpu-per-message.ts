#!/usr/bin/env bun
/**
 * Broker CPU time per delivered message, for comparing two Ferry trees on a machine too busy
 * for throughput figures to mean much: each scenario runs closed loop as in run.ts (window
 * 2,000, 64 unacknowledged per publisher, commit durability), alternating trees, and the
 * broker's utime + stime over the measured window is divided by the messages delivered.
 * CPU time still drifts with contention (caches, frequency), so compare medians of rounds.
 *
 *   npx bun scripts/bench/cpu-per-message.ts --roots /tmp/before,/tmp/after --rounds 3
 *
 * `--variant` (repeatable) compares ways of running Ferry instead of trees: a command
 * (leading NAME=VALUE words set its environment, as in scripts/measure-idle.ts), then
 * optionally ` | ` and JSON merged into its config file, e.g.
 *
 *   --variant "dist/ferry-linux-x64" --variant "BUN_OPTIONS=--smol dist/ferry-linux-x64"
 *   --variant "dist/ferry-linux-x64 | {\"storage\":{\"writer_thread\":false}}"
 *
 * `--cases fanin-q1,q2` runs only those cases.
 *
 *   npx bun scripts/bench/cpu-per-message.ts --payload 65536 --cases fanin-q1 --env FERRY_X=1 --config '{"storage":{...}}'
 *
 * `--payload` sets the message size; `--env` and `--config` (merged into Ferry's config; a
 * top-level key replaces the default's) apply to every tree or variant, under a variant's own.
 */
import { resolve } from "node:path";
import { splitCommand } from "../command-env.ts";
import { ROOT, startBroker, type StartOptions } from "./brokers.ts";
import { throughput } from "./loadgen.ts";

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

/** One way of running Ferry: its label in the table and how to start it. */
interface Variant {
  label: string;
  start: StartOptions;
}

function variantsFromFlags(): Variant[] {
  const specs = process.argv.flatMap((
    a,
    i,
  ) => (a === "--variant" && process.argv[i + 1] ? [process.argv[i + 1]!] : []));
  if (specs.length === 0) {
    return flag("roots", ROOT).split(",").map((r) => ({ label: resolve(r), start: { ferryRoot: resolve(r) } }));
  }
  return specs.map((spec) => {
    const [command, json] = spec.split(" | ");
    const { env, argv } = splitCommand(command!);
    return {
      label: spec,
      start: {
        ferryCommand: argv,
        ...(Object.keys(env).length > 0 ? { ferryEnv: env } : {}),
        ...(json ? { ferryExtra: JSON.parse(json) as Record<string, unknown> } : {}),
      },
    };
  });
}

const variants = variantsFromFlags();
const rounds = Number(flag("rounds", "3"));
const only = flag("cases", "").split(",").filter(Boolean);
const payload = Number(flag("payload", "64"));
const extra = JSON.parse(flag("config", "{}")) as Record<string, unknown>;
const env = Object.fromEntries(
  process.argv.flatMap((a, i) => (process.argv[i - 1] === "--env" ? [a.split("=") as [string, string]] : [])),
);
const allCases = [
  { id: "fanin-q1", pubs: 4, subs: 1, qos: 1 as const },
  { id: "fanout-q1", pubs: 1, subs: 8, qos: 1 as const },
  { id: "q2", pubs: 1, subs: 1, qos: 2 as const },
];
const cases = only.length > 0 ? allCases.filter((c) => only.includes(c.id)) : allCases;

const results = new Map<string, number[]>();
const rates = new Map<string, number[]>();
for (let r = 0; r < rounds; r++) {
  for (const c of cases) {
    for (const variant of variants) {
      const broker = await startBroker("ferry", {
        ...variant.start,
        ...(Object.keys(extra).length > 0 || variant.start.ferryExtra
          ? { ferryExtra: { ...extra, ...variant.start.ferryExtra } }
          : {}),
        ...(Object.keys(env).length > 0 || variant.start.ferryEnv
          ? { ferryEnv: { ...env, ...variant.start.ferryEnv } }
          : {}),
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
        const key = `${c.id}\t${variant.label}`;
        results.set(key, [...(results.get(key) ?? []), us]);
        rates.set(key, [...(rates.get(key) ?? []), t.deliveredPerSec]);
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
console.log(
  "| scenario | tree or variant | µs of broker CPU per delivered message, per round | median | delivered msg/s, per round |",
);
console.log("|---|---|---|--:|---|");
for (const [key, v] of results) {
  const [id, label] = key.split("\t");
  const perSec = (rates.get(key) ?? []).map((x) => Math.round(x).toLocaleString("en")).join(", ");
  console.log(
    `| ${id} | ${label!.replaceAll("|", "\\|")} | ${v.map((x) => x.toFixed(1)).join(", ")} | ${
      median(v).toFixed(1)
    } | ${perSec} |`,
  );
}
