#!/usr/bin/env bun
/**
 * Drain of a persistent session's backlog: a subscriber (MQTT 5, clean start off,
 * session expiry 1 h, subscribed at QoS 2) goes offline, N messages are published for
 * it, then it reconnects and the time until it has all N is measured. Ferry and
 * Mosquitto side by side in the same run, alternating per case.
 *
 *   npx bun scripts/bench-drain.ts                                   # 10k, 40k, 160k × q1, q2, mixed
 *   npx bun scripts/bench-drain.ts --sizes 10000,40000 --mixes q2 --brokers ferry,mosquitto
 *   npx bun scripts/bench-drain.ts --repeat 3 --ferry-roots /tmp/before,.   # best and median of 3, two trees
 *   npx bun scripts/bench-drain.ts --durability periodic                     # Ferry without an fsync per commit
 *   npx bun scripts/bench-drain.ts --inflight 128 --commit-window 0          # both brokers' window; Ferry's commit window
 *   npx bun scripts/bench-drain.ts --threads                                 # the broker's CPU per thread during each drain
 *   npx bun scripts/bench-drain.ts --brokers ferry --cpu-prof /tmp/prof      # then: bun scripts/bench/profile.ts --analyse FILE
 *
 * On a busy machine, read the best of several repeats: other load only ever slows a drain down.
 *
 * Fair settings: Mosquitto with `max_queued_messages 0` (no limit; its default 1,000
 * would drop most of the backlog) and persistence on; Ferry on its defaults (commit
 * durability, SQLite) with `mqtt.max_queued_messages` raised past N. Both with an
 * in-flight window of 64 toward the subscriber (Ferry's default, set in Mosquitto).
 * The subscriber acknowledges every message at once (PUBACK / PUBREC, PUBCOMP on PUBREL).
 */
import { resolve } from "node:path";
import { type BrokerName, ROOT, type RunningBroker, startBroker, versions } from "./bench/brokers.ts";
import { Conn, gen, PUBACK, PUBCOMP, PUBREC, PUBREL, schedSeconds, schedSecondsByThread } from "./bench/loadgen.ts";

type Mix = "q1" | "q2" | "mixed";

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

const SIZES = flag("sizes", "10000,40000,160000").split(",").map(Number);
const MIXES = flag("mixes", "q1,q2,mixed").split(",") as Mix[];
const BROKERS = flag("brokers", "ferry,mosquitto").split(",") as BrokerName[];
const PAYLOAD = Number(flag("payload", "64"));
const TIMEOUT_S = Number(flag("timeout", "300"));
const REPEAT = Number(flag("repeat", "1"));
const ROOTS = flag("ferry-roots", ROOT).split(",").map((r) => resolve(r));
const DURABILITY = flag("durability", "commit");
/** The in-flight window toward the subscriber, both brokers (default: Ferry's default, 64). */
const INFLIGHT = process.argv.includes("--inflight") ? Number(flag("inflight", "64")) : undefined;
/** Ferry's storage.commit_window_ms (default: the tree's default; a tree without the key refuses it). */
const COMMIT_WINDOW = process.argv.includes("--commit-window") ? Number(flag("commit-window", "0")) : undefined;
/** Write a CPU profile of each Ferry run into this directory (bun --cpu-prof; read it with profile.ts --analyse). */
const CPU_PROF = process.argv.includes("--cpu-prof") ? resolve(flag("cpu-prof", ".")) : undefined;
/** Print the broker's CPU during each drain by thread name. */
const THREADS = process.argv.includes("--threads");
const TOPIC = "drain/t";
const SUB_ID = "drain-sub";

const noop = () => {};
const log = (msg: string) => process.stderr.write(`[drain] ${msg}\n`);

function qosOf(mix: Mix, i: number): 1 | 2 {
  return mix === "q1" ? 1 : mix === "q2" ? 2 : i % 2 === 0 ? 1 : 2;
}

/** Subscriber events: acknowledge at once and count arrivals by sequence number. */
function subscriberEvents(seen: Uint8Array, counts: { received: number; distinct: number; dup: number }) {
  return {
    publish(c: Conn, qos: number, id: number, _retain: boolean, buf: Uint8Array, p: number, len: number) {
      counts.received++;
      if (len >= 4) {
        const seq = ((buf[p]! << 24) | (buf[p + 1]! << 16) | (buf[p + 2]! << 8) | buf[p + 3]!) >>> 0;
        if (seq < seen.length) {
          if (seen[seq] === 0) {
            seen[seq] = 1;
            counts.distinct++;
          } else counts.dup++;
        }
      }
      if (qos === 1) c.ack4(PUBACK, 0, id);
      else if (qos === 2) c.ack4(PUBREC, 0, id);
    },
    ack: noop,
    afterData: noop,
    drained: noop,
  };
}

