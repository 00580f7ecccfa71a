/**
 * QoS 2 towards a persistent session without holding the connection's output (issue 19):
 * the PUBLISH leaves under a packet id that follows from the message's log offset, only
 * the PUBREL waits for its commit, and an id is reused only once the completion of its
 * last message is durable. In process, on a store whose commits become durable when the
 * test says (test/helpers/gated-store.ts), so each claim is checked at the moment between
 * a packet and its commit, including a crash there.
 */
import { describe, expect, test } from "bun:test";
import mqttPacket, { type IPublishPacket, type Packet } from "mqtt-packet";
import { packetIdFor } from "../src/core/session.ts";
import { brokerOn, type GatedBroker, GatedStore } from "./helpers/gated-store.ts";
import { settle } from "./helpers/manual-clock.ts";
import type { MemoryClient } from "./helpers/memory-client.ts";
import { prng } from "./helpers/fuzz-packets.ts";

const text = (p: IPublishPacket) => new TextDecoder().decode(p.payload as Uint8Array);
const publishes = (c: MemoryClient) => c.packets.filter((p): p is IPublishPacket => p.cmd === "publish");
const has = (c: MemoryClient, cmd: Packet["cmd"]) => c.packets.some((p) => p.cmd === cmd);

/** A persistent v5 subscriber of `topic` at QoS 2, and a clean publisher. */
async function setup(b: GatedBroker, topic = "t/#") {
  const sub = b.open(5);
  expect(await b.connect(sub, "sub", 5)).toBe(false);
  sub.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 2 }] });
  await sub.next("suback");
  const pub = b.open(5);
  await b.connect(pub, "pub", 5, { clean: true, properties: {} });
  return { sub, pub };
}

