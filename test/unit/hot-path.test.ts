/**
 * The publish hot path's shortcuts keep the behaviour of the plain code: ordered
 * acknowledgements when commits settle out of order, the per-topic match cache, shared
 * encodings, and the TCP adapter's one send per event-loop turn.
 */
import { describe, expect, jest, test } from "bun:test";
import mqttPacket from "mqtt-packet";
import { Broker } from "../../src/core/broker.ts";
import { brokerOptionsFrom, validateConfig } from "../../src/config/load.ts";
import { systemClock } from "../../src/core/clock.ts";
import type { Connection, ConnectionHandler } from "../../src/core/connection.ts";
import { silentLogger } from "../../src/core/logger.ts";
import { encodeOutbound, MessageEncodings, type OutboundPeer } from "../../src/core/outbound-encoder.ts";
import type { Outbound } from "../../src/core/session.ts";
import { TopicTree } from "../../src/core/topic-tree.ts";
import { BunSocketConnection } from "../../src/runtime/bun/tcp-listener.ts";
import { MemoryStore } from "../../src/store/memory-store.ts";
import type { Message, Mutation } from "../../src/store/store.ts";

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** A MemoryStore whose commits settle only when the test says so, in any order. */
class ManualStore extends MemoryStore {
  held: Array<{ mutations: readonly Mutation[]; resolve: () => void; reject: (err: Error) => void }> = [];
  holding = false;

  override commit(mutations: readonly Mutation[]): Promise<void> {
    if (!this.holding) return super.commit(mutations);
    return new Promise<void>((resolve, reject) => {
      this.held.push({ mutations, resolve: () => resolve(super.commit(mutations)), reject });
    });
  }
}

class FakeConnection implements Connection {
  readonly remoteAddress = "127.0.0.1:1";
  readonly transport = "memory";
  handler!: ConnectionHandler;
  packets: mqttPacket.Packet[] = [];
  #parser = mqttPacket.parser({ protocolVersion: 5 });

  constructor() {
    this.#parser.on("packet", (p) => this.packets.push(p));
  }
  write(bytes: Uint8Array): void {
    this.#parser.parse(Buffer.from(bytes));
  }
  bufferedBytes(): number {
    return 0;
  }
  close(): void {}
  pause(): void {}
  resume(): void {}
  send(packet: object): void {
    this.handler.onData(mqttPacket.generate(packet as mqttPacket.Packet, { protocolVersion: 5 }));
  }
}

async function connected(broker: Broker, clientId: string): Promise<FakeConnection> {
  const c = new FakeConnection();
  c.handler = broker.accept(c);
  c.send({ cmd: "connect", clientId, clean: true, keepalive: 0, protocolVersion: 5 });
  for (let i = 0; i < 5 && !c.packets.some((p) => p.cmd === "connack"); i++) await nextTurn();
  expect(c.packets.map((p) => p.cmd)).toEqual(["connack"]);
  c.packets = [];
  return c;
}

/** A broker on a ManualStore with subscriber "sub" on t/+ and publisher "pub", both connected. */
async function brokerWithSubscriber(liveDelivery: "immediate" | "after_commit", qos: 1 | 2) {
  const store = new ManualStore();
  const broker = new Broker({
    options: { ...brokerOptionsFrom(validateConfig({}), "test"), sysInterval: 0, liveDelivery },
    store,
    clock: systemClock,
    logger: silentLogger,
  });
  await broker.start();
  const sub = await connected(broker, "sub");
  sub.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "t/+", qos }] });
  await nextTurn();
  sub.packets = [];
  const pub = await connected(broker, "pub");
  return { store, broker, sub, pub };
}

