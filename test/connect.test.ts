import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import type { IConnackPacket } from "mqtt-packet";
import { startBroker, type TestBroker } from "./helpers/broker.ts";
import { type InProcessBroker, inProcessBroker } from "./helpers/in-process-broker.ts";
import { barrier, connect } from "./helpers/clients.ts";
import { RawClient, rawConnect } from "./helpers/raw-client.ts";
import { writePasswordFile } from "./helpers/password-file.ts";

// Longer than the helpers' 5 s waits, so a missing message fails with their message, not a timeout.
setDefaultTimeout(15_000);

let broker: TestBroker;
beforeAll(async () => {
  broker = await startBroker();
});
afterAll(() => broker.stop());

const code = (ack: IConnackPacket) => ack.reasonCode ?? ack.returnCode;

describe("client identifier", () => {
  test("an empty client id is assigned one, announced as Assigned Client Identifier [MQTT-3.1.3-6]", async () => {
    const { raw: c, ack } = await rawConnect(broker.port, 5, { clientId: "" });
    expect(code(ack)).toBe(0);
    const assigned = ack.properties?.assignedClientIdentifier;
    expect(typeof assigned).toBe("string");
    expect(assigned!.length).toBeGreaterThan(0);
    expect(broker.server.broker.sessions.get(assigned!)?.client).toBeDefined();
    c.close();
  });

  test("3.1.1: an empty client id with clean session is accepted [MQTT-3.1.3-6]", async () => {
    const { raw: c, ack } = await rawConnect(broker.port, 4, { clientId: "", clean: true });
    expect(ack.returnCode).toBe(0);
    c.close();
  });

  test("3.1.1: an empty client id with clean session 0 is refused with return code 2 and closed [MQTT-3.1.3-8]", async () => {
    // mqtt-packet will not encode this CONNECT, so it is written by hand: "MQTT", level 4,
    // flags 0 (clean session 0), keep alive 60, empty client id.
    const c = await RawClient.open(broker.port, 4);
    c.sendBytes([0x10, 12, 0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 0x00, 0, 60, 0, 0]);
    const ack = await c.next("connack");
    expect(ack.returnCode).toBe(2);
    expect(ack.sessionPresent).toBe(false);
    await c.waitClosed();
  });
});