/** Publish `n` messages with at most `window` unacknowledged, completing QoS 2 flows. */
async function publishAll(port: number, n: number, mix: Mix): Promise<void> {
  let sent = 0;
  let done = 0;
  let wake: (() => void) | undefined;
  const payload = new Uint8Array(PAYLOAD);
  const window = 64;
  const pub = await Conn.open("127.0.0.1", port, {
    publish: noop,
    ack(c, type, id) {
      if (type === PUBREC) {
        c.ack4(PUBREL, 2, id);
        return;
      }
      if (type === PUBACK || type === PUBCOMP) {
        c.used[id] = 0;
        done++;
      }
    },
    afterData() {
      wake?.();
    },
    drained: noop,
  }, "pub");
  await pub.connect("drain-pub", 5);
  const fill = () => {
    while (sent < n && sent - done < window) {
      const view = new DataView(payload.buffer);
      view.setUint32(0, sent);
      const id = pub.takeId();
      pub.send(
        gen({ cmd: "publish", topic: TOPIC, qos: qosOf(mix, sent), messageId: id, payload: Buffer.from(payload) }, 5),
      );
      sent++;
    }
  };
  const end = performance.now() + TIMEOUT_S * 1000;
  while (done < n) {
    fill();
    await new Promise<void>((r) => {
      wake = r;
      setTimeout(r, 50);
    });
    if (performance.now() > end) throw new Error(`publishing stalled at ${done}/${n}`);
  }
  pub.send(gen({ cmd: "disconnect" }, 5));
  pub.close();
}

interface Result {
  broker: BrokerName;
  /** Ferry's source tree ("" for Mosquitto). */
  tree: string;
  mix: Mix;
  n: number;
  seconds: number;
  rate: number;
  distinct: number;
  duplicates: number;
  complete: boolean;
  /** Broker CPU during the drain, seconds: all threads, and the event loop's thread alone. */
  cpu: number;
  cpuMain: number;
}

/** CPU seconds of each thread by name, summed (threads of one pool share a name): with --threads. */
function byThreadName(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const { name, seconds } of schedSecondsByThread(pid)?.values() ?? []) {
    out.set(name, (out.get(name) ?? 0) + seconds);
  }
  return out;
}

/** CPU seconds of the event loop's thread so far. */
function eventLoopSeconds(pid: number): number {
  return schedSecondsByThread(pid)?.get(pid)?.seconds ?? NaN;
}

