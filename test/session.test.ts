import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { IPublishPacket } from "mqtt-packet";
import { startBroker, type TestBroker } from "./helpers/broker.ts";
import { inProcessBroker } from "./helpers/in-process-broker.ts";
import type { MemoryClient } from "./helpers/memory-client.ts";
import { barrier, connect, eventually } from "./helpers/clients.ts";
import { RawClient } from "./helpers/raw-client.ts";

// Longer than the helpers' 5 s waits, so a missing message fails with their message, not a timeout.
setDefaultTimeout(15_000);

let broker: TestBroker;
beforeAll(async () => {
  broker = await startBroker();
});
afterAll(() => broker.stop());

/** Connection options for a session that outlives its connection. */
function persistent(version: 4 | 5, clientId: string) {
  return version === 5
    ? { clientId, clean: false, properties: { sessionExpiryInterval: 300 } }
    : { clientId, clean: false };
}

/** Subscribe a raw client and wait for its SUBACK. */
async function rawSubscribe(
  c: RawClient | MemoryClient,
  version: 4 | 5,
  topic: string,
  qos: 0 | 1 | 2,
  messageId = 1,
): Promise<void> {
  c.send({ cmd: "subscribe", messageId, subscriptions: [{ topic, qos }] }, version);
  const ack = await c.next("suback");
  expect(ack.granted).toEqual([qos]);
}

/** Collect `n` PUBLISH packets from a raw client, in arrival order. */
async function rawPublishes(c: RawClient, n: number, ms = 3000): Promise<IPublishPacket[]> {
  const out: IPublishPacket[] = [];
  for (let i = 0; i < n; i++) out.push(await c.next("publish", ms));
  return out;
}

/** Wait until the broker has seen `clientId`'s connection go, so its session is offline. */
function offline(b: TestBroker, clientId: string): Promise<void> {
  return eventually(() => b.server.broker.sessions.get(clientId)?.client === undefined, 3000, `${clientId} offline`);
}

async function rawDisconnect(c: RawClient | MemoryClient, version: 4 | 5): Promise<void> {
  c.send({ cmd: "disconnect" }, version);
  await c.waitClosed();
}

