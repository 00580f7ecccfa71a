import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startBroker, type TestBroker } from "./helpers/broker.ts";
import { inProcessBroker } from "./helpers/in-process-broker.ts";
import type { MemoryClient } from "./helpers/memory-client.ts";
import { barrier, connect } from "./helpers/clients.ts";
import { RawClient } from "./helpers/raw-client.ts";

let broker: TestBroker;
beforeAll(async () => {
  broker = await startBroker({ mqtt: { max_packet_size: 4096 } });
});
afterAll(() => broker.stop());

const v5 = { protocolVersion: 5 } as const;

describe("MQTT 5 message properties", () => {
  test("payload format, content type, response topic, correlation data and user properties pass through unaltered [MQTT-3.3.2-4] [MQTT-3.3.2-15..17] [MQTT-3.3.2-20]", async () => {
    const sub = await connect(broker.url, v5);
    const pub = await connect(broker.url, v5);
    await sub.client.subscribeAsync("props/x", { qos: 1 });
    await pub.client.publishAsync("props/x", "{}", {
      qos: 1,
      properties: {
        payloadFormatIndicator: true,
        contentType: "application/json",
        responseTopic: "props/reply",
        correlationData: Buffer.from([1, 2, 3, 0, 255]),
        userProperties: { a: "1", b: ["x", "y"] },
      },
    });
    const [m] = await sub.waitFor(1);
    const p = m!.packet.properties!;
    expect(p.payloadFormatIndicator).toBe(true);
    expect(p.contentType).toBe("application/json");
    expect(p.responseTopic).toBe("props/reply");
    expect([...p.correlationData!]).toEqual([1, 2, 3, 0, 255]);
    expect(p.userProperties).toEqual({ a: "1", b: ["x", "y"] });
    await Promise.all([sub.end(), pub.end()]);
  });

  // The expiry tests run on a manual clock (helpers/in-process-broker.ts): time passes without sleeping.
  test("message expiry interval is decremented by the time the message waited [MQTT-3.3.2-6]", async () => {
    const b = await inProcessBroker({ mqtt: { max_packet_size: 4096 } });
    const pub = await b.connected(5);
    pub.send({
      cmd: "publish",
      topic: "exp/retained",
      payload: Buffer.from("r"),
      qos: 1,
      messageId: 1,
      retain: true,
      dup: false,
      properties: { messageExpiryInterval: 60 },
    });
    await pub.next("puback");
    await b.advance(2100);
    const sub = await b.subscriber("exp/retained", 1);
    const m = await sub.next("publish");
    const left = m.properties!.messageExpiryInterval!;
    expect(left).toBeLessThanOrEqual(58);
    expect(left).toBeGreaterThan(50);
    await b.stop();
  });

  test("an expired message is not delivered to an offline session or as retained [MQTT-3.3.2-5]", async () => {
    const b = await inProcessBroker({ mqtt: { max_packet_size: 4096 } });
    const session = { clientId: "exp-offline", clean: false, properties: { sessionExpiryInterval: 60 } };
    const sub = await b.connected(5, session);
    sub.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "exp/off", qos: 1 }] });
    await sub.next("suback");
    sub.send({ cmd: "disconnect" });
    await sub.waitClosed();
    const pub = await b.connected(5);
    const publish = (payload: string, id: number, retain: boolean, expiry: number) =>
      pub.send({
        cmd: "publish",
        topic: "exp/off",
        payload: Buffer.from(payload),
        qos: 1,
        messageId: id,
        retain,
        dup: false,
        properties: { messageExpiryInterval: expiry },
      });
    publish("dies", 1, true, 1);
    publish("lives", 2, false, 100);
    await pub.next("puback");
    await pub.next("puback");
    await b.advance(1200);
    const back = await b.connected(5, session);
    const first = await back.next("publish");
    const late = await b.subscriber("exp/off", 1);
    await b.advance(200);
    const payloads = (c: MemoryClient) => c.packets.filter((p) => p.cmd === "publish").map((p) => p.payload.toString());
    expect([first.payload.toString(), ...payloads(back)]).toEqual(["lives"]);
    expect(payloads(late)).toHaveLength(0);
    await b.stop();
  });
});

describe("MQTT 5 subscription options", () => {
  test("No Local keeps a client's own messages from coming back [MQTT-3.8.3-3]", async () => {
    const c = await connect(broker.url, v5);
    const other = await connect(broker.url, v5);
    await c.client.subscribeAsync("nl/t", { qos: 0, nl: true });
    await c.client.publishAsync("nl/t", "own");
    await other.client.publishAsync("nl/t", "other");
    await c.waitFor(1);
    await barrier(c, other);
    expect(c.messages.map((m) => m.payload)).toEqual(["other"]);
    await Promise.all([c.end(), other.end()]);
  });

  test("a subscription identifier is sent with each matching message [MQTT-3.3.4-3]", async () => {
    const sub = await connect(broker.url, v5);
    const pub = await connect(broker.url, v5);
    await sub.client.subscribeAsync("sid/a", { qos: 1, properties: { subscriptionIdentifier: 42 } });
    await pub.client.publishAsync("sid/a", "x", { qos: 1 });
    const [m] = await sub.waitFor(1);
    expect(m!.packet.properties!.subscriptionIdentifier).toBe(42);
    await Promise.all([sub.end(), pub.end()]);
  });

  test("overlapping subscriptions give one delivery at the highest QoS with both identifiers [MQTT-3.3.4-4]", async () => {
    const sub = await connect(broker.url, v5);
    const pub = await connect(broker.url, v5);
    await sub.client.subscribeAsync("ovl/+", { qos: 0, properties: { subscriptionIdentifier: 1 } });
    await sub.client.subscribeAsync("ovl/#", { qos: 1, properties: { subscriptionIdentifier: 2 } });
    await pub.client.publishAsync("ovl/x", "once", { qos: 1 });
    await sub.waitFor(1);
    await barrier(sub);
    expect(sub.messages).toHaveLength(1);
    expect(sub.messages[0]!.packet.qos).toBe(1);
    const ids = sub.messages[0]!.packet.properties!.subscriptionIdentifier;
    expect([ids].flat().sort()).toEqual([1, 2]);
    await Promise.all([sub.end(), pub.end()]);
  });

  test("a repeated subscription replaces the old one, keeping one delivery [MQTT-3.8.4-3]", async () => {
    const sub = await connect(broker.url, v5);
    const pub = await connect(broker.url, v5);
    await sub.client.subscribeAsync("rep/t", { qos: 0 });
    await sub.client.subscribeAsync("rep/t", { qos: 1 });
    await pub.client.publishAsync("rep/t", "x", { qos: 1 });
    await sub.waitFor(1);
    await barrier(sub);
    expect(sub.messages).toHaveLength(1);
    expect(sub.messages[0]!.packet.qos).toBe(1);
    await Promise.all([sub.end(), pub.end()]);
  });
});

