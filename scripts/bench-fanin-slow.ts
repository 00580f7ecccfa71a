#!/usr/bin/env bun
/**
 * Fan-in at a subscriber that cannot keep up (issue 13): 4 QoS 1 publishers, each with up
 * to 64 unacknowledged publishes, send as fast as their acks come back to 1 online
 * subscriber that reads its socket at `--rate` messages per second (a slow device: TCP
 * pushes back on the broker).
 * Measured for `--duration` seconds: messages acknowledged to the publishers, messages
 * delivered; then publishing stops, the subscriber acknowledges at full speed until nothing
 * more arrives, and every acknowledged message that never arrived counts as dropped.
 *
 *   npx bun scripts/bench-fanin-slow.ts                       # Ferry (commit, periodic, memory) and Mosquitto
 *   npx bun scripts/bench-fanin-slow.ts --brokers ferry,mosquitto --rate 15000 --duration 5 --rounds 2
 *   npx bun scripts/bench-fanin-slow.ts --ferry-roots /tmp/before,.   # two Ferry trees, side by side
 *   npx bun scripts/bench-fanin-slow.ts --ferry-cmd dist/ferry-linux-x64 --cold --json out.json   # the executable
 *
 * --ferry-cmd runs that command (`serve` and its options appended) instead of a tree's sources;
 * --cold evicts each broker's executable from the page cache before it starts; --json writes
 * the rows as JSON too.
 * Both brokers on their defaults for queues except: Mosquitto `max_queued_messages 0` (no
 * limit: its default of 1,000 drops), `max_inflight_messages 64` (Ferry's `max_inflight`),
 * `set_tcp_nodelay true`. Ferry keeps `mqtt.max_queued_messages` 10,000. MQTT 3.1.1 clients
 * (raw TCP, scripts/bench/loadgen.ts), 64-byte payloads.
 */
import { resolve } from "node:path";
import { type BrokerName, ROOT, rssKb, startBroker, versions } from "./bench/brokers.ts";
import { Conn, gen, PUBACK } from "./bench/loadgen.ts";

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

type Target = "ferry" | "ferry-periodic" | "ferry-memory" | "mosquitto";
const TARGETS = flag("brokers", "ferry,ferry-periodic,ferry-memory,mosquitto").split(",") as Target[];
const ROOTS = flag("ferry-roots", ROOT).split(",").map((r) => resolve(r));
const FERRY_CMD = flag("ferry-cmd", "").split(/\s+/).filter(Boolean);
const COLD = process.argv.includes("--cold");
const JSON_OUT = flag("json", "");
const RATE = Number(flag("rate", "15000"));
const DURATION = Number(flag("duration", "5"));
const ROUNDS = Number(flag("rounds", "1"));
const PUBS = 4;
const WINDOW = 64;
const PAYLOAD = 64;
const TOPIC = "fanin/slow";

const log = (msg: string) => process.stderr.write(`[fanin-slow] ${msg}\n`);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Result {
  target: string;
  acked: number;
  delivered: number;
  /** Acknowledged and never delivered, after the drain. */
  dropped: number;
  ackedPerS: number;
  deliveredPerS: number;
  rssPeakMb: number;
}