describe("ordered publish flow", () => {
  test("commits that settle out of order still deliver and acknowledge in arrival order [MQTT-4.6.0-6]", async () => {
    const { store, broker, sub, pub } = await brokerWithSubscriber("after_commit", 1);

    store.holding = true;
    for (let id = 1; id <= 3; id++) {
      pub.send({ cmd: "publish", topic: `t/${id}`, payload: Buffer.from(`m${id}`), qos: 1, messageId: id });
    }
    expect(store.held.length).toBe(3); // all three handed to the store at once (group commits)
    // The last commit settles first, then the first, then the middle one.
    store.held[2]!.resolve();
    await nextTurn();
    expect(pub.packets).toEqual([]); // nothing before the first publish is durable
    expect(sub.packets).toEqual([]);
    store.held[0]!.resolve();
    await nextTurn();
    expect(pub.packets.map((p) => (p as mqttPacket.IPubackPacket).messageId)).toEqual([1]);
    store.held[1]!.resolve();
    await nextTurn();
    expect(pub.packets.map((p) => (p as mqttPacket.IPubackPacket).messageId)).toEqual([1, 2, 3]);
    const topics = sub.packets.map((p) => (p as mqttPacket.IPublishPacket).topic);
    expect(topics).toEqual(["t/1", "t/2", "t/3"]);
    store.holding = false;
    await broker.close();
  });

  test("a failed commit does not stall the publishes behind it", async () => {
    const { store, broker, sub, pub } = await brokerWithSubscriber("after_commit", 1);
    store.holding = true;
    pub.send({ cmd: "publish", topic: "t/1", payload: Buffer.from("a"), qos: 0, retain: true });
    pub.send({ cmd: "publish", topic: "t/2", payload: Buffer.from("b"), qos: 0, retain: true });
    store.held[0]!.reject(new Error("disk on fire"));
    store.held[1]!.resolve();
    await nextTurn();
    // QoS 0 has no acknowledgement to refuse with; the second message still goes out.
    expect(sub.packets.map((p) => (p as mqttPacket.IPublishPacket).topic)).toEqual(["t/2"]);
    store.holding = false;
    await broker.close();
  });
});

describe("live delivery before the commit (storage.live_delivery: immediate)", () => {
  async function setup() {
    const ready = await brokerWithSubscriber("immediate", 2);
    ready.store.holding = true;
    return ready;
  }
  const topics = (c: FakeConnection) =>
    c.packets.filter((p) => p.cmd === "publish").map((p) => (p as mqttPacket.IPublishPacket).topic);
  const acks = (c: FakeConnection) => c.packets.map((p) => `${p.cmd} ${(p as mqttPacket.IPubackPacket).messageId}`);

  test("QoS 1 reaches the subscriber at once; its PUBACK and the log readers wait for the commit", async () => {
    const { store, broker, sub, pub } = await setup();
    const logged: string[] = [];
    broker.addLogReader({ wants: () => true, onLogged: (m) => logged.push(m.topic) });
    pub.send({ cmd: "publish", topic: "t/1", payload: Buffer.from("a"), qos: 1, messageId: 1 });
    await nextTurn();
    expect(topics(sub)).toEqual(["t/1"]);
    expect(pub.packets).toEqual([]);
    expect(logged).toEqual([]); // the uplink reads only durable messages
    store.held[0]!.resolve();
    await nextTurn();
    expect(acks(pub)).toEqual(["puback 1"]);
    expect(logged).toEqual(["t/1"]);
    store.holding = false;
    await broker.close();
  });

  test("QoS 2 waits for its commit, and a QoS 1 message behind it waits too, so the order holds [MQTT-4.6.0-6]", async () => {
    const { store, broker, sub, pub } = await setup();
    pub.send({ cmd: "publish", topic: "t/1", payload: Buffer.from("a"), qos: 2, messageId: 1 });
    pub.send({ cmd: "publish", topic: "t/2", payload: Buffer.from("b"), qos: 1, messageId: 2 });
    await nextTurn();
    expect(topics(sub)).toEqual([]);
    store.held[0]!.resolve();
    store.held[1]!.resolve();
    await nextTurn();
    expect(topics(sub)).toEqual(["t/1", "t/2"]);
    expect(acks(pub)).toEqual(["pubrec 1", "puback 2"]);
    // Once nothing is held back, QoS 1 goes live again.
    pub.send({ cmd: "publish", topic: "t/3", payload: Buffer.from("c"), qos: 1, messageId: 3 });
    await nextTurn();
    expect(topics(sub)).toEqual(["t/1", "t/2", "t/3"]);
    store.holding = false;
    await broker.close();
  });

  test("nothing goes live while the store refuses appends", async () => {
    const { store, broker, sub, pub } = await setup();
    const stats = store.stats.bind(store);
    store.stats = () => ({ ...stats(), full: true });
    pub.send({ cmd: "publish", topic: "t/1", payload: Buffer.from("a"), qos: 1, messageId: 1 });
    await nextTurn();
    expect(topics(sub)).toEqual([]);
    store.held[0]!.reject(new Error("full"));
    await nextTurn();
    expect(topics(sub)).toEqual([]); // refused, so never seen
    store.holding = false;
    await broker.close();
  });
});