for (const version of [4, 5] as const) {
  const label = version === 4 ? "3.1.1 clean session 0" : "v5 session expiry";
  describe(`persistent sessions (${label})`, () => {
    test("QoS 1 and QoS 2 messages published while offline are delivered on reconnect", async () => {
      const id = `offline-${version}`;
      const topic = `offline/${version}`;
      const sub = await connect(broker.url, { protocolVersion: version, ...persistent(version, id) });
      await sub.client.subscribeAsync(topic, { qos: 2 });
      await sub.end();
      await offline(broker, id);

      const pub = await connect(broker.url, { protocolVersion: version });
      await pub.client.publishAsync(topic, "one", { qos: 1 });
      await pub.client.publishAsync(topic, "two", { qos: 2 });
      await pub.client.publishAsync(topic, "zero", { qos: 0 }); // QoS 0 is not queued offline by default
      await pub.end();

      const back = await connect(broker.url, { protocolVersion: version, ...persistent(version, id) });
      expect(back.client.connected).toBe(true);
      await back.waitFor(2);
      await barrier(back);
      expect(back.messages.map((m) => [m.payload, m.packet.qos])).toEqual([["one", 1], ["two", 2]]);
      await back.end();
    });

    test("an unacknowledged QoS 1 message is re-sent with DUP and the same packet id after reconnect [MQTT-4.4.0-1]", async () => {
      const id = `dup-${version}`;
      const topic = `dup/${version}`;
      const raw = await RawClient.connected(broker.port, version, persistent(version, id));
      await rawSubscribe(raw, version, topic, 1);
      const pub = await connect(broker.url, { protocolVersion: version });
      await pub.client.publishAsync(topic, "unacked", { qos: 1 });
      const first = await raw.next("publish");
      expect(first.dup).toBe(false);
      raw.close(); // no PUBACK

      const again = await RawClient.connected(broker.port, version, persistent(version, id));
      const resent = await again.next("publish");
      expect(resent.dup).toBe(true);
      expect(resent.messageId).toBe(first.messageId!);
      expect(resent.qos).toBe(1);
      expect(String(resent.payload)).toBe("unacked");
      again.send({ cmd: "puback", messageId: resent.messageId! }, version);
      await rawDisconnect(again, version);

      // Acknowledged now: a third connection gets nothing.
      const third = await RawClient.connected(broker.port, version, persistent(version, id));
      await third.roundTrip();
      expect(third.packets.filter((p) => p.cmd === "publish")).toHaveLength(0);
      third.close();
      await pub.end();
    });

    test("QoS 2: PUBREL is re-sent after reconnect when PUBREC was sent but PUBCOMP not received [MQTT-4.4.0-1]", async () => {
      const id = `pubrel-${version}`;
      const topic = `pubrel/${version}`;
      const raw = await RawClient.connected(broker.port, version, persistent(version, id));
      await rawSubscribe(raw, version, topic, 2);
      const pub = await connect(broker.url, { protocolVersion: version });
      await pub.client.publishAsync(topic, "exactly once", { qos: 2 });
      const p = await raw.next("publish");
      expect(p.qos).toBe(2);
      raw.send({ cmd: "pubrec", messageId: p.messageId! }, version);
      const rel = await raw.next("pubrel");
      expect(rel.messageId).toBe(p.messageId!);
      raw.close(); // no PUBCOMP

      const again = await RawClient.connected(broker.port, version, persistent(version, id));
      const rel2 = await again.next("pubrel");
      expect(rel2.messageId).toBe(p.messageId!);
      // The message itself is not sent again once PUBREC was received [MQTT-4.4.0-1].
      expect(again.packets.filter((x) => x.cmd === "publish")).toHaveLength(0);
      again.send({ cmd: "pubcomp", messageId: p.messageId! }, version);
      await rawDisconnect(again, version);

      const third = await RawClient.connected(broker.port, version, persistent(version, id));
      await third.roundTrip();
      expect(third.packets.filter((x) => x.cmd === "pubrel" || x.cmd === "publish")).toHaveLength(0);
      third.close();
      await pub.end();
    });

    test("Clean Start discards the session: subscriptions and queued messages are gone [MQTT-3.1.2-4]", async () => {
      const id = `discard-${version}`;
      const topic = `discard/${version}`;
      const sub = await connect(broker.url, { protocolVersion: version, ...persistent(version, id) });
      await sub.client.subscribeAsync(topic, { qos: 1 });
      await sub.end();
      await offline(broker, id);
      const pub = await connect(broker.url, { protocolVersion: version });
      await pub.client.publishAsync(topic, "queued", { qos: 1 });
      expect(broker.server.broker.sessions.get(id)?.queuedCount).toBe(1);

      const fresh = await connect(broker.url, { protocolVersion: version, clientId: id, clean: true });
      await pub.client.publishAsync(topic, "after", { qos: 1 });
      await barrier(pub, fresh);
      expect(fresh.messages).toHaveLength(0);
      await fresh.end();
      await pub.end();
    });
  });
}

