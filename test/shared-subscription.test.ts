import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { startBroker, type TestBroker } from "./helpers/broker.ts";
import { barrier, connect, eventually, type TestClient } from "./helpers/clients.ts";
import { RawClient } from "./helpers/raw-client.ts";

// Longer than the helpers' 5 s waits, so a missing message fails with their message, not a timeout.
setDefaultTimeout(15_000);

let broker: TestBroker;
beforeAll(async () => {
  broker = await startBroker();
});
afterAll(() => broker.stop());

async function member(filter: string, version: 4 | 5 = 5, qos: 0 | 1 | 2 = 1): Promise<TestClient> {
  const c = await connect(broker.url, { protocolVersion: version });
  await c.client.subscribeAsync(filter, { qos });
  return c;
}

async function publishMany(topic: string, n: number, qos: 0 | 1 | 2 = 1): Promise<string[]> {
  const pub = await connect(broker.url, { protocolVersion: 5 });
  const sent: string[] = [];
  for (let i = 0; i < n; i++) {
    sent.push(String(i));
    await pub.client.publishAsync(topic, String(i), { qos });
  }
  await pub.end();
  return sent;
}

const payloads = (...clients: TestClient[]) => clients.flatMap((c) => c.messages.map((m) => m.payload));
const sorted = (xs: string[]) => xs.slice().sort((a, b) => Number(a) - Number(b));

