/**
 * What the uplink tests share (test/uplink*.test.ts): a cloud broker (helpers/cloud-broker.ts),
 * an in-process edge with one uplink "cloud" that forwards sensors/# to
 * site/${edge_id}/${topic}, clients on either side, and the checks on what arrived. Whatever
 * a test starts is stopped after it, last first.
 */
import { afterAll, afterEach } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FerryConfig } from "../../src/config/schema.ts";
import type { Logger } from "../../src/core/logger.ts";
import { type DeepPartial, startBroker, type TestBroker } from "./broker.ts";
import { barrier, connect, eventually, type Received, type TestClient } from "./clients.ts";
import { type CloudBroker, type CloudOptions, createCloud } from "./cloud-broker.ts";

export type UplinkOverrides = DeepPartial<FerryConfig["uplinks"][number]>;

export const FORWARD = [{ filter: "sensors/#", topic: "site/${edge_id}/${topic}", qos: 1 as const }];

/** The uplink "cloud" of these tests (fast backoff, no jitter), with `uplink` over it. */
export function uplinkConfig(uplink: UplinkOverrides): Record<string, unknown> {
  return { name: "cloud", forward: FORWARD, backoff: { min_ms: 50, max_ms: 200, jitter: 0 }, ...uplink };
}

/** The edge's only uplink. */
export const link = (b: TestBroker) => b.server.uplinks.links[0]!;

export interface UplinkKit {
  /** Run `fn` after the current test (last registered, first run). */
  defer(fn: () => Promise<unknown> | unknown): void;
  /** A temporary directory, removed after the file's tests. */
  tempDir(prefix: string): string;
  /** A cloud broker, created (not started). */
  cloud(opts?: CloudOptions): Promise<CloudBroker>;
  /** An edge broker "edge1" whose uplink has `uplink` (with its url or urls). */
  edge(uplink: UplinkOverrides, extra?: DeepPartial<FerryConfig>, logger?: Logger): Promise<TestBroker>;
  /** A v5 client on `url` (a local client of an edge, or a cloud's). */
  client(url: string, opts?: Parameters<typeof connect>[1]): Promise<TestClient>;
  /** A v5 client of the cloud, subscribed to `filter` at QoS 1. */
  cloudSubscriber(c: CloudBroker, filter?: string, opts?: Parameters<typeof connect>[1]): Promise<TestClient>;
  /**
   * A cloud subscriber whose session exists before the uplink first connects, so no
   * forwarded message can arrive before anyone listens (and messages survive a restart
   * of a persistent cloud). Returns a function that (re)connects it.
   */
  persistentCloudSubscriber(
    c: CloudBroker,
    filter: string,
    opts?: Parameters<typeof connect>[1],
  ): Promise<() => Promise<TestClient>>;
}

/** Call once at the top of a test file: registers the clean-up after each test. */
export function uplinkKit(): UplinkKit {
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });
  const scratch: string[] = [];
  afterAll(() => {
    for (const d of scratch) rmSync(d, { recursive: true, force: true });
  });
  const defer = (fn: () => Promise<unknown> | unknown) => void cleanups.push(fn);
  const client = async (url: string, opts = {}) => {
    const c = await connect(url, { protocolVersion: 5, ...opts });
    defer(() => c.end(true));
    return c;
  };
  return {
    defer,
    tempDir(prefix) {
      const d = mkdtempSync(join(tmpdir(), prefix));
      scratch.push(d);
      return d;
    },
    async cloud(opts = {}) {
      const c = await createCloud(opts);
      defer(() => c.stop());
      return c;
    },
    async edge(uplink, extra = {}, logger) {
      const b = await startBroker({
        edge_id: "edge1",
        ...extra,
        uplinks: [uplinkConfig(uplink)] as FerryConfig["uplinks"],
      }, logger);
      defer(() => b.stop());
      return b;
    },
    client,
    async cloudSubscriber(c, filter = "site/#", opts = {}) {
      const s = await client(c.url, opts);
      await s.client.subscribeAsync(filter, { qos: 1 });
      return s;
    },
    async persistentCloudSubscriber(c, filter, opts = {}) {
      const o = {
        protocolVersion: 5 as const,
        clientId: `cloud-sub-${Math.random().toString(36).slice(2, 8)}`,
        clean: false,
        properties: { sessionExpiryInterval: 600 },
        ...opts,
      };
      const first = await connect(c.url, o);
      await first.client.subscribeAsync(filter, { qos: 1 });
      await first.end();
      return () => client(c.url, o);
    },
  };
}

/** The link has nothing unacknowledged left, and `sub` has all the cloud routed to it (see barrier). */
export async function drainedTo(b: TestBroker, sub: TestClient, ms = 12_000): Promise<void> {
  const s = () => link(b).status();
  await eventually(() => s().backlogEntries === 0 && s().inflight === 0, ms, "drained");
  await barrier(sub);
}

/** Publish QoS 1 in this order with up to `window` unacknowledged; resolves when all are acknowledged. */
export async function publishMany(c: TestClient, items: Array<[string, string]>, window = 100): Promise<void> {
  let i = 0;
  const worker = async () => {
    while (i < items.length) {
      const [topic, payload] = items[i++]!;
      await c.client.publishAsync(topic, payload, { qos: 1 });
    }
  };
  await Promise.all(Array.from({ length: Math.min(window, items.length) }, worker));
}

/** `n` numbered messages on each topic, interleaved: a/0, b/0, a/1, b/1, … */
export function numbered(topics: string[], n: number, from = 0): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (let i = from; i < from + n; i++) for (const t of topics) out.push([t, String(i)]);
  return out;
}

/**
 * Per topic, the payload numbers in order of first arrival, and how many arrivals repeated
 * one. `payloadOf` reads the number's text out of a message (an envelope, say).
 */
export function firstArrivals(
  messages: Received[],
  payloadOf: (m: Received) => string = (m) => m.payload,
): { byTopic: Map<string, number[]>; duplicates: number } {
  const byTopic = new Map<string, number[]>();
  const seen = new Set<string>();
  let duplicates = 0;
  for (const m of messages) {
    const payload = payloadOf(m);
    const key = `${m.topic}\u0000${payload}`;
    if (seen.has(key)) {
      duplicates++;
      continue;
    }
    seen.add(key);
    let list = byTopic.get(m.topic);
    if (!list) byTopic.set(m.topic, list = []);
    list.push(Number(payload));
  }
  return { byTopic, duplicates };
}