describe("takeover and resumption", () => {
  test("a takeover with Clean Start 0 resumes the session: Session Present 1 and subscriptions kept [MQTT-3.1.4-3]", async () => {
    const id = "takeover-resume";
    const opts = { clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } };
    const old = await RawClient.connected(broker.port, 5, opts);
    await rawSubscribe(old, 5, "takeover/resume", 1);
    const neu = await RawClient.open(broker.port, 5);
    neu.send({ cmd: "connect", protocolId: "MQTT", protocolVersion: 5, keepalive: 60, ...opts });
    const ack = await neu.next("connack");
    expect(ack.reasonCode).toBe(0);
    expect(ack.sessionPresent).toBe(true);
    expect((await old.next("disconnect")).reasonCode).toBe(0x8e);
    const pub = await connect(broker.url, { protocolVersion: 5 });
    await pub.client.publishAsync("takeover/resume", "to the new connection", { qos: 1 });
    const m = await neu.next("publish");
    expect(String(m.payload)).toBe("to the new connection");
    neu.send({ cmd: "puback", messageId: m.messageId! });
    neu.send({ cmd: "disconnect", reasonCode: 0, properties: { sessionExpiryInterval: 0 } });
    await neu.waitClosed();
    await pub.end();
  });

  test("messages in flight at disconnect are re-sent within the new connection's Receive Maximum [MQTT-3.3.4-9]", async () => {
    const id = "resume-window";
    const opts = { clientId: id, clean: false };
    const first = await RawClient.connected(broker.port, 5, {
      ...opts,
      properties: { sessionExpiryInterval: 60, receiveMaximum: 3 },
    });
    await rawSubscribe(first, 5, "resume/window", 1);
    const pub = await connect(broker.url, { protocolVersion: 5 });
    for (let i = 0; i < 3; i++) await pub.client.publishAsync("resume/window", String(i), { qos: 1 });
    await rawPublishes(first, 3);
    first.close(); // three unacknowledged

    const again = await RawClient.connected(broker.port, 5, {
      ...opts,
      properties: { sessionExpiryInterval: 60, receiveMaximum: 1 },
    });
    const one = await again.next("publish");
    await again.roundTrip();
    expect(again.packets.filter((p) => p.cmd === "publish")).toHaveLength(0);
    const seen = [one];
    for (let i = 1; i < 3; i++) {
      again.send({ cmd: "puback", messageId: seen[i - 1]!.messageId! });
      seen.push(await again.next("publish"));
    }
    expect(seen.map((p) => String(p.payload))).toEqual(["0", "1", "2"]);
    again.send({ cmd: "puback", messageId: seen[2]!.messageId! });
    again.send({ cmd: "disconnect", reasonCode: 0, properties: { sessionExpiryInterval: 0 } });
    await again.waitClosed();
    await pub.end();
  });
});

describe("session expiry", () => {
  test("a v5 session with Session Expiry Interval 1 s is gone after it passes [MQTT-3.1.2-23]", async () => {
    // On a manual clock (helpers/in-process-broker.ts): the interval passes without sleeping.
    const b = await inProcessBroker();
    const id = "expires-1s";
    const c = await b.connected(5, {
      clientId: id,
      clean: false,
      properties: { sessionExpiryInterval: 1 },
    });
    await rawSubscribe(c, 5, "expiry/topic", 1);
    await rawDisconnect(c, 5);
    await b.advance(900);
    expect(b.broker.sessions.has(id)).toBe(true); // kept while the interval runs
    await b.advance(100);
    expect(b.broker.sessions.has(id)).toBe(false);

    const again = b.open(5);
    again.send({ cmd: "connect", protocolId: "MQTT", protocolVersion: 5, clientId: id, clean: false, keepalive: 60 });
    const ack = await again.next("connack");
    expect(ack.reasonCode).toBe(0);
    expect(ack.sessionPresent).toBe(false);
    again.close();
    await b.stop();
  });

  test("a v5 session with Session Expiry Interval 0 ends with the connection [MQTT-3.1.2-23]", async () => {
    const id = "expires-0";
    const c = await RawClient.connected(broker.port, 5, { clientId: id, clean: false });
    await rawDisconnect(c, 5);
    await eventually(() => !broker.server.broker.sessions.has(id), 2000, "session end");
    const again = await RawClient.open(broker.port, 5);
    again.send({ cmd: "connect", protocolId: "MQTT", protocolVersion: 5, clientId: id, clean: false, keepalive: 60 });
    expect((await again.next("connack")).sessionPresent).toBe(false);
    again.close();
  });

  test("DISCONNECT may not set a Session Expiry Interval when CONNECT had 0: DISCONNECT 0x82 (spec 3.14.2.2.2)", async () => {
    const id = "expiry-zero-to-ten";
    const c = await RawClient.connected(broker.port, 5, { clientId: id });
    c.send({ cmd: "disconnect", reasonCode: 0, properties: { sessionExpiryInterval: 10 } });
    const d = await c.next("disconnect");
    expect(d.reasonCode).toBe(0x82);
    await c.waitClosed();
    await eventually(() => !broker.server.broker.sessions.has(id), 2000, "session end");
  });

  test("DISCONNECT may shorten a non-zero Session Expiry Interval to 0, ending the session", async () => {
    const id = "expiry-ten-to-zero";
    const c = await RawClient.connected(broker.port, 5, { clientId: id, properties: { sessionExpiryInterval: 10 } });
    c.send({ cmd: "disconnect", reasonCode: 0, properties: { sessionExpiryInterval: 0 } });
    await c.waitClosed();
    expect(c.packets.filter((p) => p.cmd === "disconnect")).toHaveLength(0);
    await eventually(() => !broker.server.broker.sessions.has(id), 2000, "session end");
  });
});