describe("QoS 2 to a persistent session (commit durability)", () => {
  test("the PUBLISH leaves before its 'sent' mark is durable, under the packet id its log offset gives", async () => {
    const b = await brokerOn(new GatedStore());
    const { sub, pub } = await setup(b);
    b.store.gated = true;
    pub.send({
      cmd: "publish",
      topic: "t/1",
      payload: Buffer.from("m1"),
      qos: 2,
      messageId: 7,
      dup: false,
      retain: false,
    });
    await settle();
    // The message itself is not durable yet: QoS 2 waits for it [MQTT-4.3.3-2].
    expect(publishes(sub)).toHaveLength(0);
    b.store.flush();
    await settle();
    const [p] = publishes(sub);
    expect(text(p!)).toBe("m1");
    // Its "sent" mark is not durable, and the PUBLISH is out anyway.
    expect(b.store.durableOps()).not.toContain("delivery-sent");
    expect(p!.messageId).toBe(packetIdFor(b.broker.nextOffset - 1));
    // The mark rides along with the next commit, or goes on its own a few ms later (WriteBehind).
    await b.clock.advance(10);
    b.store.flush();
    expect(b.store.durableOps()).toContain("delivery-sent");
  });

  test("only the PUBREL waits for the 'pubrel' commit; PUBLISHes and other packets keep flowing [MQTT-4.3.3-6]", async () => {
    const b = await brokerOn(new GatedStore());
    const { sub, pub } = await setup(b);
    pub.send({
      cmd: "publish",
      topic: "t/1",
      payload: Buffer.from("m1"),
      qos: 2,
      messageId: 1,
      dup: false,
      retain: false,
    });
    const p = await sub.next("publish");
    b.store.gated = true;
    sub.send({ cmd: "pubrec", messageId: p.messageId! });
    await settle();
    expect(b.store.pendingMutations().map((m) => m.op)).toContain("delivery-pubrel");
    expect(has(sub, "pubrel")).toBe(false);
    // Meanwhile a QoS 0 message and a PINGRESP reach the subscriber.
    pub.send({ cmd: "publish", topic: "t/2", payload: Buffer.from("q0"), qos: 0, dup: false, retain: false });
    sub.send({ cmd: "pingreq" });
    await settle();
    expect(publishes(sub).map(text)).toEqual(["q0"]);
    expect(has(sub, "pingresp")).toBe(true);
    expect(has(sub, "pubrel")).toBe(false);
    b.store.flush();
    await settle();
    expect((await sub.next("pubrel")).messageId).toBe(p.messageId);
  });

  test("PUBRELs leave in the order their PUBRECs arrived [MQTT-4.6.0-4]", async () => {
    const b = await brokerOn(new GatedStore());
    const { sub, pub } = await setup(b);
    for (const [i, id] of [[1, 11], [2, 12], [3, 13]] as const) {
      pub.send({
        cmd: "publish",
        topic: "t/x",
        payload: Buffer.from(`m${i}`),
        qos: 2,
        messageId: id,
        dup: false,
        retain: false,
      });
    }
    await settle();
    const ids = publishes(sub).map((p) => p.messageId!);
    expect(ids).toHaveLength(3);
    await b.clock.advance(10); // the "sent" marks are written
    b.store.gated = true;
    const order = [ids[2]!, ids[0]!, ids[1]!];
    // One at a time: each turn's PUBRECs make one commit.
    for (const id of order) {
      sub.send({ cmd: "pubrec", messageId: id });
      await settle();
    }
    expect(b.store.pending).toBe(3);
    b.store.flush(1);
    await settle();
    expect(sub.packets.filter((p) => p.cmd === "pubrel").map((p) => p.messageId)).toEqual([order[0]]);
    b.store.flush();
    await settle();
    expect(sub.packets.filter((p) => p.cmd === "pubrel").map((p) => p.messageId)).toEqual(order);
  });

  test("the PUBRECs of one read go to the store after the read, in PUBREC order, without the 'sent' marks they supersede", async () => {
    const b = await brokerOn(new GatedStore());
    const { sub, pub } = await setup(b);
    for (const [i, id] of [[1, 11], [2, 12], [3, 13]] as const) {
      pub.send({
        cmd: "publish",
        topic: "t/x",
        payload: Buffer.from(`m${i}`),
        qos: 2,
        messageId: id,
        dup: false,
        retain: false,
      });
    }
    await settle();
    const ids = publishes(sub).map((p) => p.messageId!);
    b.store.gated = true;
    const order = [ids[1]!, ids[2]!, ids[0]!];
    // In one chunk, as one socket read brings them.
    sub.sendBytes(Buffer.concat(order.map((id) => mqttPacket.generate({ cmd: "pubrec", messageId: id }))));
    await settle();
    expect(b.store.pendingMutations().map((m) => m.op === "delivery-pubrel" ? m.packetId : m.op)).toEqual(order);
    expect(has(sub, "pubrel")).toBe(false);
    b.store.flush();
    await settle();
    expect(sub.packets.filter((p) => p.cmd === "pubrel").map((p) => p.messageId)).toEqual(order);
  });

  test("a crash before the 'sent' mark is durable: the re-send after restart carries the same packet id", async () => {
    const store = new GatedStore();
    const b = await brokerOn(store);
    const { sub, pub } = await setup(b);
    pub.send({
      cmd: "publish",
      topic: "t/1",
      payload: Buffer.from("m1"),
      qos: 2,
      messageId: 1,
      dup: false,
      retain: false,
    });
    await settle();
    store.gated = true;
    // The message is durable (its publish committed); hold everything after it.
    const first = await sub.next("publish").catch(() => undefined);
    expect(first).toBeDefined();
    // Nothing the PUBLISH caused is durable: the "sent" mark is lost with the crash.
    sub.send({ cmd: "pubrec", messageId: first!.messageId! });
    await settle();
    expect(has(sub, "pubrel")).toBe(false);
    sub.close();
    pub.close();
    const b2 = await brokerOn(store.crash());
    const sub2 = b2.open(5);
    expect(await b2.connect(sub2, "sub", 5)).toBe(true);
    const again = await sub2.next("publish");
    // The receiver still holds this id (it sent PUBREC and got no PUBREL), so it takes
    // the re-send as the duplicate it is [MQTT-4.3.3-9].
    expect(again.messageId).toBe(first!.messageId);
    expect(text(again)).toBe("m1");
  });

  test("a 'sent' mark still waiting at PUBREC is never written: the 'pubrel' phase records the packet id, and a crash after it re-sends the PUBREL", async () => {
    const store = new GatedStore();
    const b = await brokerOn(store);
    const { sub, pub } = await setup(b);
    pub.send({
      cmd: "publish",
      topic: "t/1",
      payload: Buffer.from("m1"),
      qos: 2,
      messageId: 1,
      dup: false,
      retain: false,
    });
    const p = await sub.next("publish");
    // Answered before WriteBehind wrote the "sent" mark (the clock has not moved).
    sub.send({ cmd: "pubrec", messageId: p.messageId! });
    expect((await sub.next("pubrel")).messageId).toBe(p.messageId);
    await b.clock.advance(10);
    const ops = store.committed.flat();
    expect(ops.map((m) => m.op)).not.toContain("delivery-sent");
    expect(ops.filter((m) => m.op === "delivery-pubrel")).toEqual([
      { op: "delivery-pubrel", clientId: "sub", offset: b.broker.nextOffset - 1, packetId: p.messageId! },
    ]);
    // No PUBCOMP yet: after a crash the delivery is in flight past PUBREC, under its id.
    sub.close();
    pub.close();
    const b2 = await brokerOn(store.crash());
    const sub2 = b2.open(5);
    expect(await b2.connect(sub2, "sub", 5)).toBe(true);
    expect((await sub2.next("pubrel")).messageId).toBe(p.messageId);
    await settle();
    expect(publishes(sub2)).toHaveLength(0);
  });

  test("a QoS 1 delivery acknowledged before its 'sent' mark was written costs only its deletion", async () => {
    const store = new GatedStore();
    const b = await brokerOn(store);
    const { sub, pub } = await setup(b);
    pub.send({
      cmd: "publish",
      topic: "t/1",
      payload: Buffer.from("m1"),
      qos: 1,
      messageId: 1,
      dup: false,
      retain: false,
    });
    const p = await sub.next("publish");
    sub.send({ cmd: "puback", messageId: p.messageId! });
    await settle();
    await b.clock.advance(10);
    const ops = store.committed.flat().map((m) => m.op);
    expect(ops).toContain("delivery-delete-offset");
    expect(ops).not.toContain("delivery-sent");
    // One acknowledged later than that: its mark was written first, then its deletion.
    pub.send({
      cmd: "publish",
      topic: "t/2",
      payload: Buffer.from("m2"),
      qos: 1,
      messageId: 2,
      dup: false,
      retain: false,
    });
    const p2 = await sub.next("publish");
    await b.clock.advance(10);
    sub.send({ cmd: "puback", messageId: p2.messageId! });
    await settle();
    await b.clock.advance(10);
    expect(store.committed.flat().map((m) => m.op).filter((op) => op.startsWith("delivery-"))).toEqual([
      "delivery-put",
      "delivery-delete-offset",
      "delivery-put",
      "delivery-sent",
      "delivery-delete-offset",
    ]);
  });

  test("a queued message whose packet id is taken waits; the id is reused only once its last completion is durable", async () => {
    const store = new GatedStore();
    const b = await brokerOn(store);
    const { sub, pub } = await setup(b);
    pub.send({
      cmd: "publish",
      topic: "t/a",
      payload: Buffer.from("old"),
      qos: 1,
      messageId: 1,
      dup: false,
      retain: false,
    });
    const old = await sub.next("publish");
    expect(old.messageId).toBe(1); // offset 1
    // Move the log 65,535 offsets on, so the next message's offset gives the same id.
    await store.disk.commit([{
      op: "append",
      message: {
        offset: 65_535,
        topic: "filler",
        payload: new Uint8Array(1),
        qos: 1,
        retain: false,
        receivedAt: 0,
        origin: "",
      },
    }]);
    sub.close();
    pub.close();
    await settle();
    const b2 = await brokerOn(store.crash());
    const sub2 = b2.open(5);
    expect(await b2.connect(sub2, "sub", 5)).toBe(true);
    const resent = await sub2.next("publish");
    expect(resent.dup).toBe(true);
    expect(resent.messageId).toBe(1);
    const pub2 = b2.open(5);
    await b2.connect(pub2, "pub", 5, { clean: true, properties: {} });
    pub2.send({
      cmd: "publish",
      topic: "t/b",
      payload: Buffer.from("new"),
      qos: 1,
      messageId: 1,
      dup: false,
      retain: false,
    });
    await settle();
    expect(b2.broker.nextOffset - 1).toBe(65_536);
    expect(packetIdFor(65_536)).toBe(1);
    // Id 1 is in flight: the new message waits [MQTT-2.2.1-3].
    expect(publishes(sub2)).toHaveLength(0);
    b2.store.gated = true;
    sub2.send({ cmd: "puback", messageId: 1 });
    await settle();
    // Acknowledged, but its completion is not durable: a crash now would bring "old" back
    // in flight under id 1, so "new" may not have it yet.
    expect(publishes(sub2)).toHaveLength(0);
    await b2.clock.advance(10); // the deletion goes to the store (WriteBehind), not yet durable
    expect(b2.store.pendingMutations().map((m) => m.op)).toContain("delivery-delete-offset");
    expect(publishes(sub2)).toHaveLength(0);
    b2.store.flush();
    await settle();
    const fresh = await sub2.next("publish");
    expect(text(fresh)).toBe("new");
    expect(fresh.messageId).toBe(1);
  });

  test("a retained QoS 2 message sent on SUBSCRIBE to a persistent session waits until its record is durable", async () => {
    const store = new GatedStore();
    const b = await brokerOn(store);
    const pub = b.open(5);
    await b.connect(pub, "pub", 5, { clean: true, properties: {} });
    pub.send({
      cmd: "publish",
      topic: "r/1",
      payload: Buffer.from("kept"),
      qos: 2,
      messageId: 1,
      dup: false,
      retain: true,
    });
    await pub.next("pubrec");
    const sub = b.open(5);
    await b.connect(sub, "sub", 5);
    store.gated = true;
    sub.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "r/#", qos: 2 }] });
    await settle();
    store.flush(1); // the session record: SUBACK goes, and the retained copy is logged for the session
    await settle();
    expect(has(sub, "suback")).toBe(true);
    expect(store.pendingMutations().map((m) => m.op)).toEqual(["append", "delivery-put", "delivery-sent"]);
    expect(publishes(sub)).toHaveLength(0);
    store.flush();
    await settle();
    expect(publishes(sub).map(text)).toContain("kept");
  });
});