async function runCase(name: BrokerName, n: number, mix: Mix, root: string): Promise<Result> {
  const broker: RunningBroker = await startBroker(name, {
    ferryRoot: root,
    ...(CPU_PROF !== undefined ? { bunArgs: ["--cpu-prof", `--cpu-prof-dir=${CPU_PROF}`] } : {}),
    ferryExtra: {
      mqtt: {
        max_queued_messages: n + 1000,
        max_queued_bytes: 1024 * 1024 * 1024,
        ...(INFLIGHT !== undefined ? { max_inflight: INFLIGHT } : {}),
      },
      ...(name === "ferry"
        ? {
          storage: {
            durability: DURABILITY,
            ...(COMMIT_WINDOW !== undefined ? { commit_window_ms: COMMIT_WINDOW } : {}),
          },
        }
        : {}),
    },
    mosquittoLines: [
      "persistence true",
      "persistence_location {dir}/",
      "autosave_interval 1800",
      ...(INFLIGHT !== undefined ? [`max_inflight_messages ${INFLIGHT}`] : []),
    ],
  });
  try {
    const seen = new Uint8Array(n);
    const counts = { received: 0, distinct: 0, dup: 0 };
    // 1. The subscriber makes its session, subscribes at QoS 2 and goes away.
    const sub1 = await Conn.open("127.0.0.1", broker.port, subscriberEvents(seen, counts), "sub");
    await sub1.connect(SUB_ID, 5, 0, { expiry: 3600 });
    await sub1.subscribe("drain/#", 2);
    sub1.send(gen({ cmd: "disconnect" }, 5));
    sub1.close();
    await Bun.sleep(200);
    // 2. The backlog.
    await publishAll(broker.port, n, mix);
    // 3. Back online: time until it has every message.
    const cpu0 = schedSeconds(broker.pid);
    const main0 = eventLoopSeconds(broker.pid);
    const threads0 = THREADS ? byThreadName(broker.pid) : undefined;
    const t0 = performance.now();
    const sub2 = await Conn.open("127.0.0.1", broker.port, subscriberEvents(seen, counts), "sub");
    await sub2.connect(SUB_ID, 5, 0, { expiry: 3600 });
    const end = t0 + TIMEOUT_S * 1000;
    while (counts.distinct < n && performance.now() < end && !sub2.closed) await Bun.sleep(5);
    const seconds = (performance.now() - t0) / 1000;
    const cpu = schedSeconds(broker.pid) - cpu0;
    const cpuMain = eventLoopSeconds(broker.pid) - main0;
    if (threads0 !== undefined) {
      const parts = [...byThreadName(broker.pid)].map(([k, v]) => [k, v - (threads0.get(k) ?? 0)] as const)
        .filter(([, v]) => v > 0.005).sort((a, b) => b[1] - a[1]);
      log(`${name} ${mix} ${n} CPU by thread: ${parts.map(([k, v]) => `${k} ${v.toFixed(2)} s`).join(", ")}`);
    }
    sub2.close();
    const complete = counts.distinct === n;
    return {
      broker: name,
      tree: name === "mosquitto" ? "" : root,
      mix,
      n,
      seconds,
      rate: counts.distinct / seconds,
      distinct: counts.distinct,
      duplicates: counts.dup,
      complete,
      cpu,
      cpuMain,
    };
  } finally {
    await broker.stop();
  }
}

async function main(): Promise<void> {
  const v = versions();
  log(
    `bun ${v.bun}, mosquitto ${v.mosquitto}; sizes ${SIZES.join(",")}; mixes ${MIXES.join(",")}; ` +
      `Ferry durability ${DURABILITY}; ${REPEAT} repeat(s)`,
  );
  type Column = { b: BrokerName; root: string };
  const columns = BROKERS.flatMap((b): Column[] =>
    b === "mosquitto" ? [{ b, root: "" }] : ROOTS.map((root) => ({ b, root }))
  );
  const label = (c: { b: BrokerName; root: string }) => (ROOTS.length > 1 && c.root ? `${c.b} (${c.root})` : c.b);
  const results: Result[] = [];
  for (let rep = 0; rep < REPEAT; rep++) {
    for (const n of SIZES) {
      for (const mix of MIXES) {
        for (const c of columns) {
          const r = await runCase(c.b, n, mix, c.root || ROOTS[0]!);
          log(
            `${label(c)} ${mix} ${n}: ${r.seconds.toFixed(2)} s, ${Math.round(r.rate)} msg/s, ` +
              `CPU ${(r.cpu * 1e6 / n).toFixed(1)} µs/msg (event loop ${(r.cpuMain * 1e6 / n).toFixed(1)})` +
              (r.complete ? "" : ` INCOMPLETE (${r.distinct}/${n})`) + (r.duplicates ? `, ${r.duplicates} dup` : ""),
          );
          results.push(r);
        }
      }
    }
  }
  const heading = REPEAT > 1 ? "best s (msg/s); median msg/s" : "s (msg/s)";
  console.log("| backlog | mix | " + columns.map((c) => `${label(c)} ${heading}`).join(" | ") + " |");
  console.log("|---|---|" + columns.map(() => "---|").join(""));
  for (const n of SIZES) {
    for (const mix of MIXES) {
      const cells = columns.map((c) => {
        const runs = results.filter((x) =>
          x.broker === c.b && x.tree === (c.b === "mosquitto" ? "" : c.root) &&
          x.n === n && x.mix === mix
        ).sort((a, b) => b.rate - a.rate);
        const best = runs[0]!;
        const median = runs[Math.floor(runs.length / 2)]!;
        const incomplete = runs.some((r) => !r.complete) ? " incomplete" : "";
        return `${best.seconds.toFixed(2)} (${Math.round(best.rate)})` +
          (REPEAT > 1 ? `; ${Math.round(median.rate)}` : "") + incomplete;
      });
      console.log(`| ${n} | ${mix} | ${cells.join(" | ")} |`);
    }
  }
  console.log(JSON.stringify(results));
}

await main();