describe("queue limits", () => {
  test("the offline queue holds at most mqtt.max_queued_messages; the overflow is dropped and counted", async () => {
    const b = await startBroker({ mqtt: { max_queued_messages: 3 } });
    try {
      const id = "bounded";
      const sub = await connect(b.url, { protocolVersion: 5, ...persistent(5, id) });
      await sub.client.subscribeAsync("bounded/q", { qos: 1 });
      await sub.end();
      await offline(b, id);
      const pub = await connect(b.url, { protocolVersion: 5 });
      for (let i = 0; i < 5; i++) await pub.client.publishAsync("bounded/q", String(i), { qos: 1 });
      await pub.end();
      expect(b.server.broker.metrics.droppedQueueFull).toBe(2);

      const back = await connect(b.url, { protocolVersion: 5, ...persistent(5, id) });
      await back.waitFor(3);
      await barrier(back);
      expect(back.messages.map((m) => m.payload)).toEqual(["0", "1", "2"]);
      await back.end();
    } finally {
      await b.stop();
    }
  });

  test("with a client Receive Maximum of 2 at most 2 QoS 1 messages are in flight; the rest follow acks [MQTT-3.3.4-9]", async () => {
    const raw = await RawClient.connected(broker.port, 5, {
      clientId: "recv-max-2",
      properties: { receiveMaximum: 2 },
    });
    await rawSubscribe(raw, 5, "recvmax/t", 1);
    const pub = await connect(broker.url, { protocolVersion: 5 });
    for (let i = 0; i < 5; i++) await pub.client.publishAsync("recvmax/t", String(i), { qos: 1 });

    const firstTwo = await rawPublishes(raw, 2);
    await raw.roundTrip();
    expect(raw.packets.filter((p) => p.cmd === "publish")).toHaveLength(0); // window full
    expect(firstTwo.map((p) => String(p.payload))).toEqual(["0", "1"]);

    const seen = firstTwo.slice();
    for (let i = 2; i < 5; i++) {
      raw.send({ cmd: "puback", messageId: seen[i - 2]!.messageId! });
      const next = await raw.next("publish");
      seen.push(next);
      await raw.roundTrip();
      // Each ack frees exactly one slot.
      expect(raw.packets.filter((p) => p.cmd === "publish")).toHaveLength(0);
    }
    expect(seen.map((p) => String(p.payload))).toEqual(["0", "1", "2", "3", "4"]);
    raw.close();
    await pub.end();
  });

  test("a client exceeding Ferry's Receive Maximum gets DISCONNECT 0x93 [MQTT-3.3.4-7]", async () => {
    const b = await startBroker({ mqtt: { receive_maximum: 2 } });
    try {
      const raw = await RawClient.connected(b.port, 5, { clientId: "greedy" });
      // QoS 2 publishes stay unacknowledged until PUBREL/PUBCOMP, so they stay counted.
      for (let id = 1; id <= 2; id++) {
        raw.send({ cmd: "publish", topic: "greedy/t", payload: "x", qos: 2, messageId: id, retain: false, dup: false });
        await raw.next("pubrec");
      }
      raw.send({ cmd: "publish", topic: "greedy/t", payload: "x", qos: 2, messageId: 3, retain: false, dup: false });
      const d = await raw.next("disconnect");
      expect(d.reasonCode).toBe(0x93);
      await raw.waitClosed();
    } finally {
      await b.stop();
    }
  });

  test("completing a QoS 2 flow frees a Receive Maximum slot [MQTT-3.3.4-7]", async () => {
    const b = await startBroker({ mqtt: { receive_maximum: 1 } });
    try {
      const raw = await RawClient.connected(b.port, 5, { clientId: "polite" });
      for (let id = 1; id <= 3; id++) {
        raw.send({ cmd: "publish", topic: "polite/t", payload: "x", qos: 2, messageId: id, retain: false, dup: false });
        await raw.next("pubrec");
        raw.send({ cmd: "pubrel", messageId: id });
        expect((await raw.next("pubcomp")).reasonCode).toBe(0);
      }
      expect(raw.closed).toBe(false);
      raw.close();
    } finally {
      await b.stop();
    }
  });
});