describe("shared subscriptions", () => {
  for (const version of [4, 5] as const) {
    test(`v${version}: a group spreads messages over its members, each message to exactly one (spec 4.8)`, async () => {
      const topic = `spread/${version}`;
      const a = await member(`$share/g/${topic}`, version);
      const b = await member(`$share/g/${topic}`, version);
      const sent = await publishMany(topic, 20);
      await eventuallyCount(() => a.messages.length + b.messages.length, 20);
      await barrier(a, b);
      expect(sorted(payloads(a, b))).toEqual(sent); // none lost, none twice
      expect(a.messages.length).toBeGreaterThan(0);
      expect(b.messages.length).toBeGreaterThan(0);
      await Promise.all([a.end(), b.end()]);
    });
  }

  test("two different groups on the same filter each get every message", async () => {
    const topic = "groups/two";
    const g1a = await member(`$share/one/${topic}`);
    const g1b = await member(`$share/one/${topic}`);
    const g2 = await member(`$share/two/${topic}`);
    const sent = await publishMany(topic, 10);
    await g2.waitFor(10);
    await eventuallyCount(() => g1a.messages.length + g1b.messages.length, 10);
    await barrier(g1a, g1b, g2);
    expect(sorted(payloads(g1a, g1b))).toEqual(sent);
    expect(payloads(g2)).toEqual(sent);
    await Promise.all([g1a.end(), g1b.end(), g2.end()]);
  });

  test("a non-shared subscriber on the same topic still gets every message", async () => {
    const topic = "groups/plain";
    const a = await member(`$share/g/${topic}`);
    const b = await member(`$share/g/${topic}`);
    const plain = await member(topic);
    const sent = await publishMany(topic, 10);
    await plain.waitFor(10);
    await eventuallyCount(() => a.messages.length + b.messages.length, 10);
    expect(payloads(plain)).toEqual(sent);
    expect(sorted(payloads(a, b))).toEqual(sent);
    await Promise.all([a.end(), b.end(), plain.end()]);
  });

  test("a shared member with a wildcard filter gets messages on matching topics", async () => {
    const only = await member("$share/w/wild/+/temp");
    await publishMany("wild/kitchen/temp", 1);
    await publishMany("wild/kitchen/humidity", 1);
    const [m] = await only.waitFor(1);
    expect(m!.topic).toBe("wild/kitchen/temp");
    await barrier(only);
    expect(only.messages).toHaveLength(1);
    await only.end();
  });

  test("delivery QoS is the minimum of the published QoS and the member's granted QoS [MQTT-4.8.2-3]", async () => {
    const q0 = await member("$share/qos/qos/topic", 5, 0);
    await publishMany("qos/topic", 1, 2);
    const [m] = await q0.waitFor(1);
    expect(m!.packet.qos).toBe(0);
    await q0.end();
  });

  test("No Local on a shared subscription is a Protocol Error: DISCONNECT 0x82 [MQTT-3.8.3-4]", async () => {
    const c = await RawClient.connected(broker.port, 5, { clientId: "shared-nolocal" });
    c.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "$share/g/nl", qos: 1, nl: true }] });
    const d = await c.next("disconnect");
    expect(d.reasonCode).toBe(0x82);
    await c.waitClosed();
    expect(c.packets.filter((p) => p.cmd === "suback")).toHaveLength(0);
  });

  test("a SUBSCRIBE refused for No Local on a shared filter leaves none of its filters subscribed [MQTT-3.8.3-4]", async () => {
    const c = await RawClient.connected(broker.port, 5, {
      clientId: "shared-nolocal-multi",
      clean: false,
      properties: { sessionExpiryInterval: 60 },
    });
    c.send({
      cmd: "subscribe",
      messageId: 1,
      subscriptions: [{ topic: "nl/first", qos: 1 }, { topic: "$share/g/nl2", qos: 1, nl: true }],
    });
    expect((await c.next("disconnect")).reasonCode).toBe(0x82);
    await c.waitClosed();
    expect(broker.server.broker.sessions.get("shared-nolocal-multi")?.subscriptions.size ?? 0).toBe(0);
  });

  test("a member whose queue is full is skipped; the message goes to a member with room", async () => {
    const b = await startBroker({ mqtt: { max_queued_messages: 2 } });
    try {
      // A member that never acknowledges and allows one message in flight fills up first.
      const stuck = await RawClient.connected(b.port, 5, {
        clientId: "full-member",
        properties: { receiveMaximum: 1 },
      });
      stuck.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "$share/g/full", qos: 1 }] });
      await stuck.next("suback");
      const free = await connect(b.url, { protocolVersion: 5 });
      await free.client.subscribeAsync("$share/g/full", { qos: 1 });
      const pub = await connect(b.url, { protocolVersion: 5 });
      for (let i = 0; i < 20; i++) await pub.client.publishAsync("full", String(i), { qos: 1 });
      const held = b.server.broker.sessions.get("full-member")!;
      await eventually(
        () => free.messages.length + held.queuedCount + held.inflight.size === 20,
        5000,
        "all 20 placed",
      );
      expect(held.queuedCount).toBeLessThanOrEqual(2);
      expect(b.server.broker.metrics.droppedQueueFull).toBe(0);
      stuck.close();
      await Promise.all([free.end(), pub.end()]);
    } finally {
      await b.stop();
    }
  });

  test("a shared subscription gets no retained messages on subscribe", async () => {
    const pub = await connect(broker.url, { protocolVersion: 5 });
    await pub.client.publishAsync("shared/retained", "kept", { qos: 1, retain: true });
    await pub.end();
    const shared = await member("$share/g/shared/retained");
    const plain = await member("shared/retained"); // control: the retained message is there
    const [m] = await plain.waitFor(1);
    expect(m!.payload).toBe("kept");
    await barrier(shared);
    expect(shared.messages).toHaveLength(0);
    await Promise.all([shared.end(), plain.end()]);
  });

  test("an unsubscribed member leaves the group; the rest get every message", async () => {
    const topic = "groups/leave";
    const a = await member(`$share/g/${topic}`);
    const b = await member(`$share/g/${topic}`);
    await a.client.unsubscribeAsync(`$share/g/${topic}`);
    const sent = await publishMany(topic, 6);
    await b.waitFor(6);
    await barrier(a, b);
    expect(payloads(b)).toEqual(sent);
    expect(a.messages).toHaveLength(0);
    await Promise.all([a.end(), b.end()]);
  });

  test("messages go to connected members, not to a member whose persistent session is offline", async () => {
    const topic = "groups/offline";
    const away = await connect(broker.url, {
      protocolVersion: 5,
      clientId: "shared-away",
      clean: false,
      properties: { sessionExpiryInterval: 60 },
    });
    await away.client.subscribeAsync(`$share/g/${topic}`, { qos: 1 });
    await away.end();
    await eventually(() => broker.server.broker.sessions.get("shared-away")?.client === undefined);
    const here = await member(`$share/g/${topic}`);
    const sent = await publishMany(topic, 6);
    await here.waitFor(6);
    expect(payloads(here)).toEqual(sent);
    const back = await connect(broker.url, {
      protocolVersion: 5,
      clientId: "shared-away",
      clean: false,
      properties: { sessionExpiryInterval: 60 },
    });
    await barrier(back);
    expect(back.messages).toHaveLength(0);
    await back.client.endAsync(false, { properties: { sessionExpiryInterval: 0 } });
    await here.end();
  });

  test("with every member offline, a persistent member's session keeps the group's messages", async () => {
    const topic = "groups/all-away";
    const opts = {
      protocolVersion: 5 as const,
      clientId: "shared-sole",
      clean: false,
      properties: { sessionExpiryInterval: 60 },
    };
    const sole = await connect(broker.url, opts);
    await sole.client.subscribeAsync(`$share/g/${topic}`, { qos: 1 });
    await sole.end();
    await eventually(() => broker.server.broker.sessions.get("shared-sole")?.client === undefined);
    const sent = await publishMany(topic, 4);
    const back = await connect(broker.url, opts);
    await back.waitFor(4);
    expect(payloads(back)).toEqual(sent);
    await back.client.endAsync(false, { properties: { sessionExpiryInterval: 0 } });
  });

  test("a member that disconnects hands its queued and unacknowledged QoS 1 messages to the others (spec 4.8.2)", async () => {
    const topic = "groups/handover";
    // A member that takes one message at a time and never acknowledges it, so its share queues.
    const stuck = await RawClient.connected(broker.port, 5, {
      clientId: "shared-stuck",
      properties: { receiveMaximum: 1 },
    });
    stuck.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: `$share/g/${topic}`, qos: 1 }] });
    await stuck.next("suback");
    const other = await member(`$share/g/${topic}`);

    const sent = await publishMany(topic, 10);
    const held = await stuck.next("publish");
    await stuck.roundTrip();
    // Its window of one is full: the rest of its share waits in its queue.
    expect(stuck.packets.filter((p) => p.cmd === "publish")).toHaveLength(0);
    expect(other.messages.length).toBeLessThan(10);

    stuck.close();
    await other.waitFor(10);
    await barrier(other);
    expect(sorted(payloads(other))).toEqual(sent);
    expect(payloads(other)).toContain(String(held.payload)); // the unacknowledged one too
    await other.end();
  });
});

function eventuallyCount(count: () => number, n: number, ms = 5000): Promise<void> {
  return eventually(() => count() >= n, ms, () => `got ${count()} of ${n} messages`);
}
