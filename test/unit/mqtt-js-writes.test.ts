/**
 * The uplink's changes to MQTT.js (src/sync/mqtt-js-writes.ts) against the installed
 * version, over a real socket to a minimal cloud: they still apply (an upgrade that renames
 * what they replace fails here), the bytes on the wire are the same packets, a tick's
 * PUBLISHes go in one write, and nothing is copied into the outgoing store.
 */
import { afterEach, describe, expect, test } from "bun:test";
import mqtt, { type MqttClient } from "mqtt";
import mqttPacket, { type Packet } from "mqtt-packet";
import net from "node:net";
import { nonRetainingStore, writeWholePackets } from "../../src/sync/mqtt-js-writes.ts";

/** A cloud that answers CONNECT and each QoS 1 PUBLISH, and keeps what it parsed. */
function fakeCloud(
  version: 4 | 5,
): Promise<{ port: number; packets: Packet[]; arrived(cmd: string): Promise<void>; close(): void }> {
  const packets: Packet[] = [];
  const waiting: Array<{ cmd: string; resolve: () => void }> = [];
  const connack =
    (version === 5
      ? { cmd: "connack", reasonCode: 0, sessionPresent: false }
      : { cmd: "connack", returnCode: 0, sessionPresent: false }) as Packet;
  const server = net.createServer((socket) => {
    const parser = mqttPacket.parser({ protocolVersion: version });
    parser.on("packet", (p: Packet) => {
      packets.push(p);
      for (const w of waiting.filter((w) => w.cmd === p.cmd)) w.resolve();
      if (p.cmd === "connect") socket.write(mqttPacket.generate(connack, { protocolVersion: version }));
      if (p.cmd === "publish" && p.qos === 1) {
        socket.write(mqttPacket.generate({ cmd: "puback", messageId: p.messageId! }, { protocolVersion: version }));
      }
    });
    socket.on("data", (d: Buffer) => parser.parse(d));
    socket.on("error", () => {});
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () =>
      resolve({
        port: (server.address() as net.AddressInfo).port,
        packets,
        arrived: (cmd) =>
          packets.some((p) => p.cmd === cmd)
            ? Promise.resolve()
            : new Promise<void>((resolve) => waiting.push({ cmd, resolve })),
        close: () => server.close(),
      }))
  );
}

let cleanup: Array<() => void> = [];
afterEach(() => {
  for (const f of cleanup) f();
  cleanup = [];
});

async function connected(version: 4 | 5, port: number, store?: unknown): Promise<MqttClient> {
  const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, {
    protocolVersion: version,
    reconnectPeriod: 0,
    ...(store ? { outgoingStore: store as mqtt.Store } : {}),
  });
  cleanup.push(() => client.end(true));
  expect(writeWholePackets(client, version)).toBe(true);
  await new Promise<void>((resolve, reject) => {
    client.once("connect", () => resolve());
    client.once("error", reject);
  });
  return client;
}

describe("MQTT.js as the uplink drives it", () => {
  for (const version of [4, 5] as const) {
    test(`v${version}: the PUBLISHes of one tick go in one write, as the same packets, each acknowledged`, async () => {
      const cloud = await fakeCloud(version);
      cleanup.push(cloud.close);
      const client = await connected(version, cloud.port);
      const stream = (client as unknown as { stream: { write: (b: Uint8Array) => boolean } }).stream;
      const writes: number[] = [];
      const write = stream.write.bind(stream);
      stream.write = (b: Uint8Array) => {
        writes.push(b.byteLength);
        return write(b);
      };
      const acked = await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          new Promise<number>((resolve, reject) =>
            client.publish(
              `t/${i}`,
              Buffer.from(`m${i}`),
              {
                qos: 1,
                ...(version === 5 ? { properties: { userProperties: { "ferry-offset": String(i) } } } : {}),
              },
              (err) => (err ? reject(err) : resolve(i)),
            )
          )),
      );
      expect(acked.length).toBe(50);
      expect(writes.length).toBe(1);
      const published = cloud.packets.filter((p) => p.cmd === "publish") as mqttPacket.IPublishPacket[];
      expect(published.map((p) => [p.topic, String(p.payload)])).toEqual(
        Array.from({ length: 50 }, (_, i) => [`t/${i}`, `m${i}`]),
      );
      if (version === 5) expect(published[7]!.properties?.userProperties).toEqual({ "ferry-offset": "7" });
    });
  }

  test("the outgoing store keeps no copy of a PUBLISH in flight, and acks still complete", async () => {
    const cloud = await fakeCloud(4);
    cleanup.push(cloud.close);
    const store = nonRetainingStore(new mqtt.Store());
    const client = await connected(4, cloud.port, store);
    const done = client.publishAsync("t", "x", { qos: 1 });
    expect((store as unknown as { _inflights: Map<number, unknown> })._inflights.size).toBe(0);
    await done;
  });

  test("a DISCONNECT right after PUBLISHes in the same tick follows them on the wire", async () => {
    const cloud = await fakeCloud(4);
    cleanup.push(cloud.close);
    const client = await connected(4, cloud.port);
    for (let i = 0; i < 5; i++) client.publish(`t/${i}`, "x", { qos: 0 });
    await client.endAsync();
    await cloud.arrived("disconnect");
    expect(cloud.packets.map((p) => p.cmd)).toEqual(["connect", ...Array(5).fill("publish"), "disconnect"]);
  });
});