describe("CONNECT packet rules", () => {
  test("a first packet other than CONNECT closes the connection [MQTT-3.1.0-1]", async () => {
    const c = await RawClient.open(broker.port, 5);
    c.send({ cmd: "pingreq" });
    await c.waitClosed();
    expect(c.packets.filter((p) => p.cmd === "connack" || p.cmd === "pingresp")).toHaveLength(0);
  });

  test("a PUBLISH before CONNECT is not routed and closes the connection [MQTT-3.1.0-1]", async () => {
    const sub = await connect(broker.url);
    await sub.client.subscribeAsync("early/publish");
    const c = await RawClient.open(broker.port, 4);
    c.send({ cmd: "publish", topic: "early/publish", payload: "x", qos: 0, retain: false, dup: false }, 4);
    await c.waitClosed();
    await barrier(sub);
    expect(sub.messages).toHaveLength(0);
    await sub.end();
  });

  for (const version of [4, 5] as const) {
    test(`v${version}: a second CONNECT closes the connection [MQTT-3.1.0-2]`, async () => {
      const c = await RawClient.connected(broker.port, version, { clientId: `second-connect-${version}` });
      c.send({
        cmd: "connect",
        protocolId: "MQTT",
        protocolVersion: version,
        clientId: `second-connect-${version}`,
        clean: true,
        keepalive: 60,
      });
      await c.waitClosed();
      if (version === 5) expect((await c.next("disconnect")).reasonCode).toBe(0x82);
    });
  }

  for (const version of [4, 5] as const) {
    test(`v${version}: packets sent right behind CONNECT, before CONNACK, are processed in order (spec 3.1.4)`, async () => {
      const sub = await connect(broker.url);
      await sub.client.subscribeAsync("pipelined/out");
      const c = await RawClient.open(broker.port, version);
      // One write: CONNECT, SUBSCRIBE, PUBLISH, PINGREQ, without waiting for CONNACK.
      const persist = version === 5 ? { properties: { sessionExpiryInterval: 60 } } : {};
      c.send({
        cmd: "connect",
        protocolId: "MQTT",
        protocolVersion: version,
        clientId: `pipelined-${version}`,
        clean: false,
        keepalive: 60,
        ...persist,
      });
      c.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "pipelined/in", qos: 1 }] }, version);
      c.send({
        cmd: "publish",
        topic: "pipelined/out",
        payload: "early",
        qos: 1,
        messageId: 2,
        retain: false,
        dup: false,
      }, version);
      c.send({ cmd: "pingreq" }, version);
      expect(code(await c.next("connack"))).toBe(0);
      expect((await c.next("suback")).granted).toEqual([1]);
      expect((await c.next("puback")).messageId).toBe(2);
      await c.next("pingresp");
      const [m] = await sub.waitFor(1);
      expect(m!.payload).toBe("early");
      c.send({ cmd: "disconnect", ...(version === 5 ? { properties: { sessionExpiryInterval: 0 } } : {}) }, version);
      await c.waitClosed();
      await sub.end();
    });
  }

  test("packets behind a refused CONNECT are not processed [MQTT-3.1.4-6]", async () => {
    const b = await startBroker({
      auth: { allow_anonymous: false, password_file: await writePasswordFile({ watcher: "w-pass" }) },
    });
    try {
      const sub = await connect(b.url, { username: "watcher", password: "w-pass" });
      await sub.client.subscribeAsync("refused/out");
      const c = await RawClient.open(b.port, 5);
      c.send({
        cmd: "connect",
        protocolId: "MQTT",
        protocolVersion: 5,
        clientId: "refused-pipeliner",
        clean: true,
        keepalive: 60,
      });
      c.send({ cmd: "publish", topic: "refused/out", payload: "must not route", qos: 0, retain: false, dup: false });
      expect((await c.next("connack")).reasonCode).toBe(0x87);
      await c.waitClosed();
      await barrier(sub);
      expect(sub.messages).toHaveLength(0);
      await sub.end();
    } finally {
      await b.stop();
    }
  });

  test("an unsupported protocol level gets CONNACK return code 1 and is closed [MQTT-3.1.2-2]", async () => {
    const c = await RawClient.open(broker.port, 4);
    // CONNECT with protocol level 7: "MQTT", level, flags (clean), keep alive 60, client id "a".
    c.sendBytes([0x10, 13, 0, 4, 0x4d, 0x51, 0x54, 0x54, 7, 0x02, 0, 60, 0, 1, 0x61]);
    const ack = await c.next("connack");
    expect(ack.returnCode).toBe(1);
    await c.waitClosed();
  });

  test("CONNECT with an unsupported Authentication Method is refused with 0x8C and closed [MQTT-4.12.0-1]", async () => {
    const { raw: c, ack } = await rawConnect(broker.port, 5, {
      clientId: "auth-method",
      properties: { authenticationMethod: "SCRAM-SHA-1" },
    });
    expect(ack.reasonCode).toBe(0x8c);
    await c.waitClosed();
    expect(broker.server.broker.sessions.has("auth-method")).toBe(false);
  });

  test("AUTH without an Authentication Method agreed in CONNECT gets DISCONNECT 0x82", async () => {
    const c = await RawClient.connected(broker.port, 5, { clientId: "auth-packet" });
    c.send({ cmd: "auth", reasonCode: 0x18 });
    const d = await c.next("disconnect");
    expect(d.reasonCode).toBe(0x82);
    await c.waitClosed();
  });
});