describe("TopicTree.matchAll", () => {
  test("gives what match gives, and forgets cached results when subscriptions change", () => {
    const tree = new TopicTree<string>();
    tree.add("a/+", "k1", "plus");
    const seen: string[] = [];
    tree.match("a/b", (v) => seen.push(v));
    expect(tree.matchAll("a/b")).toEqual(seen);
    expect(tree.matchAll("a/b")).toBe(tree.matchAll("a/b")); // served from the cache
    tree.add("a/#", "k2", "hash");
    expect([...tree.matchAll("a/b")].sort()).toEqual(["hash", "plus"]);
    tree.remove("a/+", "k1");
    expect(tree.matchAll("a/b")).toEqual(["hash"]);
    tree.add("a/#", "k2", "hash2"); // a replaced value is seen too
    expect(tree.matchAll("a/b")).toEqual(["hash2"]);
    expect(tree.matchAll("$SYS/x")).toEqual([]); // [MQTT-4.7.2-1]
  });
});

describe("MessageEncodings", () => {
  const peer: OutboundPeer = { version: 4, outboundAlias: () => undefined };
  const message: Message = {
    offset: 1,
    topic: "x/y",
    payload: new TextEncoder().encode("hello"),
    qos: 1,
    retain: false,
    receivedAt: 0,
    origin: "p",
  };
  const outbound = (packetId: number): Outbound => ({
    message,
    qos: 1,
    retain: false,
    subscriptionIds: undefined,
    packetId,
    phase: "sent",
    shareKey: undefined,
  });
  const idOf = (bytes: Uint8Array) => {
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    let id = -1;
    parser.on("packet", (p) => (id = (p as mqttPacket.IPublishPacket).messageId ?? -1));
    parser.parse(Buffer.from(bytes));
    return id;
  };

  test("the first QoS 1 copy takes the encoding; later copies are patched copies that leave it alone", () => {
    const cache = new MessageEncodings();
    const copies = [7, 8, 9].map((id) => encodeOutbound(peer, outbound(id), false, 0, cache));
    expect(cache.size).toBe(1);
    expect(copies.map(idOf)).toEqual([7, 8, 9]);
    expect(copies[1]!.buffer).not.toBe(copies[0]!.buffer);
    const dup = encodeOutbound(peer, outbound(10), true, 0, cache);
    expect(dup[0]! & 0x08).toBe(0x08);
    expect(copies[0]![0]! & 0x08).toBe(0); // DUP never lands on the shared bytes
    expect(idOf(copies[0]!)).toBe(7);
  });

  test("a second form gets its own entry", () => {
    const cache = new MessageEncodings();
    encodeOutbound(peer, outbound(1), false, 0, cache);
    encodeOutbound({ version: 5, outboundAlias: () => undefined }, outbound(2), false, 0, cache);
    expect(cache.size).toBe(2);
  });
});