describe("MQTT 5 topic aliases", () => {
  test("a client may publish with a topic alias and then an empty topic [MQTT-3.3.2-12]", async () => {
    const sub = await connect(broker.url, v5);
    await sub.client.subscribeAsync("alias/in", { qos: 1 });
    const raw = await RawClient.connected(broker.port, 5);
    raw.send({
      cmd: "publish",
      topic: "alias/in",
      payload: Buffer.from("1"),
      qos: 0,
      retain: false,
      dup: false,
      properties: { topicAlias: 3 },
    });
    raw.send({
      cmd: "publish",
      topic: "",
      payload: Buffer.from("2"),
      qos: 0,
      retain: false,
      dup: false,
      properties: { topicAlias: 3 },
    });
    await sub.waitFor(2);
    expect(sub.messages.map((m) => `${m.topic}=${m.payload}`)).toEqual(["alias/in=1", "alias/in=2"]);
    raw.close();
    await sub.end();
  });

  test("Ferry uses outbound aliases when the client allows them, sending the topic only the first time", async () => {
    const raw = await RawClient.connected(broker.port, 5, { properties: { topicAliasMaximum: 5 } });
    raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "alias/out", qos: 0 }] });
    await raw.next("suback");
    const pub = await connect(broker.url, v5);
    await pub.client.publishAsync("alias/out", "a");
    await pub.client.publishAsync("alias/out", "b");
    const first = await raw.next("publish");
    const second = await raw.next("publish");
    expect(first.topic).toBe("alias/out");
    expect(first.properties?.topicAlias).toBeGreaterThan(0);
    expect(second.topic).toBe("");
    expect(second.properties?.topicAlias).toBe(first.properties!.topicAlias!);
    raw.close();
    await pub.end();
  });

  test("no outbound aliases for a client that announced none [MQTT-3.3.2-10]", async () => {
    const raw = await RawClient.connected(broker.port, 5);
    raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "alias/none", qos: 0 }] });
    await raw.next("suback");
    const pub = await connect(broker.url, v5);
    await pub.client.publishAsync("alias/none", "a");
    await pub.client.publishAsync("alias/none", "b");
    for (let i = 0; i < 2; i++) {
      const p = await raw.next("publish");
      expect(p.topic).toBe("alias/none");
      expect(p.properties?.topicAlias).toBeUndefined();
    }
    raw.close();
    await pub.end();
  });
});

describe("maximum packet size", () => {
  test("Ferry drops a message larger than the client's Maximum Packet Size and delivers the next [MQTT-3.1.2-24]", async () => {
    const raw = await RawClient.connected(broker.port, 5, { properties: { maximumPacketSize: 200 } });
    raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "mps/t", qos: 1 }] });
    await raw.next("suback");
    const pub = await connect(broker.url, v5);
    await pub.client.publishAsync("mps/t", "x".repeat(500), { qos: 1 });
    await pub.client.publishAsync("mps/t", "small", { qos: 1 });
    const p = await raw.next("publish");
    expect(p.payload.toString()).toBe("small");
    expect(broker.server.broker.metrics.droppedTooLarge).toBeGreaterThan(0);
    raw.close();
    await pub.end();
  });

  test("a packet over Ferry's maximum is refused with DISCONNECT 0x95", async () => {
    const raw = await RawClient.connected(broker.port, 5);
    raw.send({ cmd: "publish", topic: "mps/big", payload: Buffer.alloc(8000), qos: 0, retain: false, dup: false });
    const d = await raw.next("disconnect");
    expect(d.reasonCode).toBe(0x95);
    await raw.waitClosed();
  });
});

describe("request problem information", () => {
  test("with Request Problem Information 0, acks carry no reason string [MQTT-3.1.2-29]", async () => {
    const strict = await startBroker({
      acl: { rules: [{ action: "publish", topic: "rpi/denied", permission: "deny" }] },
    });
    try {
      const quiet = await RawClient.connected(strict.port, 5, { properties: { requestProblemInformation: false } });
      quiet.send({
        cmd: "publish",
        topic: "rpi/denied",
        payload: Buffer.from("x"),
        qos: 1,
        messageId: 7,
        retain: false,
        dup: false,
      });
      const ack = await quiet.next("puback");
      expect(ack.reasonCode).toBe(0x87);
      expect(ack.properties?.reasonString).toBeUndefined();
      quiet.close();
    } finally {
      await strict.stop();
    }
  });
});