describe("session takeover and Session Present", () => {
  test("v5: a new connection with the same id takes over; the old one gets DISCONNECT 0x8E and is closed [MQTT-3.1.4-3]", async () => {
    const old = await RawClient.connected(broker.port, 5, { clientId: "takeover-5" });
    const neu = await RawClient.connected(broker.port, 5, { clientId: "takeover-5" });
    const d = await old.next("disconnect");
    expect(d.reasonCode).toBe(0x8e);
    await old.waitClosed();
    // The new connection works and owns the session.
    expect(neu.closed).toBe(false);
    neu.send({ cmd: "pingreq" });
    await neu.next("pingresp");
    expect(broker.server.broker.sessions.get("takeover-5")?.client?.state).toBe("connected");
    neu.close();
  });

  test("3.1.1: a new connection with the same id closes the old one [MQTT-3.1.4-3]", async () => {
    const old = await RawClient.connected(broker.port, 4, { clientId: "takeover-4" });
    const neu = await RawClient.connected(broker.port, 4, { clientId: "takeover-4" });
    await old.waitClosed();
    neu.send({ cmd: "pingreq" }, 4);
    await neu.next("pingresp");
    neu.close();
  });

  for (const version of [4, 5] as const) {
    test(`v${version}: Session Present is 0 with Clean Start and 1 when a session is resumed [MQTT-3.2.2-2/3]`, async () => {
      const id = `present-${version}`;
      const persist = version === 5 ? { properties: { sessionExpiryInterval: 60 } } : {};
      const first = await rawConnect(broker.port, version, { clientId: id, clean: false, ...persist });
      expect(first.ack.sessionPresent).toBe(false); // nothing to resume yet
      first.raw.send({ cmd: "disconnect" }, version);
      await first.raw.waitClosed();

      const resumed = await rawConnect(broker.port, version, { clientId: id, clean: false, ...persist });
      expect(code(resumed.ack)).toBe(0);
      expect(resumed.ack.sessionPresent).toBe(true);
      resumed.raw.send({ cmd: "disconnect" }, version);
      await resumed.raw.waitClosed();

      const cleaned = await rawConnect(broker.port, version, { clientId: id, clean: true, ...persist });
      expect(cleaned.ack.sessionPresent).toBe(false);
      cleaned.raw.send(
        { cmd: "disconnect", ...(version === 5 ? { properties: { sessionExpiryInterval: 0 } } : {}) },
        version,
      );
      await cleaned.raw.waitClosed();
    });
  }
});

describe("keep alive", () => {
  // On a manual clock (helpers/in-process-broker.ts): the periods pass without sleeping.
  let b: InProcessBroker;
  beforeAll(async () => {
    b = await inProcessBroker();
  });
  afterAll(() => b.stop());

  test("a silent client is disconnected with 0x8D after one and a half keep alive periods [MQTT-3.1.2-22]", async () => {
    const c = await b.connected(5, { clientId: "silent", keepalive: 1 });
    await b.advance(2000);
    await c.waitClosed(1000);
    expect((await c.next("disconnect")).reasonCode).toBe(0x8d);
  });

  test("3.1.1: a silent client is disconnected after one and a half keep alive periods [MQTT-3.1.2-22]", async () => {
    const c = await b.connected(4, { clientId: "silent-4", keepalive: 1 });
    await b.advance(2000);
    await c.waitClosed(1000);
  });

  test("a client that sends PINGREQ within its keep alive stays connected [MQTT-3.1.2-22]", async () => {
    const c = await b.connected(5, { clientId: "pinging", keepalive: 1 });
    for (let i = 0; i < 6; i++) {
      await b.advance(500);
      c.send({ cmd: "pingreq" });
      await c.next("pingresp");
    }
    expect(c.closed).toBe(false);
    c.close();
  });
});

