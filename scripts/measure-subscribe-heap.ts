#!/usr/bin/env bun
/**
 * What a persistent session's SUBSCRIBEs leave in the event loop's JavaScript heap (issue 13,
 * the 20,000 SUBSCRIBEs row): Ferry runs in this process on its SQLite store (commit
 * durability, the storage thread on, as the executable runs), one MQTT 5 client with
 * session expiry 1 h writes N SUBSCRIBEs of one filter each (`s/<i>/+`, pipelined, over a
 * real TCP socket), and once the last SUBACK is in the script prints:
 *
 * - the heap (bun:jsc heapStats) before, right after and after a full collection, and RSS;
 * - per object type, how many more there are after the full collection than before
 *   (live objects per subscription), largest first;
 * - with --idle N instead, the same for N idle 3.1.1 connections (keep alive 0), per
 *   connection.
 *
 * - with --alloc K, then what K more SUBSCRIBEs allocate, garbage included (no collection
 *   in between), per object type;
 *
 *   npx bun scripts/measure-subscribe-heap.ts [--subscribes 20000] [--alloc 0] [--idle 0] [--top 25]
 *        [--durability commit|periodic|memory]
 *
 * The client's own objects are few (it writes prebuilt bytes and counts SUBACK bytes), but
 * they share the heap: read the per-subscription figures, not the totals, for what Ferry
 * holds. Not a benchmark: the time printed is for orientation only.
 */
import { heapStats, memoryUsage } from "bun:jsc";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import mqttPacket from "mqtt-packet";
import { validateConfig } from "../src/config/load.ts";
import { silentLogger } from "../src/core/logger.ts";
import { startServer } from "../src/runtime/bun/server.ts";

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}
const SUBSCRIBES = Number(flag("subscribes", "20000"));
const IDLE = Number(flag("idle", "0"));
const TOP = Number(flag("top", "25"));
const ALLOC = Number(flag("alloc", "0"));
/** storage.durability: commit (the default), periodic or memory. */
const DURABILITY = flag("durability", "commit");

const fmt = (n: number, digits = 0) => n.toLocaleString("en-US", { maximumFractionDigits: digits });
const rssKb = () => Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync("/proc/self/status", "utf8"))?.[1] ?? NaN);

interface Snapshot {
  heapSize: number;
  heapCapacity: number;
  extraMemory: number;
  /** What malloc (mimalloc) has handed out and holds committed, for every thread. */
  mallocCurrent: number;
  mallocCommit: number;
  objectCount: number;
  types: Record<string, number>;
  rssKb: number;
}
function snapshot(): Snapshot {
  const s = heapStats();
  const m = memoryUsage();
  return {
    heapSize: s.heapSize,
    heapCapacity: s.heapCapacity,
    extraMemory: s.extraMemorySize,
    mallocCurrent: m.current,
    mallocCommit: m.currentCommit,
    objectCount: s.objectCount,
    types: { ...s.objectTypeCounts },
    rssKb: rssKb(),
  };
}
const mib = (n: number) => fmt(n / 1048576, 1);
function memoryLine(label: string, s: Snapshot): string {
  return `| ${label} | ${mib(s.heapSize)} | ${mib(s.heapCapacity)} | ${mib(s.extraMemory)} | ${
    mib(s.mallocCurrent)
  } | ${mib(s.mallocCommit)} | ${fmt(s.rssKb / 1024, 1)} |`;
}
function fullGc(): void {
  for (let i = 0; i < 3; i++) Bun.gc(true);
}

const dir = mkdtempSync(join(tmpdir(), "subscribe-heap-"));
const config = validateConfig({
  listeners: { host: "127.0.0.1", mqtt_port: 0, ws_port: null },
  data_dir: dir,
  log_level: "silent",
  admin: { port: null },
  limits: { exempt_loopback: true },
  storage: { durability: DURABILITY },
});
const server = await startServer(config, "heap", silentLogger);
const port = server.mqtt.port;

/** A raw TCP client: writes `bytes`, and resolves once `until(received bytes)` says so. */
function client(
  first: Uint8Array,
): Promise<{ socket: net.Socket; received: () => number; wait: (n: number) => Promise<void> }> {
  return new Promise((resolve, reject) => {
    let got = 0;
    let waiter: { n: number; done: () => void } | undefined;
    const socket = net.connect(port, "127.0.0.1", () => {
      socket.write(first);
      resolve({
        socket,
        received: () => got,
        wait: (n) =>
          new Promise<void>((done) => {
            if (got >= n) done();
            else waiter = { n, done };
          }),
      });
    });
    socket.on("data", (b: Buffer) => {
      got += b.byteLength;
      if (waiter && got >= waiter.n) {
        const w = waiter;
        waiter = undefined;
        w.done();
      }
    });
    socket.on("error", reject);
  });
}

