/**
 * What subscriptions cost in memory (issue 13: a persistent session that sends 20,000
 * SUBSCRIBEs): the objects each subscription leaves in the heap, counted after a full
 * collection and the same per subscription at 1,000 as at 5,000; and the store writes of a
 * read full of SUBSCRIBEs, one list per read rather than one commit (with its promise and
 * callbacks) per SUBSCRIBE, in the order the packets came. Counted, not timed.
 */
import { heapStats } from "bun:jsc";
import { afterEach, describe, expect, test } from "bun:test";
import mqttPacket, { type IConnectPacket, type Packet } from "mqtt-packet";
import type { Mutation } from "../src/store/store.ts";
import { type InProcessBroker, inProcessBroker } from "./helpers/in-process-broker.ts";
import type { MemoryClient } from "./helpers/memory-client.ts";
import { recordCommits } from "./helpers/recorded-commits.ts";

let running: InProcessBroker | undefined;
afterEach(async () => {
  await running?.stop();
  running = undefined;
});

const PERSISTENT: Partial<IConnectPacket> = {
  clientId: "many",
  clean: false,
  properties: { sessionExpiryInterval: 3600 },
};

/** `n` SUBSCRIBEs of one filter each (`<prefix>/<i>/+`), as the bytes of one write. */
function subscribes(n: number, prefix: string, firstId = 1): Uint8Array {
  const frames: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    frames.push(mqttPacket.generate({
      cmd: "subscribe",
      messageId: firstId + i,
      subscriptions: [{ topic: `${prefix}/${i}/+`, qos: 1, nl: false, rap: false, rh: 0 }],
    }, { protocolVersion: 5 }));
  }
  return Buffer.concat(frames);
}

/** Wait until `client` has `n` SUBACKs; returns their packet ids in arrival order. */
async function subacks(client: MemoryClient, n: number): Promise<number[]> {
  const ids: number[] = [];
  while (ids.length < n) ids.push((await client.next("suback")).messageId ?? 0);
  return ids;
}

/** Live objects by type after full collections. */
function liveObjects(): Record<string, number> {
  for (let i = 0; i < 3; i++) Bun.gc(true);
  return heapStats().objectTypeCounts;
}

describe("a subscription's memory", () => {
  test("each subscription is one object plus its topic-tree levels, the same per subscription at 1,000 as at 5,000", async () => {
    running = await inProcessBroker();
    // A session that ends with its connection: nothing of its subscriptions goes to the store.
    const client = await running.connected(5, { clientId: "heap" });
    const perSubscription = async (n: number, prefix: string): Promise<{ objects: number; all: number }> => {
      const before = liveObjects();
      client.sendBytes(subscribes(n, prefix));
      await subacks(client, n);
      client.packets.length = 0;
      client.received.length = 0; // the test client keeps every chunk it got
      const after = liveObjects();
      const all = Object.keys(after).reduce((sum, t) => sum + (after[t]! - (before[t] ?? 0)), 0);
      return { objects: ((after.Object ?? 0) - (before.Object ?? 0)) / n, all: all / n };
    };
    // The first SUBSCRIBEs also compile code and make the shared levels: not counted.
    await perSubscription(200, "warm");
    const few = await perSubscription(1_000, "few");
    const many = await perSubscription(5_000, "many");
    expect(running.broker.sessions.get("heap")!.subscriptions.size).toBe(6_200);
    // `many/<i>/+` below the shared `many` level: the subscription and two levels (`<i>` and
    // `+`), nothing per subscription for the session's list or the routing entry (a record
    // per routing entry, and a Map entry per session, made it 4 objects and two Maps).
    expect(many.objects).toBeLessThanOrEqual(3.05);
    // The filter string and the level's name besides.
    expect(many.all).toBeLessThanOrEqual(5.1);
    // The same per subscription at 1,000 and 5,000, but for a few hundred objects of noise.
    expect(few.objects).toBeLessThanOrEqual(3.2);
    expect(few.all).toBeLessThanOrEqual(5.4);
  });
});

