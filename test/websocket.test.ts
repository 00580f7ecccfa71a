/**
 * MQTT over WebSocket (spec chapter 6) on a real listener: the `mqtt` client over
 * ws://…/mqtt, traffic across transports, the subprotocol handshake, framing that does
 * not line up with packets, and what other paths and text frames get.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import mqttPacket, { type Packet } from "mqtt-packet";
import { startBroker, type TestBroker } from "./helpers/broker.ts";
import { connect, eventually } from "./helpers/clients.ts";

let broker: TestBroker;
beforeAll(async () => {
  broker = await startBroker();
});
afterAll(() => broker.stop());

/** A bare WebSocket peer that decodes what the broker sends. */
async function rawWs(protocols: string[] = ["mqtt"], version: 4 | 5 = 4) {
  const ws = new WebSocket(broker.wsUrl, protocols);
  ws.binaryType = "arraybuffer";
  const packets: Packet[] = [];
  const parser = mqttPacket.parser({ protocolVersion: version });
  parser.on("packet", (p: Packet) => packets.push(p));
  let closed: { code: number } | undefined;
  ws.addEventListener("message", (e) => {
    if (e.data instanceof ArrayBuffer) parser.parse(Buffer.from(e.data));
  });
  ws.addEventListener("close", (e) => {
    closed = { code: e.code };
  });
  await new Promise<void>((resolve, reject) => {
    ws.addEventListener("open", () => resolve(), { once: true });
    ws.addEventListener("error", () => reject(new Error("websocket failed to open")), { once: true });
  });
  const until = (cond: () => boolean, what: string) => eventually(cond, 5000, what);
  return {
    ws,
    packets,
    closed: () => closed,
    until,
    send: (p: Packet) => ws.send(mqttPacket.generate(p, { protocolVersion: version })),
  };
}

for (const protocolVersion of [4, 5] as const) {
  const label = protocolVersion === 4 ? "3.1.1" : "5.0";
  describe(`MQTT ${label} over WebSocket`, () => {
    test("a client on ws://…/mqtt publishes and subscribes at QoS 0, 1 and 2", async () => {
      const sub = await connect(broker.wsUrl, { protocolVersion });
      const pub = await connect(broker.wsUrl, { protocolVersion });
      const topic = `ws/${protocolVersion}/both`;
      await sub.client.subscribeAsync(topic, { qos: 2 });
      for (const qos of [0, 1, 2] as const) await pub.client.publishAsync(topic, `ws q${qos}`, { qos });
      const got = await sub.waitFor(3);
      expect(got.map((m) => [m.payload, m.packet.qos])).toEqual([["ws q0", 0], ["ws q1", 1], ["ws q2", 2]]);
      await Promise.all([sub.end(), pub.end()]);
    });

    test("a WebSocket publisher reaches a TCP subscriber, and a TCP publisher a WebSocket subscriber", async () => {
      const tcpSub = await connect(broker.url, { protocolVersion });
      const wsSub = await connect(broker.wsUrl, { protocolVersion });
      const tcpPub = await connect(broker.url, { protocolVersion });
      const wsPub = await connect(broker.wsUrl, { protocolVersion });
      const base = `xport/${protocolVersion}`;
      await tcpSub.client.subscribeAsync(`${base}/from-ws`, { qos: 1 });
      await wsSub.client.subscribeAsync(`${base}/from-tcp`, { qos: 1 });
      // A payload larger than one TCP segment and than small WebSocket frames.
      const big = "w".repeat(100_000);
      await wsPub.client.publishAsync(`${base}/from-ws`, big, { qos: 1 });
      await tcpPub.client.publishAsync(`${base}/from-tcp`, "tcp to ws", { qos: 1 });
      const [a] = await tcpSub.waitFor(1);
      const [b] = await wsSub.waitFor(1);
      expect(a!.payload).toBe(big);
      expect(b!.payload).toBe("tcp to ws");
      await Promise.all([tcpSub.end(), wsSub.end(), tcpPub.end(), wsPub.end()]);
    });

    test("a retained message published over TCP is sent to a later WebSocket subscriber [MQTT-3.3.1-9]", async () => {
      const pub = await connect(broker.url, { protocolVersion });
      const topic = `ws/${protocolVersion}/retained`;
      await pub.client.publishAsync(topic, "kept", { qos: 1, retain: true });
      const sub = await connect(broker.wsUrl, { protocolVersion });
      await sub.client.subscribeAsync(topic);
      const [m] = await sub.waitFor(1);
      expect(m!.payload).toBe("kept");
      expect(m!.packet.retain).toBe(true);
      await pub.client.publishAsync(topic, "", { qos: 1, retain: true });
      await Promise.all([sub.end(), pub.end()]);
    });
  });
}

