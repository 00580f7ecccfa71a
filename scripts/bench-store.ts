/**
 * Store benchmarks: commit throughput per durability mode, bytes written per
 * message, and open() time for a large recovered state.
 *
 *   bun scripts/bench-store.ts [--dir /path/on/the/disk/to/measure] [--messages 20000]
 *
 * Put --dir on the filesystem the appliance will use (an SD card behaves nothing like
 * a laptop SSD). Bytes written come from /proc/self/io (Linux only): `wchar` is what
 * SQLite handed to write(), `write_bytes` what the kernel accounted to this process
 * for the block device (dirtied page cache, counted once per page until written back).
 */
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bunSqliteDriver } from "../src/runtime/bun/sqlite-driver.ts";
import { MemoryStore } from "../src/store/memory-store.ts";
import { SqliteStore, type SqliteStoreOptions } from "../src/store/sqlite/sqlite-store.ts";
import type { Message, Mutation, Store } from "../src/store/store.ts";

const args = new Map<string, string>();
for (let i = 2; i < process.argv.length; i += 2) {
  args.set(process.argv[i]!.replace(/^--/, ""), process.argv[i + 1] ?? "");
}
const baseDir = mkdtempSync(join(args.get("dir") ?? tmpdir(), "ferry-bench-"));
const burst = Number(args.get("messages") ?? 20_000);
const payload = new Uint8Array(64).fill(0x42);

function message(offset: number, topic = `bench/${offset % 100}`): Message {
  return { offset, topic, payload, qos: 1, retain: false, receivedAt: Date.now(), origin: "bench" };
}

let dbCount = 0;
function sqlite(options: Partial<SqliteStoreOptions> = {}): { store: SqliteStore; path: string } {
  const path = join(baseDir, `bench-${dbCount++}.db`);
  return { store: new SqliteStore(bunSqliteDriver, { path, durability: "commit", ...options }), path };
}

function io(): { wchar: number; writeBytes: number } {
  try {
    const text = readFileSync("/proc/self/io", "utf8");
    const field = (name: string) =>
      Number(/^(\w+): (\d+)$/m.exec(text.split("\n").find((l) => l.startsWith(`${name}:`)) ?? "")?.[2] ?? NaN);
    return { wchar: field("wchar"), writeBytes: field("write_bytes") };
  } catch {
    return { wchar: NaN, writeBytes: NaN };
  }
}

function fileBytes(path: string): number {
  let total = 0;
  for (const f of [path, `${path}-wal`]) {
    try {
      total += statSync(f).size;
    } catch {
      // no WAL right now
    }
  }
  return total;
}

const fmt = (n: number, digits = 0) => n.toLocaleString("en-US", { maximumFractionDigits: digits });

/** `count` single-append commits fired without awaiting; resolves when all resolved. */
async function fireAll(store: Store, start: number, count: number): Promise<number> {
  const t0 = performance.now();
  const commits: Promise<void>[] = [];
  for (let i = 0; i < count; i++) commits.push(store.commit([{ op: "append", message: message(start + i) }]));
  await Promise.all(commits);
  return performance.now() - t0;
}

/** `clients` publishers, each awaiting its commit before the next (QoS 1 with one in flight). */
async function publishers(store: Store, start: number, count: number, clients: number) {
  let next = start;
  const end = start + count;
  const latencies: number[] = [];
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (next < end) {
        const offset = next++;
        const c0 = performance.now();
        await store.commit([{ op: "append", message: message(offset) }]);
        latencies.push(performance.now() - c0);
      }
    }),
  );
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))]!;
  return { ms: performance.now() - t0, p50: pct(0.5), p99: pct(0.99) };
}

async function throughput(): Promise<void> {
  console.log(`\n## Throughput: ${fmt(burst)} single-message commits of 64-byte payloads, fired without awaiting`);
  console.log("| store | all commit() promises resolved | msg/s | transactions |");
  console.log("|---|---|---|---|");
  for (const kind of ["commit", "periodic", "memory"] as const) {
    let store: Store;
    if (kind === "memory") store = new MemoryStore();
    else store = sqlite({ durability: kind }).store;
    const { nextOffset } = await store.open();
    const ms = await fireAll(store, nextOffset, burst);
    const c0 = performance.now();
    await store.close(); // periodic: the final flush makes them durable
    const closeMs = performance.now() - c0;
    const tx = store instanceof SqliteStore ? fmt(store.stats().transactions) : "-";
    const note = kind === "periodic" ? ` (+${fmt(closeMs, 1)} ms flush at close)` : "";
    console.log(`| ${kind} | ${fmt(ms, 1)} ms${note} | ${fmt((burst / ms) * 1000)} | ${tx} |`);
  }

  console.log(`\n## Commit mode, N publishers each awaiting its own commit (${fmt(burst / 4)} messages)`);
  console.log("| publishers | msg/s | commit latency p50 | p99 | transactions |");
  console.log("|---|---|---|---|---|");
  for (const clients of [1, 10, 100, 1000]) {
    const { store } = sqlite();
    const { nextOffset } = await store.open();
    const count = clients === 1 ? Math.min(2000, burst / 4) : burst / 4;
    const r = await publishers(store, nextOffset, count, clients);
    console.log(
      `| ${clients} | ${fmt((count / r.ms) * 1000)} | ${fmt(r.p50, 2)} ms | ${fmt(r.p99, 2)} ms | ${
        fmt(store.stats().transactions)
      } |`,
    );
    await store.close();
  }
}

