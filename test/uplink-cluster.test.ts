/**
 * The uplink against a real distributed broker: a 3-node NATS cluster (JetStream, an
 * MQTT listener per node, MQTT streams replicated on all three; test/helpers/
 * nats-cluster.ts). Mid-drain, the node the uplink is connected to is SIGKILLed; the
 * uplink fails over to the next endpoint, and a subscriber on another node receives
 * every message the edge acknowledged, first arrivals in order per topic apart from what the
 * cluster redelivers late (at most the uplink's in-flight window). NATS speaks
 * MQTT 3.1.1 (QoS 0/1), so the uplink runs protocol_version 4 here; MQTT 5 features are
 * tested against mosquitto (test/uplink-endpoints.test.ts).
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { connect, eventually, type Received, sleep, type TestClient } from "./helpers/clients.ts";
import { NATS_SERVER, NatsCluster } from "./helpers/nats-cluster.ts";
import { firstArrivals as arrivals, publishMany, uplinkKit } from "./helpers/uplink-kit.ts";

setDefaultTimeout(150_000);

const kit = uplinkKit();

/** What `envelope: "json"` wraps around a payload (NATS speaks 3.1.1: no properties). */
interface Enveloped {
  ferry: { edge_id: string; log_id: string; offset: number; replay: boolean };
  payload: string;
}
const opened = (m: Received) => JSON.parse(m.payload) as Enveloped;

/** Per topic, the payload numbers in order of first arrival (of the enveloped payloads). */
const firstArrivals = (messages: Received[]) => arrivals(messages, (m) => opened(m).payload).byTopic;

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** The values that arrived after a larger one. */
function lateArrivals(values: number[]): number[] {
  const late: number[] = [];
  let highest = -1;
  for (const v of values) {
    if (v < highest) late.push(v);
    else highest = v;
  }
  return late;
}

describe.skipIf(!NATS_SERVER)("uplink to a NATS cluster", () => {
  test("the node in use is SIGKILLed mid-drain: the uplink fails over and a subscriber on another node gets every acknowledged message, in order per topic but for what the cluster redelivers late", async () => {
    const cluster = await NatsCluster.start();
    kit.defer(() => cluster.stop());
    const [n1, n2, n3] = cluster.nodes as [typeof cluster.nodes[0], typeof cluster.nodes[0], typeof cluster.nodes[0]];
    // A persistent QoS 1 session on node 3, made before anything is forwarded.
    let sub: TestClient | undefined;
    for (let attempt = 0; !sub; attempt++) {
      // The cluster elects its JetStream leaders for a few seconds after start.
      // (A CONNACK that never comes closes the client without an error: race a timer.)
      const attemptOnce = connect(n3.url, { protocolVersion: 4, clientId: "cloud-sub", clean: false });
      attemptOnce.then((c) => (sub === undefined ? undefined : c.end(true)), () => {});
      const noConnack = new Promise<never>((_, reject) => setTimeout(() => reject(new Error("no CONNACK")), 4000));
      sub = await Promise.race([attemptOnce, noConnack]).catch(async (err) => {
        if (attempt > 20) throw err;
        await sleep(250);
        return undefined;
      });
    }
    kit.defer(() => sub.end(true));
    await sub.client.subscribeAsync("site/#", { qos: 1 });

    const edge = await kit.edge({
      urls: [n1.url, n2.url, n3.url],
      protocol_version: 4,
      envelope: "json",
      rate: { messages_per_second: 300 },
      ack_timeout_seconds: 5,
      backoff: { min_ms: 200, max_ms: 1000, jitter: 0 },
    });
    const link = edge.server.uplinks.links[0]!;
    await eventually(() => link.state === "connected", 20_000, "uplink connected");
    expect(link.status().url).toBe(n1.url);

    const pub = await kit.client(edge.url);
    const items: Array<[string, string]> = [];
    for (let i = 0; i < 750; i++) for (const t of ["sensors/a", "sensors/b"]) items.push([t, String(i)]);
    await publishMany(pub, items); // every one acknowledged by the edge

    await eventually(() => link.status().acknowledged >= 300, 20_000, "drain under way");
    await cluster.kill(0);
    await eventually(() => link.state === "connected" && link.status().url !== n1.url, 60_000, "failed over");
    await eventually(() => link.status().backlogEntries === 0, 60_000, "drained after the failover");
    // Both topics: the message in flight through the killed node may come late on either
    // (one CI run saw a/152 still missing when b was complete).
    await eventually(
      () => {
        const by = firstArrivals(sub.messages);
        return by.get("site/edge1/sensors/a")?.length === 750 && by.get("site/edge1/sensors/b")?.length === 750;
      },
      30_000,
      "all",
    );
    const byTopic = firstArrivals(sub.messages);
    for (const topic of ["site/edge1/sensors/a", "site/edge1/sensors/b"]) {
      const got = byTopic.get(topic)!;
      // Every acknowledged message, each once at least.
      expect([...got].sort((x, y) => x - y)).toEqual(range(750));
      // In order, but for what the cluster itself delivers late: Ferry sends its log in order
      // and re-sends from its cursor after the cut (test/uplink-resilience.test.ts checks that
      // order against one broker), while a message in flight through the killed node can reach
      // this subscriber only when the cluster redelivers it, after later ones (one CI run saw
      // b/152 arrive after b/749). Only the uplink's window (max_inflight, 100) can be in flight.
      expect(lateArrivals(got).length).toBeLessThanOrEqual(100);
    }
    // The dedup key in the envelope: each message keeps its offset at every arrival, one log id.
    const offsetOf = new Map<string, number>();
    for (const m of sub.messages) {
      const e = opened(m);
      expect(e.ferry.edge_id).toBe("edge1");
      const key = `${m.topic} ${e.payload}`;
      if (!offsetOf.has(key)) offsetOf.set(key, e.ferry.offset);
      expect(e.ferry.offset).toBe(offsetOf.get(key)!);
    }
    expect(new Set(sub.messages.map((m) => opened(m).ferry.log_id)).size).toBe(1);
    const s = link.status();
    expect(s.reconnects).toBeGreaterThanOrEqual(1);
    expect(s.endpoints.find((e) => e.url === n1.url)!.lastError).toBeDefined();
  });
});
