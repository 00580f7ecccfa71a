import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { IConnectPacket } from "mqtt-packet";
import { startBroker, type TestBroker } from "./helpers/broker.ts";
import { inProcessBroker } from "./helpers/in-process-broker.ts";
import type { MemoryClient } from "./helpers/memory-client.ts";
import { barrier, connect, eventually, type TestClient } from "./helpers/clients.ts";
import { RawClient } from "./helpers/raw-client.ts";

// Longer than the helpers' 5 s waits, so a missing message fails with their message, not a timeout.
setDefaultTimeout(15_000);

let broker: TestBroker;
beforeAll(async () => {
  broker = await startBroker();
});
afterAll(() => broker.stop());

type Will = NonNullable<IConnectPacket["will"]>;

function will(topic: string, payload: string, extra: Partial<Will> = {}): Will {
  return { topic, payload: Buffer.from(payload), qos: 0, retain: false, ...extra };
}

/** A subscriber on `topic`, connected before the Will's owner. */
async function watcher(topic: string, qos: 0 | 1 | 2 = 1): Promise<TestClient> {
  const sub = await connect(broker.url, { protocolVersion: 5 });
  await sub.client.subscribeAsync(topic, { qos });
  return sub;
}

describe("Will Message on abnormal disconnect", () => {
  for (const version of [4, 5] as const) {
    test(`v${version}: the Will is published when the connection drops without DISCONNECT [MQTT-3.1.2-8]`, async () => {
      const topic = `will/drop/${version}`;
      const sub = await watcher(topic);
      const c = await RawClient.connected(broker.port, version, {
        clientId: `dropper-${version}`,
        will: will(topic, "gone", { qos: 1 }),
      });
      c.close(); // destroy the socket
      const [m] = await sub.waitFor(1);
      expect(m!.payload).toBe("gone");
      expect(m!.packet.qos).toBe(1);
      expect(m!.packet.retain).toBe(false);
      await sub.end();
    });

    test(`v${version}: the Will is not published after a normal DISCONNECT [MQTT-3.14.4-3]`, async () => {
      const topic = `will/normal/${version}`;
      const sub = await watcher(topic);
      const c = await RawClient.connected(broker.port, version, {
        clientId: `polite-${version}`,
        will: will(topic, "should not appear"),
      });
      c.send({ cmd: "disconnect" }, version);
      await c.waitClosed();
      await barrier(sub);
      expect(sub.messages).toHaveLength(0);
      await sub.end();
    });
  }

  test("the Will is published after DISCONNECT with reason 0x04 (Disconnect with Will Message)", async () => {
    const topic = "will/0x04";
    const sub = await watcher(topic);
    const c = await RawClient.connected(broker.port, 5, { clientId: "with-will", will: will(topic, "asked for") });
    c.send({ cmd: "disconnect", reasonCode: 0x04 });
    await c.waitClosed();
    const [m] = await sub.waitFor(1);
    expect(m!.payload).toBe("asked for");
    await sub.end();
  });

  test("the Will is published when Ferry closes the connection for a protocol error", async () => {
    const topic = "will/protocol-error";
    const sub = await watcher(topic);
    const c = await RawClient.connected(broker.port, 5, { clientId: "faulty", will: will(topic, "faulted") });
    c.send({ cmd: "connect", protocolId: "MQTT", protocolVersion: 5, clientId: "faulty", clean: true, keepalive: 60 });
    await c.waitClosed();
    const [m] = await sub.waitFor(1);
    expect(m!.payload).toBe("faulted");
    await sub.end();
  });

  test("the Will of a connection taken over by the same client id is published [MQTT-3.1.4-3]", async () => {
    const topic = "will/takeover";
    const sub = await watcher(topic);
    const old = await RawClient.connected(broker.port, 5, { clientId: "taken", will: will(topic, "old connection") });
    const neu = await RawClient.connected(broker.port, 5, { clientId: "taken" });
    await old.waitClosed();
    const [m] = await sub.waitFor(1);
    expect(m!.payload).toBe("old connection");
    neu.close();
    await sub.end();
  });

  test("a Will with the retain flag becomes the topic's retained message [MQTT-3.1.2-17]", async () => {
    const topic = "will/retained";
    const c = await RawClient.connected(broker.port, 5, {
      clientId: "retainer",
      will: will(topic, "last words", { retain: true, qos: 1 }),
    });
    c.close();
    await eventually(() => broker.server.broker.retained.get(topic) !== undefined);
    const late = await connect(broker.url, { protocolVersion: 5 });
    await late.client.subscribeAsync(topic, { qos: 1 });
    const [m] = await late.waitFor(1);
    expect(m!.payload).toBe("last words");
    expect(m!.packet.retain).toBe(true);
    await late.end();
  });

  test("Will properties (content type, user properties, response topic, correlation data) reach subscribers", async () => {
    const topic = "will/props";
    const sub = await watcher(topic);
    const c = await RawClient.connected(broker.port, 5, {
      clientId: "propertied",
      will: will(topic, '{"state":"offline"}', {
        properties: {
          contentType: "application/json",
          payloadFormatIndicator: true,
          responseTopic: "will/props/reply",
          correlationData: Buffer.from([1, 2, 3, 250]),
          userProperties: { site: "north", rack: "7" },
        },
      }),
    });
    c.close();
    const [m] = await sub.waitFor(1);
    const p = m!.packet.properties!;
    expect(m!.payload).toBe('{"state":"offline"}');
    expect(p.contentType).toBe("application/json");
    expect(p.payloadFormatIndicator).toBe(true);
    expect(p.responseTopic).toBe("will/props/reply");
    expect([...p.correlationData!]).toEqual([1, 2, 3, 250]);
    expect(p.userProperties).toEqual({ site: "north", rack: "7" });
    await sub.end();
  });

  test("the Will's Message Expiry Interval starts when the Will is published, not at CONNECT (spec 3.1.3.2.4)", async () => {
    const b = await inProcessBroker();
    const topic = "will/expiry";
    const sub = await b.subscriber(topic);
    const c = await b.connected(5, {
      clientId: "long-lived",
      will: will(topic, "still fresh", { qos: 1, properties: { messageExpiryInterval: 1 } }),
    });
    await b.advance(1300); // connected longer than the Will's lifetime
    c.close();
    const m = await sub.next("publish");
    expect(m.payload.toString()).toBe("still fresh");
    expect(m.properties?.messageExpiryInterval).toBe(1);
    await b.stop();
  });
});

