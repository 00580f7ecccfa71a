import { describe, expect, setDefaultTimeout, test } from "bun:test";
import type { FerryConfig } from "../src/config/schema.ts";
import type { DeepPartial, TestBroker } from "./helpers/broker.ts";
import { barrier, connect, eventually } from "./helpers/clients.ts";
import { link, uplinkKit, type UplinkOverrides } from "./helpers/uplink-kit.ts";

setDefaultTimeout(30_000);

const kit = uplinkKit();
const { cloud, cloudSubscriber, persistentCloudSubscriber } = kit;
const edge = (url: string, uplink: UplinkOverrides = {}, extra: DeepPartial<FerryConfig> = {}) =>
  kit.edge({ url, ...uplink }, extra);
const localClient = (b: TestBroker) => kit.client(b.url);

describe("cloud uplink", () => {
  test("a matching local message reaches the cloud on the mapped topic with edge id and receive time", async () => {
    const c = await cloud();
    await c.start();
    const sub = await cloudSubscriber(c, "site/#");
    const b = await edge(c.url);
    await eventually(() => link(b).state === "connected", 5000, "uplink connected");
    const pub = await localClient(b);
    await pub.client.publishAsync("sensors/t1", "21.5", { qos: 1, properties: { userProperties: { unit: "C" } } });
    await pub.client.publishAsync("other/t1", "not forwarded", { qos: 1 });
    const [m] = await sub.waitFor(1);
    expect(m!.topic).toBe("site/edge1/sensors/t1");
    expect(m!.payload).toBe("21.5");
    const up = m!.packet.properties?.userProperties as Record<string, string>;
    expect(up.unit).toBe("C");
    expect(up["ferry-edge-id"]).toBe("edge1");
    expect(Number.isNaN(Date.parse(up["ferry-received-at"]!))).toBe(false);
    // The link forwards in log order: once a later message is there, "other/t1" would be too.
    await pub.client.publishAsync("sensors/last", "", { qos: 1 });
    await sub.waitFor(2);
    expect(sub.messages.map((m) => m.topic)).toEqual(["site/edge1/sensors/t1", "site/edge1/sensors/last"]);
  });

  test("stamp dedup carries only the dedup key and replay marker; none carries only the publisher's own properties; a publisher's ferry-* never pass", async () => {
    const c = await cloud();
    await c.start();
    const sub = await cloudSubscriber(c, "site/#");
    const fake = { unit: "C", "ferry-offset": "999999", "ferry-replay": "true", "ferry-clock": "synced" };
    const sizes: Record<string, number> = {};
    for (const stamp of ["full", "dedup", "none"] as const) {
      const b = await edge(c.url, { stamp });
      await eventually(() => link(b).state === "connected", 5000, "uplink connected");
      const pub = await localClient(b);
      const before = sub.messages.length;
      await pub.client.publishAsync(`sensors/${stamp}`, "21.5", { qos: 1, properties: { userProperties: fake } });
      await pub.client.publishAsync(`sensors/${stamp}`, "21.6", { qos: 1 });
      const got = await sub.waitFor(before + 2);
      const [withProps, plain] = got.slice(-2).map((m) =>
        m.packet.properties?.userProperties as Record<string, string>
      );
      const keys = (u: Record<string, string> | undefined) => Object.keys(u ?? {}).sort();
      sizes[stamp] = got.at(-1)!.packet.length!;
      if (stamp === "full") {
        expect(keys(plain)).toEqual(
          ["ferry-clock", "ferry-edge-id", "ferry-log-id", "ferry-offset", "ferry-received-at"],
        );
        expect(withProps!.unit).toBe("C");
        expect(withProps!["ferry-offset"]).toBe(String(Number(plain!["ferry-offset"]) - 1));
        expect(withProps!["ferry-replay"]).toBeUndefined(); // live, whatever the publisher said
      } else if (stamp === "dedup") {
        expect(keys(plain)).toEqual(["ferry-edge-id", "ferry-log-id", "ferry-offset"]);
        expect(withProps).toEqual({
          unit: "C",
          "ferry-edge-id": "edge1",
          "ferry-log-id": plain!["ferry-log-id"]!,
          "ferry-offset": String(Number(plain!["ferry-offset"]) - 1),
        });
      } else {
        expect(plain).toBeUndefined();
        expect(withProps).toEqual({ unit: "C" }); // the publisher's own, without its fake ferry-* values
      }
      await b.stop();
    }
    // What each mode costs on the wire for a 4-byte payload.
    expect(sizes.full!).toBeGreaterThan(sizes.dedup! + 50);
    expect(sizes.dedup!).toBeGreaterThan(sizes.none! + 50);
  });

  test("QoS 0 local messages are logged and forwarded too", async () => {
    const c = await cloud();
    await c.start();
    const sub = await cloudSubscriber(c, "site/#");
    const b = await edge(c.url);
    await eventually(() => link(b).state === "connected");
    const pub = await localClient(b);
    for (let i = 0; i < 20; i++) pub.client.publish("sensors/q0", String(i), { qos: 0 });
    await sub.waitFor(20);
    expect(sub.messages.map((m) => Number(m.payload))).toEqual([...Array(20).keys()]);
  });

  test("cloud down, then up: the whole backlog arrives in order, and the cursor reaches the end", async () => {
    const c = await cloud({ persistent: true });
    await c.start();
    const resume = await persistentCloudSubscriber(c, "site/#");
    await c.stop();
    const b = await edge(c.url); // the cloud is down
    const pub = await localClient(b);
    for (let i = 0; i < 500; i++) await pub.client.publishAsync("sensors/a", String(i), { qos: 1 });
    expect(link(b).status().state).not.toBe("connected");
    expect(link(b).status().backlogEntries).toBeGreaterThanOrEqual(500);
    await c.start();
    const sub = await resume();
    await sub.waitFor(500, 15_000);
    expect(sub.messages.map((m) => Number(m.payload))).toEqual([...Array(500).keys()]);
    await eventually(() => link(b).status().backlogEntries === 0, 5000, "backlog drained");
    expect(link(b).status().acknowledged).toBeGreaterThanOrEqual(500);
  });

  test("buffer.max_messages bounds the backlog: the oldest are skipped and counted", async () => {
    const c = await cloud({ persistent: true });
    await c.start();
    const resume = await persistentCloudSubscriber(c, "site/#");
    await c.stop();
    const b = await edge(c.url, { buffer: { max_messages: 50 } });
    const pub = await localClient(b);
    for (let i = 0; i < 200; i++) await pub.client.publishAsync("sensors/b", String(i), { qos: 1 });
    expect(link(b).status().droppedBuffer).toBe(150);
    await c.start();
    const sub = await resume();
    await sub.waitFor(50, 10_000);
    // All acknowledged by the cloud, so routed to the subscriber: nothing more is on its way.
    await eventually(() => link(b).status().backlogEntries === 0, 5000, "drained");
    await barrier(sub);
    expect(sub.messages.map((m) => Number(m.payload))).toEqual([...Array(50).keys()].map((i) => i + 150));
  });

  test("downlink: a cloud command arrives on the mapped local topic and is not forwarded back", async () => {
    const c = await cloud();
    await c.start();
    const b = await edge(c.url, {
      forward: [{ filter: "#", topic: "up/${topic}", qos: 1 }],
      downlink: [{ filter: "cmd/${edge_id}/#", topic: "cmd/${topic}", strip: "cmd/edge1/", qos: 1 }],
    });
    await eventually(() => link(b).state === "connected");
    const up = await cloudSubscriber(c, "up/#");
    const local = await localClient(b);
    await local.client.subscribeAsync("cmd/#", { qos: 1 });
    const cloudPub = await connect(c.url, { protocolVersion: 5 });
    kit.defer(() => cloudPub.end(true));
    await cloudPub.client.publishAsync("cmd/edge1/valve/open", "1", { qos: 1 });
    const [m] = await local.waitFor(1);
    expect(m!.topic).toBe("cmd/valve/open");
    expect(m!.payload).toBe("1");
    // The link forwards in log order: once a later local message is up, the command would be too.
    await local.client.publishAsync("marker", "", { qos: 1 });
    await up.waitFor(1);
    expect(up.messages.map((m) => m.topic)).toEqual(["up/marker"]); // the command did not loop back to the cloud
    expect(link(b).status().downlinkReceived).toBe(1);
  });

  test("status is published under $SYS/broker/uplink/<name>/", async () => {
    const c = await cloud();
    const b = await edge(c.url, {}, { mqtt: { sys_interval: 1 } });
    const local = await localClient(b);
    await local.client.subscribeAsync("$SYS/broker/uplink/cloud/#");
    await eventually(
      () => local.messages.some((m) => m.topic === "$SYS/broker/uplink/cloud/state"),
      5000,
      "$SYS state",
    );
    const state = local.messages.find((m) => m.topic === "$SYS/broker/uplink/cloud/state")!;
    expect(["connecting", "backoff"]).toContain(state.payload);
    const err = local.messages.find((m) => m.topic === "$SYS/broker/uplink/cloud/last_error");
    expect(err?.payload).toContain("connect");
  });
});
