/**
 * The uplink manager on a real kernel (memory store, manual clock) with a scripted cloud:
 * the log id is made once and kept with the log, and ferry-clock follows the clock probe
 * by the offset each message arrived at, also after a restart on the same store.
 */
import { describe, expect, test } from "bun:test";
import { brokerOptionsFrom, validateConfig } from "../../src/config/load.ts";
import { Broker } from "../../src/core/broker.ts";
import { silentLogger } from "../../src/core/logger.ts";
import { MemoryStore } from "../../src/store/memory-store.ts";
import type { ClockState } from "../../src/sync/cloud-properties.ts";
import { UplinkManager } from "../../src/sync/uplink-manager.ts";
import { FakeCloud } from "../helpers/fake-uplink.ts";
import { ManualClock, settle } from "../helpers/manual-clock.ts";

const config = validateConfig({
  edge_id: "edge1",
  uplinks: [{ name: "cloud", url: "mqtt://cloud:1883", forward: [{ filter: "sensors/#" }] }],
});

async function run(store: MemoryStore, clock: ManualClock, probe: { state: ClockState }) {
  const broker = new Broker({ options: brokerOptionsFrom(config, "test"), store, clock, logger: silentLogger });
  await broker.start();
  const cloud = new FakeCloud();
  const manager = new UplinkManager(broker, config.uplinks, {
    edgeId: "edge1",
    connect: cloud.connect,
    readFile: () => Promise.reject(new Error("none")),
    clockProbe: () => Promise.resolve(probe.state),
  });
  await manager.start();
  await settle();
  const publish = (payload: string) =>
    broker.injectMessage({
      offset: 0,
      topic: "sensors/t",
      payload: new TextEncoder().encode(payload),
      qos: 1,
      retain: false,
      receivedAt: clock.now(),
      origin: "dev",
    });
  const stop = async () => {
    await manager.stop();
    await broker.close();
  };
  return { cloud, publish, stop };
}

const user = (p: { properties?: { userProperties?: Record<string, string | string[]> } }) =>
  p.properties?.userProperties ?? {};

describe("uplink manager", () => {
  test("ferry-clock follows the probe by arrival offset; the log id and the marks survive a restart", async () => {
    const store = new MemoryStore();
    const clock = new ManualClock();
    const probe = { state: "unsynced" as ClockState };
    let edge = await run(store, clock, probe);
    await edge.publish("0");
    probe.state = "synced";
    await clock.advance(10_000); // the next probe sees it
    await edge.publish("1");
    await settle();
    let sent = edge.cloud.sent;
    expect(sent.map((p) => user(p)["ferry-clock"])).toEqual(["unsynced", "synced"]);
    const logId = user(sent[0]!)["ferry-log-id"];
    expect(typeof logId).toBe("string");
    // Acknowledge nothing: both are sent again after the restart, judged by when they arrived.
    await edge.stop();
    probe.state = "unknown";
    edge = await run(store, clock, probe);
    await edge.publish("2");
    await settle();
    sent = edge.cloud.sent;
    expect(sent.map((p) => [new TextDecoder().decode(p.payload), user(p)["ferry-clock"]])).toEqual([
      ["0", "unsynced"],
      ["1", "synced"],
      ["2", "unknown"],
    ]);
    expect(sent.every((p) => user(p)["ferry-log-id"] === logId)).toBe(true);
    await edge.stop();
  });
});