function report(label: string, before: Snapshot, after: Snapshot, per: number, unit: string): void {
  console.log(`\n## ${label}`);
  console.log(`| | heap | heap capacity | objects | RSS |`);
  console.log(`|---|---|---|---|---|`);
  const line = (label: string, x: Snapshot) =>
    `| ${label} | ${fmt(x.heapSize / 1024)} KiB | ${fmt(x.heapCapacity / 1024)} KiB | ${fmt(x.objectCount)} | ${
      fmt(x.rssKb / 1024, 1)
    } MB |`;
  console.log(line("before", before));
  console.log(line("after", after));
  console.log(
    `| per ${unit} | ${fmt((after.heapSize - before.heapSize) / per, 1)} B | ${
      fmt((after.heapCapacity - before.heapCapacity) / per, 1)
    } B | ${fmt((after.objectCount - before.objectCount) / per, 2)} | ${
      fmt(((after.rssKb - before.rssKb) * 1024) / per, 0)
    } B |`,
  );
  const rows = Object.keys({ ...before.types, ...after.types })
    .map((t) => ({ t, d: (after.types[t] ?? 0) - (before.types[t] ?? 0) }))
    .filter((r) => r.d !== 0)
    .sort((a, b) => Math.abs(b.d) - Math.abs(a.d))
    .slice(0, TOP);
  console.log(`\n| object type | more after | per ${unit} |`);
  console.log(`|---|---|---|`);
  for (const r of rows) console.log(`| ${r.t} | ${fmt(r.d)} | ${fmt(r.d / per, 2)} |`);
}

try {
  if (IDLE > 0) {
    fullGc();
    const before = snapshot();
    const connect = mqttPacket.generate({
      cmd: "connect",
      protocolId: "MQTT",
      protocolVersion: 4,
      clean: true,
      keepalive: 0,
      clientId: "",
    });
    const sockets: net.Socket[] = [];
    for (let i = 0; i < IDLE; i++) {
      const c = await client(connect);
      await c.wait(4); // CONNACK
      sockets.push(c.socket);
    }
    fullGc();
    const after = snapshot();
    report(
      `${fmt(IDLE)} idle 3.1.1 connections (client sockets in this process too)`,
      before,
      after,
      IDLE,
      "connection",
    );
    for (const s of sockets) s.destroy();
  } else {
    const connect = mqttPacket.generate({
      cmd: "connect",
      protocolId: "MQTT",
      protocolVersion: 5,
      clean: false,
      keepalive: 0,
      clientId: "many-subs",
      properties: { sessionExpiryInterval: 3600 },
    });
    const c = await client(connect);
    await c.wait(1);
    await Bun.sleep(100);
    const chunks: Buffer[] = [];
    for (let i = 0; i < SUBSCRIBES; i++) {
      chunks.push(
        mqttPacket.generate({
          cmd: "subscribe",
          messageId: (i % 65_535) + 1,
          subscriptions: [{ topic: `s/${i}/+`, qos: 1 }],
        }, { protocolVersion: 5 }),
      );
    }
    const bytes = Buffer.concat(chunks);
    chunks.length = 0;
    const connackBytes = c.received();
    fullGc();
    const before = snapshot();
    const t0 = performance.now();
    c.socket.write(bytes);
    // A v5 SUBACK of one granted QoS and no properties is 6 bytes.
    await c.wait(connackBytes + 6 * SUBSCRIBES);
    const ms = performance.now() - t0;
    const right = snapshot();
    fullGc();
    const after = snapshot();
    console.log(`# ${fmt(SUBSCRIBES)} SUBSCRIBEs in ${fmt(ms)} ms (in-process, for orientation)`);
    console.log("\n| MiB | JS heap | heap capacity | extra memory | malloc in use | malloc committed | RSS (MB) |");
    console.log("|---|---|---|---|---|---|---|");
    console.log(memoryLine("before", before));
    console.log(memoryLine("right after the last SUBACK", right));
    console.log(memoryLine("after a full collection", after));
    report(`${fmt(SUBSCRIBES)} SUBSCRIBEs of one persistent session`, before, after, SUBSCRIBES, "subscription");
    if (ALLOC > 0) {
      // Objects JavaScriptCore counts include those allocated since the last collection (live
      // until swept), so with no collection in between the difference is what K more
      // SUBSCRIBEs allocated, garbage included. A collection in between shows as a smaller
      // or negative heap: run again, or lower --alloc.
      const more: Buffer[] = [];
      for (let i = 0; i < ALLOC; i++) {
        more.push(
          mqttPacket.generate({
            cmd: "subscribe",
            messageId: (i % 65_535) + 1,
            subscriptions: [{ topic: `t/${i}/+`, qos: 1 }],
          }, { protocolVersion: 5 }),
        );
      }
      const moreBytes = Buffer.concat(more);
      const start = c.received();
      fullGc();
      const a = snapshot();
      c.socket.write(moreBytes);
      await c.wait(start + 6 * ALLOC);
      const b = snapshot();
      report(`what ${fmt(ALLOC)} more SUBSCRIBEs allocated (no full collection in between)`, a, b, ALLOC, "SUBSCRIBE");
    }
    c.socket.destroy();
  }
} finally {
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
}