describe("WebSocket handshake and framing", () => {
  test("the server selects the 'mqtt' subprotocol the client offers [MQTT-6.0.0-4]", async () => {
    const c = await rawWs(["mqtt"]);
    expect(c.ws.protocol).toBe("mqtt");
    c.send({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clientId: "ws-raw", clean: true, keepalive: 30 });
    await c.until(() => c.packets.some((p) => p.cmd === "connack"), "CONNACK");
    expect(c.packets[0]).toMatchObject({ cmd: "connack", returnCode: 0 });
    c.ws.close();
  });

  test("packets split across frames, and several in one frame, are reassembled [MQTT-6.0.0-2]", async () => {
    const c = await rawWs(["mqtt"]);
    const connectBytes = mqttPacket.generate({
      cmd: "connect",
      protocolId: "MQTT",
      protocolVersion: 4,
      clientId: "ws-split",
      clean: true,
      keepalive: 30,
    });
    const subscribeBytes = mqttPacket.generate({
      cmd: "subscribe",
      messageId: 7,
      subscriptions: [{ topic: "ws/split", qos: 1 }],
    });
    const pingBytes = mqttPacket.generate({ cmd: "pingreq" });
    // Frame 1: the first 5 bytes of CONNECT. Frame 2: the rest of CONNECT, SUBSCRIBE, and half a PINGREQ.
    const stream = Buffer.concat([connectBytes, subscribeBytes, pingBytes]);
    const cut = connectBytes.length + subscribeBytes.length + 1;
    c.ws.send(stream.subarray(0, 5));
    c.ws.send(stream.subarray(5, cut));
    c.ws.send(stream.subarray(cut)); // frame 3: the other half of PINGREQ
    await c.until(() => c.packets.some((p) => p.cmd === "pingresp"), "PINGRESP");
    expect(c.packets.map((p) => p.cmd)).toEqual(["connack", "suback", "pingresp"]);
    expect(c.packets[1]).toMatchObject({ messageId: 7, granted: [1] });
    c.ws.close();
  });

  test("a text frame is not MQTT: the connection is closed [MQTT-6.0.0-1]", async () => {
    const c = await rawWs(["mqtt"]);
    c.send({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clientId: "ws-text", clean: true, keepalive: 30 });
    await c.until(() => c.packets.some((p) => p.cmd === "connack"), "CONNACK");
    c.ws.send("hello, I am text");
    await c.until(() => c.closed() !== undefined, "the close");
    expect(c.closed()!.code).toBe(1003);
    // The session went with it: the broker no longer counts the client as connected.
    const core = broker.server.broker;
    await c.until(() => core.sessions.get("ws-text")?.client === undefined, "the broker to drop the client");
  });

  test("garbage over WebSocket closes that connection only, like over TCP", async () => {
    const good = await connect(broker.wsUrl);
    const c = await rawWs(["mqtt"]);
    c.ws.send(new Uint8Array([0x00, 0x00]));
    await c.until(() => c.closed() !== undefined, "the close");
    expect(c.packets).toEqual([]);
    await good.client.subscribeAsync("ws/after-garbage");
    await good.client.publishAsync("ws/after-garbage", "fine");
    const [m] = await good.waitFor(1);
    expect(m!.payload).toBe("fine");
    await good.end();
  });

  test("a path other than /mqtt gets 404, and a WebSocket upgrade there is refused", async () => {
    const res = await fetch(`http://127.0.0.1:${broker.wsPort}/not-mqtt`);
    expect(res.status).toBe(404);
    await res.body?.cancel();
    const rootRes = await fetch(`http://127.0.0.1:${broker.wsPort}/`);
    expect(rootRes.status).toBe(404);
    await rootRes.body?.cancel();

    const ws = new WebSocket(`ws://127.0.0.1:${broker.wsPort}/other`, ["mqtt"]);
    const outcome = await new Promise<string>((resolve) => {
      ws.addEventListener("open", () => resolve("open"));
      ws.addEventListener("error", () => resolve("error"));
      ws.addEventListener("close", () => resolve("close"));
    });
    expect(outcome).not.toBe("open");
  });

  test("a plain HTTP request to /mqtt without an upgrade is answered, not hung", async () => {
    const res = await fetch(`http://127.0.0.1:${broker.wsPort}/mqtt`);
    expect(res.status).toBe(426);
    await res.body?.cancel();
  });
});