describe("server keep alive", () => {
  test("server_keep_alive is announced as Server Keep Alive and enforced over the client's value [MQTT-3.2.2-21]", async () => {
    // On a manual clock: one and a half of the server's period pass without sleeping.
    const b = await inProcessBroker({ mqtt: { server_keep_alive: 1 } });
    try {
      const { raw: c, ack } = await b.attempt(5, { clientId: "ska", keepalive: 600 });
      expect(ack.reasonCode).toBe(0);
      expect(ack.properties?.serverKeepAlive).toBe(1);
      await b.advance(2000);
      await c.waitClosed(1000);
      expect((await c.next("disconnect")).reasonCode).toBe(0x8d);
    } finally {
      await b.stop();
    }
  });
});

describe("CONNACK properties", () => {
  test("v5 CONNACK announces receive maximum, maximum packet size, topic alias maximum and available features", async () => {
    const b = await startBroker({ mqtt: { receive_maximum: 77, max_packet_size: 4096, topic_alias_maximum: 5 } });
    try {
      const { raw: c, ack } = await rawConnect(b.port, 5, { clientId: "props" });
      expect(ack.reasonCode).toBe(0);
      const p = ack.properties!;
      expect(p.receiveMaximum).toBe(77);
      expect(p.maximumPacketSize).toBe(4096);
      expect(p.topicAliasMaximum).toBe(5);
      expect(p.subscriptionIdentifiersAvailable).toBe(true);
      expect(p.sharedSubscriptionAvailable).toBe(true);
      expect(p.wildcardSubscriptionAvailable).toBe(true);
      expect(p.serverKeepAlive).toBeUndefined();
      c.close();
    } finally {
      await b.stop();
    }
  });
});

describe("admission", () => {
  test("max_connections refuses the extra client: v5 0x97, 3.1.1 return code 3", async () => {
    const b = await startBroker({ mqtt: { max_connections: 1 } });
    try {
      const first = await RawClient.connected(b.port, 5, { clientId: "only-one" });
      const v5 = await rawConnect(b.port, 5, { clientId: "extra-5" });
      expect(v5.ack.reasonCode).toBe(0x97);
      await v5.raw.waitClosed();
      const v4 = await rawConnect(b.port, 4, { clientId: "extra-4" });
      expect(v4.ack.returnCode).toBe(3);
      await v4.raw.waitClosed();
      expect(b.server.broker.sessions.has("extra-5")).toBe(false);
      // Once the first leaves, there is room again.
      first.send({ cmd: "disconnect" });
      await first.waitClosed();
      const again = await rawConnect(b.port, 5, { clientId: "extra-5" });
      expect(again.ack.reasonCode).toBe(0);
      again.raw.close();
    } finally {
      await b.stop();
    }
  });

  test("at max_connections a client may still take over its own session (a reconnect after a half-open drop)", async () => {
    const b = await startBroker({ mqtt: { max_connections: 1 } });
    try {
      const old = await RawClient.connected(b.port, 5, { clientId: "flaky" });
      const again = await rawConnect(b.port, 5, { clientId: "flaky" });
      expect(again.ack.reasonCode).toBe(0);
      expect((await old.next("disconnect")).reasonCode).toBe(0x8e);
      expect(b.server.broker.connectedCount).toBe(1);
      again.raw.close();
    } finally {
      await b.stop();
    }
  });

  test("allow_anonymous=false refuses a client without a username: v5 0x87, 3.1.1 return code 5", async () => {
    const b = await startBroker({
      auth: { allow_anonymous: false, password_file: await writePasswordFile({ alice: "a-pass" }) },
    });
    try {
      const v5 = await rawConnect(b.port, 5, { clientId: "anon-5" });
      expect(v5.ack.reasonCode).toBe(0x87);
      await v5.raw.waitClosed();
      const v4 = await rawConnect(b.port, 4, { clientId: "anon-4" });
      expect(v4.ack.returnCode).toBe(5);
      await v4.raw.waitClosed();
      const named = await rawConnect(b.port, 5, {
        clientId: "named",
        username: "alice",
        password: Buffer.from("a-pass"),
      });
      expect(named.ack.reasonCode).toBe(0);
      named.raw.close();
    } finally {
      await b.stop();
    }
  });
});
