/**
 * One metrics snapshot behind $SYS, /metrics and the REST API: every counter the broker
 * keeps shows in all three (a counter added to BrokerMetrics and forgotten in a view fails
 * here), with Mosquitto's $SYS names, the standard process_* metrics and ferry_build_info.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startBroker, type TestBroker } from "./helpers/broker.ts";
import { connect, eventually } from "./helpers/clients.ts";
import { threadWrittenBytes } from "../src/runtime/thread-io.ts";
import { BrokerMetrics } from "../src/core/metrics.ts";
import { MetricsHistory } from "../src/admin/metrics-history.ts";
import type { MetricsSnapshot } from "../src/admin/metrics-snapshot.ts";

let b: TestBroker;
afterAll(async () => {
  await b?.stop();
});

/** Every numeric counter of BrokerMetrics (what a new field would be too). */
const COUNTERS = Object.entries(new BrokerMetrics(0)).filter(([k, v]) => typeof v === "number" && k !== "startedAt")
  .map(([k]) => k);

function collectNumbers(v: unknown, out = new Set<number>()): Set<number> {
  if (typeof v === "number") out.add(v);
  else if (v && typeof v === "object") { for (const x of Object.values(v)) collectNumbers(x, out); }
  return out;
}

describe("metrics snapshot", () => {
  test("every broker counter appears in /metrics, GET /api/v1/broker and $SYS", async () => {
    b = await startBroker({ admin: { port: 0 }, mqtt: { sys_interval: 1 } });
    const base = `http://127.0.0.1:${b.server.admin!.port}`;
    expect(COUNTERS).toContain("droppedQueueBytes");
    expect(COUNTERS).toContain("authBusy");
    // A distinct value per counter, so each can be found by its value.
    const m = b.server.broker.metrics as unknown as Record<string, number>;
    const values = new Map<string, number>();
    COUNTERS.forEach((k, i) => {
      const v = 1_000_000_000 + i * 1_000_000; // far enough apart that growth cannot reach the next
      m[k] = v;
      values.set(k, v);
    });

    const metrics = await (await fetch(`${base}/metrics`)).text();
    const exposed = new Set(
      metrics.split("\n").filter((l) => !l.startsWith("#")).map((l) => Number(l.split(" ").at(-1))),
    );
    const missingMetrics = [...values].filter(([, v]) => !exposed.has(v)).map(([k]) => k);
    expect(missingMetrics).toEqual([]);

    const rest = collectNumbers(await (await fetch(`${base}/api/v1/broker`)).json());
    expect([...values].filter(([, v]) => !rest.has(v)).map(([k]) => k)).toEqual([]);
    const snapshot = (await (await fetch(`${base}/api/v1/metrics`)).json()) as MetricsSnapshot;
    for (const [k, v] of values) expect((snapshot.broker.counters as unknown as Record<string, number>)[k]).toBe(v);

    const sub = await connect(b.url, { protocolVersion: 5 });
    await sub.client.subscribeAsync("$SYS/#");
    const sys = new Map<string, string>();
    // Some counters grow meanwhile (bytes sent grows with every $SYS message): any value from the one set on.
    const missing = () => {
      const seen = [...sys.values()].map(Number);
      return [...values].filter(([k, v]) => !seen.some((x) => x >= v && x <= m[k]!)).map(([k]) => k);
    };
    // Counters grow with this connection and subscription; wait until a publish has every value.
    let missingSys = missing();
    await new Promise<void>((resolve) => {
      const deadline = setTimeout(resolve, 5000);
      sub.client.on("message", (topic, payload) => {
        sys.set(topic, payload.toString());
        missingSys = missing();
        if (missingSys.length === 0) {
          clearTimeout(deadline);
          resolve();
        }
      });
    });
    expect(missingSys).toEqual([]);

    // Mosquitto's names where they mean the same.
    for (
      const topic of [
        "$SYS/broker/version",
        "$SYS/broker/uptime",
        "$SYS/broker/clients/connected",
        "$SYS/broker/clients/disconnected",
        "$SYS/broker/clients/total",
        "$SYS/broker/messages/received",
        "$SYS/broker/publish/messages/dropped",
        "$SYS/broker/store/messages/count",
        "$SYS/broker/store/messages/bytes",
        "$SYS/broker/retained messages/count",
        "$SYS/broker/subscriptions/count",
        "$SYS/broker/load/messages/received/1min",
        "$SYS/broker/load/messages/sent/15min",
        "$SYS/broker/load/bytes/received/5min",
        "$SYS/broker/load/connections/1min",
        "$SYS/broker/heap/current",
        "$SYS/broker/heap/maximum",
      ]
    ) expect(sys.has(topic)).toBe(true);
    expect(sys.get("$SYS/broker/version")).toBe("ferry version test");
    expect(Number(sys.get("$SYS/broker/heap/current"))).toBeGreaterThan(1_000_000);
    await sub.end();
  }, 15_000);

  test("/metrics has the standard process_* metrics and ferry_build_info{version,commit}", async () => {
    const base = `http://127.0.0.1:${b.server.admin!.port}`;
    const text = await (await fetch(`${base}/metrics`)).text();
    const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1]);
    expect(value("process_resident_memory_bytes")).toBeGreaterThan(10_000_000);
    expect(value("process_cpu_seconds_total")).toBeGreaterThan(0);
    expect(value("process_open_fds")).toBeGreaterThan(3);
    expect(value("process_max_fds")).toBeGreaterThan(value("process_open_fds"));
    const start = value("process_start_time_seconds");
    expect(start).toBeLessThanOrEqual(Date.now() / 1000);
    expect(start).toBeGreaterThan(Date.now() / 1000 - 3600);
    expect(text).toMatch(/^# TYPE process_cpu_seconds_total counter$/m);
    expect(text).toMatch(/^ferry_build_info\{version="test",commit="[^"]+",runtime="[^"]+"\} 1$/m);
  });

  test("the memory budget: limit, used, peak and parts in /metrics and GET /api/v1/broker", async () => {
    const base = `http://127.0.0.1:${b.server.admin!.port}`;
    const text = await (await fetch(`${base}/metrics`)).text();
    const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1]);
    expect(value("ferry_memory_limit_bytes")).toBe(128 * 1024 * 1024);
    expect(value("ferry_memory_used_bytes")).toBeGreaterThan(0);
    expect(value("ferry_memory_peak_bytes")).toBeGreaterThanOrEqual(value("ferry_memory_used_bytes"));
    for (const part of ["messages", "clients", "output", "input"]) {
      expect(text).toMatch(new RegExp(`^ferry_memory_bytes\\{part="${part}"\\} \\d+$`, "m"));
    }
    expect(text).toMatch(/^ferry_memory_publishers_slowed 0$/m);
    const api = (await (await fetch(`${base}/api/v1/broker`)).json()) as {
      memory: { limit_bytes: number; used_bytes: number; parts: Record<string, number> };
    };
    expect(api.memory.limit_bytes).toBe(128 * 1024 * 1024);
    expect(api.memory.used_bytes).toBeGreaterThan(0);
    expect(Object.keys(api.memory.parts).sort()).toEqual(["clients", "input", "messages", "output"]);
    const snapshot = (await (await fetch(`${base}/api/v1/metrics`)).json()) as MetricsSnapshot;
    expect(snapshot.broker.memory.limit).toBe(128 * 1024 * 1024);
    expect(snapshot.broker.memory.residentBytes).toBeGreaterThan(10_000_000);
  });
});