/**
 * A receiver that keeps its side of the session across connections, as a conformant
 * client must: QoS 2 by method B, so an id it answered with PUBREC is remembered until
 * PUBREL and a PUBLISH under it is not delivered again [MQTT-4.3.3-9].
 */
class Receiver {
  raw: MemoryClient | undefined;
  readonly delivered = new Map<string, number>();
  readonly awaitingRelease = new Set<number>();

  handle(p: Packet): void {
    const raw = this.raw!;
    if (p.cmd === "publish") {
      const id = p.messageId ?? 0;
      if (p.qos < 2 || !this.awaitingRelease.has(id)) {
        const key = text(p);
        this.delivered.set(key, (this.delivered.get(key) ?? 0) + 1);
      }
      if (p.qos === 2) {
        this.awaitingRelease.add(id);
        raw.send({ cmd: "pubrec", messageId: id });
      } else if (p.qos === 1) raw.send({ cmd: "puback", messageId: id });
    } else if (p.cmd === "pubrel") {
      this.awaitingRelease.delete(p.messageId ?? 0);
      raw.send({ cmd: "pubcomp", messageId: p.messageId ?? 0 });
    }
  }
}

describe("QoS 2 exactly once across crashes at any commit boundary", () => {
  test("random crashes between commits: every acknowledged message arrives, no QoS 2 message twice [MQTT-4.3.3-6] [MQTT-4.4.0-1]", async () => {
    const seed = Number(process.env.FERRY_CRASH_SEED ?? 20261203);
    const rng = prng(seed).next;
    let store = new GatedStore();
    let b = await brokerOn(store, { mqtt: { max_inflight: 8 } });
    const receiver = new Receiver();
    const pending = new Map<number, { payload: string; qos: 1 | 2; released: boolean }>();
    const acked = new Set<string>();
    const sent: Array<{ payload: string; qos: 1 | 2 }> = [];
    let nextId = 1;
    let sub!: MemoryClient;
    let pub!: MemoryClient;

    const pump = (c: MemoryClient, handle: (p: Packet) => void) => {
      // Handle packets as they arrive, in order.
      const take = () => {
        while (c.packets.length > 0) handle(c.packets.shift()!);
      };
      return take;
    };
    const pubHandle = (p: Packet) => {
      const id = "messageId" in p ? p.messageId ?? 0 : 0;
      const m = pending.get(id);
      if (!m) return;
      if (p.cmd === "puback" && m.qos === 1) {
        acked.add(m.payload);
        pending.delete(id);
      } else if (p.cmd === "pubrec" && m.qos === 2) {
        acked.add(m.payload);
        m.released = true;
        pub.send({ cmd: "pubrel", messageId: id });
      } else if (p.cmd === "pubcomp" && m.released) pending.delete(id);
    };
    let takeSub = () => {};
    let takePub = () => {};
    const turn = async () => {
      for (let i = 0; i < 4; i++) {
        await settle(1);
        takeSub();
        takePub();
      }
    };
    const attach = async () => {
      store.gated = false;
      sub = b.open(5);
      await b.connect(sub, "sub", 5);
      receiver.raw = sub;
      takeSub = pump(sub, (p) => receiver.handle(p));
      pub = b.open(5);
      await b.connect(pub, "pub", 5);
      takePub = pump(pub, pubHandle);
      for (const [id, m] of pending) {
        if (m.released) pub.send({ cmd: "pubrel", messageId: id });
        else {pub.send({
            cmd: "publish",
            topic: "t/x",
            payload: Buffer.from(m.payload),
            qos: m.qos,
            messageId: id,
            dup: true,
            retain: false,
          });}
      }
      store.gated = true;
    };

    await attach();
    sub.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "t/#", qos: 2 }] });
    await settle();
    store.flush();
    await sub.next("suback");
    let crashes = 0;
    for (let round = 0; round < 60; round++) {
      const n = 1 + Math.floor(rng() * 6);
      for (let i = 0; i < n && pending.size < 20; i++) {
        const qos = rng() < 0.6 ? 2 : 1;
        const payload = `m${sent.length}`;
        sent.push({ payload, qos });
        const id = nextId++;
        pending.set(id, { payload, qos, released: false });
        pub.send({
          cmd: "publish",
          topic: "t/x",
          payload: Buffer.from(payload),
          qos,
          messageId: id,
          dup: false,
          retain: false,
        });
      }
      await turn();
      // Bookkeeping that waited for a commit to ride on goes on its own (WriteBehind).
      if (rng() < 0.3) await b.clock.advance(10);
      // Some of what is waiting becomes durable, in order.
      store.flush(Math.floor(rng() * (store.pending + 1)));
      await turn();
      if (rng() < 0.12) {
        crashes++;
        sub.close();
        pub.close();
        await settle();
        store = store.crash();
        b = await brokerOn(store, { mqtt: { max_inflight: 8 } });
        await attach();
      }
    }
    // The end: everything becomes durable; the publisher finishes what it has pending.
    store.gated = false;
    for (let i = 0; i < 50 && (pending.size > 0 || store.pending > 0); i++) {
      store.flush();
      await turn();
    }
    for (let i = 0; i < 20; i++) {
      store.flush();
      await turn();
    }
    expect(crashes).toBeGreaterThan(2);
    expect(pending.size).toBe(0);
    for (const m of sent) {
      const n = receiver.delivered.get(m.payload) ?? 0;
      if (acked.has(m.payload)) expect({ m: m.payload, got: n > 0 }).toEqual({ m: m.payload, got: true });
      if (m.qos === 2) expect({ m: m.payload, n: n <= 1 }).toEqual({ m: m.payload, n: true });
    }
    // All were acknowledged in the end, so QoS 2 arrived exactly once.
    expect(acked.size).toBe(sent.length);
  });
});