describe("QoS 2 receiver state", () => {
  test("a re-sent QoS 2 PUBLISH with the same packet id before PUBREL is delivered once [MQTT-4.3.3-10]", async () => {
    const sub = await connect(broker.url, { protocolVersion: 5 });
    await sub.client.subscribeAsync("qos2/once", { qos: 2 });
    const raw = await RawClient.connected(broker.port, 5, { clientId: "qos2-resender" });
    const publish = {
      cmd: "publish",
      topic: "qos2/once",
      payload: "only once",
      qos: 2,
      messageId: 7,
      retain: false,
    } as const;
    raw.send({ ...publish, dup: false });
    expect((await raw.next("pubrec")).messageId).toBe(7);
    raw.send({ ...publish, dup: true });
    expect((await raw.next("pubrec")).messageId).toBe(7);
    raw.send({ cmd: "pubrel", messageId: 7 });
    expect((await raw.next("pubcomp")).reasonCode).toBe(0);
    await sub.waitFor(1);
    await barrier(sub);
    expect(sub.messages.map((m) => m.payload)).toEqual(["only once"]);
    raw.close();
    await sub.end();
  });

  test("after PUBCOMP the same packet id starts a new message", async () => {
    const sub = await connect(broker.url, { protocolVersion: 5 });
    await sub.client.subscribeAsync("qos2/reuse", { qos: 2 });
    const raw = await RawClient.connected(broker.port, 5, { clientId: "qos2-reuser" });
    for (const payload of ["first", "second"]) {
      raw.send({ cmd: "publish", topic: "qos2/reuse", payload, qos: 2, messageId: 9, retain: false, dup: false });
      await raw.next("pubrec");
      raw.send({ cmd: "pubrel", messageId: 9 });
      await raw.next("pubcomp");
    }
    await sub.waitFor(2);
    expect(sub.messages.map((m) => m.payload)).toEqual(["first", "second"]);
    raw.close();
    await sub.end();
  });

  test("PUBREL for an unknown packet id gets PUBCOMP 0x92", async () => {
    const raw = await RawClient.connected(broker.port, 5, { clientId: "pubrel-unknown" });
    raw.send({ cmd: "pubrel", messageId: 4242 });
    const comp = await raw.next("pubcomp");
    expect(comp.messageId).toBe(4242);
    expect(comp.reasonCode).toBe(0x92);
    expect(raw.closed).toBe(false);
    raw.close();
  });
});

test("a 3.1.1 publisher with more unacknowledged QoS 1 publishes than receive_maximum is served, not disconnected", async () => {
  // Receive Maximum is announced only in v5 CONNACK; 3.1.1 clients cannot know it.
  const b = await startBroker({ mqtt: { receive_maximum: 5 } });
  try {
    const c = await RawClient.connected(b.port, 4);
    for (let id = 1; id <= 50; id++) {
      c.send({
        cmd: "publish",
        topic: "v3/window",
        payload: Buffer.from(String(id)),
        qos: 1,
        messageId: id,
        retain: false,
        dup: false,
      }, 4);
    }
    const acked = new Set<number>();
    for (let i = 0; i < 50; i++) acked.add((await c.next("puback")).messageId!);
    expect(acked.size).toBe(50);
    expect(c.closed).toBe(false);
    c.close();
  } finally {
    await b.stop();
  }
});