describe("a read full of SUBSCRIBEs of a persistent session", () => {
  /** A broker whose store records every list it is given. */
  async function recordingBroker(): Promise<{ b: InProcessBroker; lists: Mutation[][] }> {
    running = await inProcessBroker();
    return { b: running, lists: recordCommits(running.broker.store) };
  }

  test("hands the store one list for the whole read, every SUBACK after it, in packet order", async () => {
    const { b, lists } = await recordingBroker();
    const client = await b.connected(5, PERSISTENT);
    lists.length = 0;
    client.sendBytes(subscribes(2_000, "s"));
    const ids = await subacks(client, 2_000);
    expect(ids).toEqual(Array.from({ length: 2_000 }, (_, i) => i + 1));
    // One commit, every subscription in it in order (one per SUBSCRIBE made 2,000 commits).
    expect(lists.length).toBe(1);
    expect(lists[0]!.map((m) => m.op === "subscription-put" ? m.subscription.filter : m.op)).toEqual(
      Array.from({ length: 2_000 }, (_, i) => `s/${i}/+`),
    );
    // And they are the session's for good: a resumed session has them.
    client.send({ cmd: "disconnect" });
    await client.waitClosed();
    const again = await b.connected(5, PERSISTENT);
    again.send({ cmd: "publish", topic: "s/1999/x", payload: Buffer.from("hi"), qos: 1, messageId: 7 } as Packet);
    const got = await again.next("publish");
    expect(got.topic).toBe("s/1999/x");
  });

  test("commits its subscriptions before what the next packet of the read writes", async () => {
    const { b, lists } = await recordingBroker();
    const client = await b.connected(5, PERSISTENT);
    lists.length = 0;
    const publish = mqttPacket.generate({
      cmd: "publish",
      topic: "s/1/x",
      payload: Buffer.from("m"),
      qos: 1,
      messageId: 99,
      dup: false,
      retain: false,
    }, { protocolVersion: 5 });
    client.sendBytes(Buffer.concat([subscribes(3, "s"), publish, subscribes(2, "t", 10)]));
    await subacks(client, 5);
    await client.next("puback");
    const ops = lists.map((list) => list.map((m) => m.op === "subscription-put" ? m.subscription.filter : m.op));
    // The three SUBSCRIBEs before the PUBLISH are one list ahead of the message (so the
    // subscriber's delivery record follows its subscription), the two after it another.
    expect(ops[0]).toEqual(["s/0/+", "s/1/+", "s/2/+"]);
    expect(ops[1]![0]).toBe("append");
    expect(ops.at(-1)).toEqual(["t/0/+", "t/1/+"]);
  });
  test("retained messages follow their own SUBACK, by Retain Handling, within a batch [MQTT-3.3.1-9..11]", async () => {
    const { b } = await recordingBroker();
    const pub = await b.connected(5, { clientId: "retainer" });
    pub.send(
      { cmd: "publish", topic: "r/1", payload: Buffer.from("kept"), qos: 1, messageId: 1, retain: true } as Packet,
    );
    await pub.next("puback");
    const client = await b.connected(5, PERSISTENT);
    const sub = (messageId: number, topic: string, rh: number) =>
      mqttPacket.generate({
        cmd: "subscribe",
        messageId,
        subscriptions: [{ topic, qos: 1, nl: false, rap: false, rh }],
      }, { protocolVersion: 5 });
    client.received.length = 0;
    // New (RH 0: sent), the same filter again with RH 1 (not new: none), RH 2 (never).
    client.sendBytes(Buffer.concat([sub(1, "r/#", 0), sub(2, "r/#", 1), sub(3, "r/+", 2), sub(4, "r/1", 1)]));
    await subacks(client, 4);
    await client.next("publish");
    await client.roundTrip();
    // In arrival order: SUBACK 1, its retained message, SUBACK 2, 3, 4, the retained message of 4.
    const seen: string[] = [];
    const parser = mqttPacket.parser({ protocolVersion: 5 });
    parser.on("packet", (p: Packet) => seen.push(p.cmd === "suback" ? `suback ${p.messageId}` : p.cmd));
    for (const chunk of client.received) parser.parse(Buffer.from(chunk));
    expect(seen).toEqual(["suback 1", "publish", "suback 2", "suback 3", "suback 4", "publish", "pingresp"]);
  });
});