// On a manual clock (helpers/in-process-broker.ts): the delays pass without sleeping.
describe("Will Delay Interval", () => {
  const published = (sub: MemoryClient) => sub.packets.filter((p) => p.cmd === "publish");

  test("a delayed Will is published after the delay, not at once [MQTT-3.1.3-9]", async () => {
    const b = await inProcessBroker();
    const topic = "will/delay";
    const sub = await b.subscriber(topic);
    const c = await b.connected(5, {
      clientId: "delayed",
      properties: { sessionExpiryInterval: 60 },
      will: will(topic, "late", { properties: { willDelayInterval: 1 } }),
    });
    c.close();
    await b.advance(300);
    expect(published(sub)).toHaveLength(0); // a 1 s delay has not passed yet
    await b.advance(700);
    const m = await sub.next("publish");
    expect(m.payload.toString()).toBe("late");
    await b.stop();
  });

  test("a delayed Will is not published if the client resumes its session within the delay [MQTT-3.1.3-9]", async () => {
    const b = await inProcessBroker();
    const topic = "will/delay/resumed";
    const sub = await b.subscriber(topic);
    const opts = { clientId: "comes-back", clean: false, properties: { sessionExpiryInterval: 60 } };
    const c = await b.connected(5, {
      ...opts,
      will: will(topic, "never", { properties: { willDelayInterval: 1 } }),
    });
    c.close();
    const back = await b.connected(5, opts);
    await b.advance(1800); // past the delay
    expect(published(sub)).toHaveLength(0);
    back.send({ cmd: "disconnect" });
    await back.waitClosed();
    await b.stop();
  });

  test("a delayed Will is published at once if the client returns with Clean Start, ending the session", async () => {
    const b = await inProcessBroker();
    const topic = "will/delay/clean";
    const sub = await b.subscriber(topic);
    const c = await b.connected(5, {
      clientId: "returns-clean",
      properties: { sessionExpiryInterval: 60 },
      will: will(topic, "session over", { properties: { willDelayInterval: 60 } }),
    });
    c.close();
    await b.advance(100);
    expect(published(sub)).toHaveLength(0);
    const back = await b.connected(5, { clientId: "returns-clean", clean: true });
    const m = await sub.next("publish");
    expect(m.payload.toString()).toBe("session over");
    back.close();
    await b.stop();
  });

  test("a Will Delay longer than the Session Expiry Interval is published when the session ends [MQTT-3.1.3-9]", async () => {
    const b = await inProcessBroker();
    const topic = "will/delay/expiry";
    const sub = await b.subscriber(topic);
    const c = await b.connected(5, {
      clientId: "short-session",
      properties: { sessionExpiryInterval: 1 },
      will: will(topic, "session ended", { properties: { willDelayInterval: 3600 } }),
    });
    c.close();
    await b.advance(1000);
    const m = await sub.next("publish");
    expect(m.payload.toString()).toBe("session ended");
    expect(b.broker.sessions.has("short-session")).toBe(false);
    await b.stop();
  });
});
