import { describe, expect, test } from "bun:test";
import { decodeMutationLists, MutationWriter } from "../../src/store/mutation-codec.ts";
import type { Message, Mutation } from "../../src/store/store.ts";

const message = (over: Partial<Message> = {}): Message => ({
  offset: 42,
  topic: "plant/line-1/temp",
  payload: new Uint8Array([1, 2, 3]),
  qos: 1,
  retain: false,
  receivedAt: 1_763_856_000_123,
  origin: "sensor-7",
  ...over,
});

/** Every mutation kind, with and without each optional field. */
const lists: Mutation[][] = [
  [{ op: "append", message: message() }],
  [
    {
      op: "append",
      message: message({
        offset: 2 ** 40 + 3,
        topic: "ünïcødé/☁/😀",
        origin: "",
        payload: new Uint8Array(0),
        qos: 2,
        retain: true,
        expiresAt: 1_763_856_999_000,
        properties: {
          contentType: "text/plain",
          correlationData: new Uint8Array([9, 8]),
          userProperties: { a: "1", b: ["x", "y"] },
          payloadFormatIndicator: true,
          responseTopic: "r/t",
        },
      }),
    },
    { op: "delivery-put", delivery: { clientId: "c1", offset: 42, qos: 1, retain: false, phase: "queued" } },
  ],
  [
    {
      op: "delivery-put",
      delivery: {
        clientId: "ç2",
        offset: 7,
        qos: 2,
        retain: true,
        phase: "pubrel",
        packetId: 65535,
        subscriptionIds: [1, 268435455],
      },
    },
    { op: "delivery-sent", clientId: "c1", offset: 42, packetId: 1 },
    { op: "delivery-pubrel", clientId: "c1", offset: 2 ** 40 + 3, packetId: 65535 },
    { op: "delivery-delete-offset", clientId: "c1", offset: 43 },
    { op: "qos2-in-put", clientId: "c1", packetId: 4 },
    { op: "qos2-in-delete", clientId: "c1", packetId: 5 },
    { op: "cursor-put", name: "uplink/☁", offset: 99 },
  ],
  [],
  [
    { op: "retain", topic: "r", message: message({ retain: true }) },
    { op: "retain", topic: "r", message: null },
    {
      op: "session-put",
      session: { clientId: "c1", expiryInterval: 60, protocolVersion: 5, subscriptions: [] },
    },
    { op: "session-delete", clientId: "c1" },
    { op: "cursor-delete", name: "uplink" },
    { op: "session-update", session: { clientId: "c1", expiryInterval: 5, protocolVersion: 4, owner: null } },
    {
      op: "retained-copy",
      topic: "r",
      offset: 77,
      delivery: { clientId: "c1", offset: 77, qos: 1, retain: true, phase: "queued" },
    },
  ],
  [
    {
      op: "subscription-put",
      clientId: "c1",
      subscription: { filter: "a/+/ü", qos: 2, noLocal: true, retainAsPublished: false, retainHandling: 2 },
    },
    {
      op: "subscription-put",
      clientId: "ç2",
      subscription: {
        filter: "$share/g/#",
        qos: 0,
        noLocal: false,
        retainAsPublished: true,
        retainHandling: 1,
        subscriptionId: 268435455,
      },
    },
    { op: "subscription-delete", clientId: "c1", filter: "a/+/ü" },
  ],
];

/** What a structured clone across a thread gives back. */
const crossThread = <T>(value: T): T => structuredClone(value);

describe("mutation codec", () => {
  test("every mutation kind round-trips, lists kept apart and in order", () => {
    const writer = new MutationWriter(8); // tiny, so the buffer has to grow
    for (const list of lists) writer.add(list);
    const encoded = writer.finish();
    expect(encoded.lists).toBe(lists.length);
    expect(decodeMutationLists(crossThread(encoded))).toEqual(lists);
  });

  test("a payload that is a view into a larger buffer carries only its own bytes", () => {
    const big = new Uint8Array(1000).map((_, i) => i & 0xff);
    const writer = new MutationWriter();
    writer.add([{ op: "append", message: message({ payload: big.subarray(100, 164) }) }]);
    const [[m]] = decodeMutationLists(writer.finish()) as [[Extract<Mutation, { op: "append" }>]];
    expect(m.message.payload).toEqual(big.subarray(100, 164));
    expect(m.message.payload.byteLength).toBe(64);
  });

  test("a large payload grows the buffer", () => {
    const payload = new Uint8Array(3 * 1024 * 1024).fill(0xab);
    const writer = new MutationWriter(16);
    writer.add([{ op: "append", message: message({ payload }) }]);
    writer.add([{ op: "cursor-put", name: "u", offset: 1 }]);
    const decoded = decodeMutationLists(writer.finish());
    expect((decoded[0]![0] as Extract<Mutation, { op: "append" }>).message.payload).toEqual(payload);
    expect(decoded[1]).toEqual([{ op: "cursor-put", name: "u", offset: 1 }]);
  });

  test("a damaged buffer is refused, not misread", () => {
    const writer = new MutationWriter();
    writer.add([{ op: "cursor-put", name: "u", offset: 1 }]);
    const encoded = writer.finish();
    new Uint8Array(encoded.buffer)[4] = 200; // the first mutation's tag
    expect(() => decodeMutationLists(encoded)).toThrow(/unknown tag 200/);
  });
});