describe("flash wear", () => {
  test.skipIf(threadWrittenBytes() === undefined)(
    "the bytes the store wrote show in /metrics, GET /api/v1/broker and $SYS, and grow with commits",
    async () => {
      const dir = mkdtempSync(join(tmpdir(), "ferry-wear-"));
      const broker = await startBroker({
        data_dir: dir,
        storage: { durability: "commit" },
        admin: { port: 0 },
        mqtt: { sys_interval: 1 },
      });
      try {
        const base = `http://127.0.0.1:${broker.server.admin!.port}`;
        const written = async () => {
          const text = await (await fetch(`${base}/metrics`)).text();
          return Number(/^ferry_store_written_bytes_total (\d+)$/m.exec(text)?.[1]);
        };
        const atStart = await written(); // creating the schema wrote some already
        expect(atStart).toBeGreaterThanOrEqual(0);
        const pub = await connect(broker.url, { protocolVersion: 5 });
        // The storage thread reads its count at most once a second, with a commit's answer.
        await eventually(
          async () => {
            await pub.client.publishAsync("wear/t", "x", { qos: 1 });
            return (await written()) >= atStart + 4096;
          },
          10_000,
          "ferry_store_written_bytes_total to count a commit",
        );
        const api = await (await fetch(`${base}/api/v1/broker`)).json();
        expect(api.store.written_bytes).toBeGreaterThanOrEqual(atStart + 4096);
        const sub = await connect(broker.url, { protocolVersion: 5 });
        const values: number[] = [];
        sub.client.on("message", (_topic, payload) => values.push(Number(payload.toString())));
        await sub.client.subscribeAsync("$SYS/broker/store/bytes_written");
        // The retained value may be from before the commits; a later one has them.
        await eventually(() => values.some((v) => v >= atStart + 4096), 5000, "$SYS/broker/store/bytes_written");
        await sub.end();
        await pub.end();
      } finally {
        await broker.stop();
        rmSync(dir, { recursive: true, force: true });
      }
    },
    20_000,
  );
});

describe("metrics history and the drain estimate", () => {
  /** A snapshot with only what the history reads. */
  function snap(received: number, backlog: number, acknowledged: number): MetricsSnapshot {
    return {
      broker: { messagesReceived: [received, 0, 0], messagesSent: [0, 0, 0], gauges: { connected: 2 } },
      uplinks: [{ backlogEntries: backlog, acknowledged, oldestPendingMs: 4000 }],
    } as unknown as MetricsSnapshot;
  }

  test("rates per interval, one hour kept, and a drain estimate that counts incoming traffic", () => {
    let s = snap(0, 10_000, 0);
    const h = new MetricsHistory(() => s, 10_000);
    let t = 1_000_000;
    h.sample(t);
    // Each 10 s: 5,000 acknowledged (500/s) while the backlog shrinks by only 500 (450/s came in).
    for (let i = 1; i <= 6; i++) {
      s = snap(i * 1000, 10_000 - i * 500, i * 5000);
      h.sample(t += 10_000);
    }
    const { points, drain, interval_seconds } = h.series();
    expect(interval_seconds).toBe(10);
    expect(points).toHaveLength(6);
    expect(points.at(-1)).toEqual({
      t,
      in: 100,
      out: 0,
      connections: 2,
      backlog: 7000,
      oldest_pending_seconds: 4,
      drain: 500,
      incoming: 450,
    });
    // 7,000 left at a net 50/s: 140 s, not the 14 s the drain rate alone suggests.
    expect(drain).toEqual({
      backlog: 7000,
      drain_per_second: 500,
      incoming_per_second: 450,
      seconds_to_empty: 140,
      window_seconds: 60,
    });
    for (let i = 0; i < 400; i++) h.sample(t += 10_000);
    expect(h.series().points).toHaveLength(360); // one hour at 10 s
    // Growing backlog: no estimate.
    s = snap(0, 50_000, 0);
    h.sample(t += 10_000);
    expect(h.series().drain.seconds_to_empty).toBeNull();
  });
});