async function runCase(target: Target, root: string): Promise<Result> {
  const name: BrokerName = target === "ferry-periodic" ? "ferry" : target;
  const broker = await startBroker(name, {
    ferryRoot: root,
    ...(FERRY_CMD.length > 0 ? { ferryCommand: FERRY_CMD } : {}),
    cold: COLD,
    ...(target === "ferry-periodic" ? { ferryExtra: { storage: { durability: "periodic" } } } : {}),
  });
  try {
    /** Per publisher: seq of each acknowledged message, and seqs delivered. */
    const ackedSeqs = Array.from({ length: PUBS }, () => new Uint8Array(4_000_000));
    const seen = Array.from({ length: PUBS }, () => new Uint8Array(4_000_000));
    let acked = 0;
    let delivered = 0;
    let measuring = false;
    let ackedInWindow = 0;
    let deliveredInWindow = 0;
    let lastArrival = performance.now();

    // The subscriber: a slow reader. It handles what one read brings (counting and
    // acknowledging each message at once), then stops reading its socket for as long as
    // handling that many messages at RATE per second takes, so TCP pushes back on the broker
    // as it would from a slow device. (Holding acks instead would not pace a broker that
    // does not keep to its in-flight window towards the subscriber.)
    let draining = false;
    let chunk = 0;
    const sub = await Conn.open("127.0.0.1", broker.port, {
      publish(c, _qos, id, _retain, buf, p, len) {
        lastArrival = performance.now();
        chunk++;
        if (len >= 12) {
          const pub = ((buf[p + 4]! << 24) | (buf[p + 5]! << 16) | (buf[p + 6]! << 8) | buf[p + 7]!) >>> 0;
          const seq = ((buf[p + 8]! << 24) | (buf[p + 9]! << 16) | (buf[p + 10]! << 8) | buf[p + 11]!) >>> 0;
          const s = seen[pub];
          if (s && seq < s.length && s[seq] === 0) {
            s[seq] = 1;
            delivered++;
            if (measuring) deliveredInWindow++;
          }
        }
        c.ack4(PUBACK, 0, id);
      },
      ack() {},
      afterData(c) {
        const n = chunk;
        chunk = 0;
        if (draining || n === 0) return;
        c.socket.pause();
        setTimeout(() => c.socket.resume(), (n * 1000) / RATE);
      },
      drained() {},
    }, "sub");
    await sub.connect("fanin-slow-sub", 4);
    await sub.subscribe(TOPIC, 1);

    // The publishers: as fast as their window allows.
    let publishing = true;
    const pubs: Conn[] = [];
    const idSeq = Array.from({ length: PUBS }, () => new Int32Array(65536));
    const payload = new Uint8Array(PAYLOAD);
    const view = new DataView(payload.buffer);
    const fill = (c: Conn): void => {
      while (publishing && c.inflight < WINDOW && !c.closed) {
        const id = c.takeId();
        const seq = c.sent++;
        idSeq[c.index]![id] = seq;
        view.setUint32(4, c.index);
        view.setUint32(8, seq);
        c.inflight++;
        c.send(gen({ cmd: "publish", topic: TOPIC, qos: 1, messageId: id, payload: Buffer.from(payload) }, 4));
      }
    };
    for (let k = 0; k < PUBS; k++) {
      const c = await Conn.open("127.0.0.1", broker.port, {
        publish() {},
        ack(conn, type, id) {
          if (type !== PUBACK) return;
          conn.used[id] = 0;
          conn.inflight--;
          const seq = idSeq[k]![id]!;
          ackedSeqs[k]![seq] = 1;
          acked++;
          if (measuring) ackedInWindow++;
          fill(conn);
        },
        afterData() {},
        drained(conn) {
          fill(conn);
        },
      }, `pub${k}`);
      c.index = k;
      await c.connect(`fanin-slow-pub-${k}`, 4);
      pubs.push(c);
    }
    for (const c of pubs) fill(c);
    await sleep(1000); // warm-up
    measuring = true;
    let rssPeakKb = 0;
    const t0 = performance.now();
    while (performance.now() - t0 < DURATION * 1000) {
      await sleep(100);
      rssPeakKb = Math.max(rssPeakKb, rssKb(broker.pid));
    }
    const seconds = (performance.now() - t0) / 1000;
    measuring = false;
    publishing = false;
    // Drain: everything queued comes out at full speed; stop once nothing arrived for 2 s.
    draining = true;
    sub.socket.resume();
    while (performance.now() - lastArrival < 2000) {
      await sleep(100);
      rssPeakKb = Math.max(rssPeakKb, rssKb(broker.pid));
    }
    let dropped = 0;
    for (let k = 0; k < PUBS; k++) {
      const a = ackedSeqs[k]!;
      const s = seen[k]!;
      for (let i = 0; i < pubs[k]!.sent; i++) if (a[i] === 1 && s[i] === 0) dropped++;
    }
    for (const c of [...pubs, sub]) {
      c.send(gen({ cmd: "disconnect" }, 4));
      c.close();
    }
    return {
      target,
      acked,
      delivered,
      dropped,
      ackedPerS: ackedInWindow / seconds,
      deliveredPerS: deliveredInWindow / seconds,
      rssPeakMb: rssPeakKb / 1024,
    };
  } finally {
    await broker.stop();
  }
}

async function main(): Promise<void> {
  const v = versions();
  log(`bun ${v.bun}, mosquitto ${v.mosquitto}; subscriber reads ${RATE} msg/s; ${DURATION} s; ${ROUNDS} round(s)`);
  const rows: Array<Result & { round: number; tree: string }> = [];
  for (let round = 1; round <= ROUNDS; round++) {
    for (const target of TARGETS) {
      const roots = target === "mosquitto" ? [ROOTS[0]!] : ROOTS;
      for (const root of roots) {
        const tree = target === "mosquitto" ? "" : root;
        const r = await runCase(target, root);
        rows.push({ ...r, round, tree });
        log(
          `${target}${ROOTS.length > 1 && tree ? ` (${tree})` : ""}: acked ${Math.round(r.ackedPerS)}/s, ` +
            `delivered ${Math.round(r.deliveredPerS)}/s, acked-then-dropped ${r.dropped} of ${r.acked} ` +
            `(${(100 * r.dropped / Math.max(1, r.acked)).toFixed(1)} %), RSS peak ${r.rssPeakMb.toFixed(0)} MB`,
        );
      }
    }
  }
  console.log("| broker | round | acked msg/s | delivered msg/s | acknowledged, then dropped | RSS peak MB |");
  console.log("|---|--:|--:|--:|--:|--:|");
  for (const r of rows) {
    const label = r.target + (ROOTS.length > 1 && r.tree ? ` (${r.tree})` : "");
    const pct = (100 * r.dropped / Math.max(1, r.acked)).toFixed(1);
    console.log(
      `| ${label} | ${r.round} | ${Math.round(r.ackedPerS)} | ${
        Math.round(r.deliveredPerS)
      } | ${r.dropped} of ${r.acked} (${pct} %) | ${r.rssPeakMb.toFixed(0)} |`,
    );
  }
  console.log(JSON.stringify(rows));
  if (JSON_OUT) await Bun.write(JSON_OUT, JSON.stringify(rows, null, 1));
}

await main();