describe("BunSocketConnection", () => {
  test("writes made across microtasks in one turn leave in one send, in order", async () => {
    const sent: Uint8Array[] = [];
    const socket = {
      write(data: Uint8Array) {
        sent.push(data.slice());
        return data.byteLength;
      },
      end() {},
    };
    const conn = new BunSocketConnection(
      socket as unknown as ConstructorParameters<typeof BunSocketConnection>[0],
      "127.0.0.1",
    );
    conn.write(new Uint8Array([1]));
    await Promise.resolve();
    conn.write(new Uint8Array([2]));
    await Promise.resolve().then(() => undefined);
    conn.write(new Uint8Array([3]));
    expect(conn.bufferedBytes()).toBe(3);
    await nextTurn();
    expect(sent).toEqual([new Uint8Array([1, 2, 3])]);
    expect(conn.bufferedBytes()).toBe(0);
  });

  test("a partial write keeps the rest until drain, and later writes queue behind it", async () => {
    const sent: number[][] = [];
    let room = 2;
    const socket = {
      write(data: Uint8Array) {
        const n = Math.min(room, data.byteLength);
        sent.push([...data.subarray(0, n)]);
        room -= n;
        return n;
      },
      end() {},
    };
    const conn = new BunSocketConnection(
      socket as unknown as ConstructorParameters<typeof BunSocketConnection>[0],
      "127.0.0.1",
    );
    conn.write(new Uint8Array([1, 2, 3]));
    await nextTurn();
    conn.write(new Uint8Array([4]));
    await nextTurn();
    expect(sent).toEqual([[1, 2]]); // blocked: nothing more until drain
    room = 10;
    conn.flush(); // what the drain callback does
    expect(sent).toEqual([[1, 2], [3, 4]]);
  });

  test("a backlog larger than the scratch buffer goes out in blocks of at most 256 KiB, in order, through partial writes", async () => {
    const sizes: number[] = [];
    const out: number[] = [];
    let room = 700_000;
    const socket = {
      write(data: Uint8Array) {
        const n = Math.min(room, data.byteLength);
        sizes.push(data.byteLength);
        for (let i = 0; i < n; i++) out.push(data[i]!);
        room -= n;
        return n;
      },
      end() {},
    };
    const conn = new BunSocketConnection(
      socket as unknown as ConstructorParameters<typeof BunSocketConnection>[0],
      "127.0.0.1",
    );
    // 200,000 writes of 5 bytes (a PUBACK flood's replies), one of 300 KB in the middle.
    let next = 0;
    const expected: number[] = [];
    const write = (n: number) => {
      const b = new Uint8Array(n);
      for (let i = 0; i < n; i++) b[i] = next++ & 0xff;
      expected.push(...b);
      conn.write(b);
    };
    for (let i = 0; i < 100_000; i++) write(5);
    write(300_000);
    for (let i = 0; i < 100_000; i++) write(5);
    await nextTurn();
    expect(out.length).toBe(700_000); // the kernel took what it had room for
    expect(conn.bufferedBytes()).toBe(expected.length - 700_000);
    room = Number.POSITIVE_INFINITY;
    conn.flush();
    expect(conn.bufferedBytes()).toBe(0);
    expect(out).toEqual(expected);
    // Joined blocks never exceed the scratch buffer; only a single large write goes out whole.
    expect(sizes.filter((n) => n > 256 * 1024)).toEqual([300_000]);
  });

  test("close sends FIN at once and closes only after the linger, so the peer sees the end without a reset", () => {
    const calls: string[] = [];
    const socket = {
      write: (data: Uint8Array) => data.byteLength,
      shutdown: () => void calls.push("shutdown"),
      end: () => void calls.push("end"),
    };
    const conn = new BunSocketConnection(
      socket as unknown as ConstructorParameters<typeof BunSocketConnection>[0],
      "127.0.0.1",
    );
    // Bun's fake timers run the linger timer when told, without waiting for it.
    jest.useFakeTimers();
    try {
      conn.close();
      expect(calls).toEqual(["shutdown"]); // the write side ends now; reading goes on
      jest.advanceTimersByTime(99);
      expect(calls).toEqual(["shutdown"]);
      jest.advanceTimersByTime(1);
      expect(calls).toEqual(["shutdown", "end"]);
    } finally {
      jest.useRealTimers();
    }
  });
});