async function bytesWritten(): Promise<void> {
  console.log("\n## Bytes written per 64-byte message, commit mode (including the checkpoint at close)");
  console.log("| pattern | messages | transactions | wchar/msg | write_bytes/msg | db file growth/msg |");
  console.log("|---|---|---|---|---|---|");
  const patterns: Array<[string, number, (s: Store, start: number, n: number) => Promise<unknown>]> = [
    ["burst, fired without awaiting", burst, (s, start, n) => fireAll(s, start, n)],
    ["100 publishers awaiting", burst / 4, (s, start, n) => publishers(s, start, n, 100)],
    ["1 publisher awaiting (one fsync each)", 2000, (s, start, n) => publishers(s, start, n, 1)],
  ];
  for (const [label, count, run] of patterns) {
    const { store, path } = sqlite();
    const { nextOffset } = await store.open();
    // Warm up so schema creation and the first WAL frames are not counted.
    await fireAll(store, nextOffset, 100);
    const size0 = fileBytes(path);
    const tx0 = store.stats().transactions;
    const io0 = io();
    await run(store, nextOffset + 100, count);
    const tx = store.stats().transactions - tx0;
    // close() checkpoints the WAL into the database file: that second copy of every
    // page is part of the cost, so it is inside the measurement.
    await store.close();
    const io1 = io();
    const growth = fileBytes(path) - size0;
    console.log(
      `| ${label} | ${fmt(count)} | ${fmt(tx)} | ${fmt((io1.wchar - io0.wchar) / count)} | ` +
        `${fmt((io1.writeBytes - io0.writeBytes) / count)} | ${fmt(growth / count)} |`,
    );
  }
}

async function openTime(): Promise<void> {
  const retained = 100_000;
  const deliveries = 100_000;
  const sessions = 100;
  console.log(`\n## open() with ${fmt(retained)} retained messages and ${fmt(deliveries)} queued deliveries`);
  const { store, path } = sqlite();
  await store.open();
  const t0 = performance.now();
  for (let start = 0; start < retained; start += 10_000) {
    const list: Mutation[] = [];
    for (let i = start; i < start + 10_000; i++) {
      const topic = `retained/${i}`;
      list.push({ op: "retain", topic, message: { ...message(0, topic), retain: true } });
    }
    await store.commit(list);
  }
  const list: Mutation[] = [];
  for (let s = 0; s < sessions; s++) {
    list.push({
      op: "session-put",
      session: {
        clientId: `device-${s}`,
        expiryInterval: 0xffffffff,
        protocolVersion: 5,
        subscriptions: [{ filter: "bench/#", qos: 1, noLocal: false, retainAsPublished: false, retainHandling: 0 }],
      },
    });
  }
  await store.commit(list);
  // Each message owed to one session: 100,000 distinct bodies to load.
  for (let start = 1; start <= deliveries; start += 10_000) {
    const batch: Mutation[] = [];
    for (let offset = start; offset < start + 10_000; offset++) {
      batch.push({ op: "append", message: message(offset) });
      batch.push({
        op: "delivery-put",
        delivery: { clientId: `device-${offset % sessions}`, offset, qos: 1, retain: false, phase: "queued" },
      });
    }
    await store.commit(batch);
  }
  await store.close();
  console.log(`populated in ${fmt(performance.now() - t0)} ms; file ${fmt(statSync(path).size / 1024 / 1024, 1)} MiB`);

  for (let run = 1; run <= 3; run++) {
    const again = new SqliteStore(bunSqliteDriver, { path, durability: "commit" });
    const o0 = performance.now();
    const recovered = await again.open();
    const ms = performance.now() - o0;
    const owed = recovered.sessions.reduce((n, s) => n + s.inflight.length + s.queued.length, 0);
    console.log(
      `open() run ${run}: ${fmt(ms, 1)} ms — ${fmt(recovered.retained.topics.length)} retained, ` +
        `${fmt(recovered.sessions.length)} sessions, ${fmt(owed)} deliveries`,
    );
    await again.close();
  }
}

try {
  console.log(`# Ferry store benchmark — Bun ${Bun.version}, dir ${baseDir}`);
  await throughput();
  await bytesWritten();
  await openTime();
} finally {
  rmSync(baseDir, { recursive: true, force: true });
}
