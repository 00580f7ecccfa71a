import { describe, expect, test } from "bun:test";
import { decodeMessagePage, encodeMessagePage } from "../../src/store/message-page-codec.ts";
import type { Message } from "../../src/store/store.ts";

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

/** What a transfer across a thread gives back. */
const crossThread = <T>(value: T): T => structuredClone(value);

describe("message page codec (the storage thread's answer to reads)", () => {
  test("messages round-trip in order with every optional field, strings shared by many messages", () => {
    const messages: Message[] = [
      message(),
      message({
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
      message({ offset: 44, qos: 0, expiresAt: 5 }),
      ...Array.from(
        { length: 300 },
        (_, i) => message({ offset: 100 + i, topic: `bench/${i % 7}`, origin: i % 2 ? "a" : "b" }),
      ),
    ];
    const page = encodeMessagePage(messages);
    expect(decodeMessagePage(crossThread(page))).toEqual(messages);
  });

  test("an empty page", () => {
    expect(decodeMessagePage(crossThread(encodeMessagePage([])))).toEqual([]);
  });

  test("each distinct string is written once per page", () => {
    const many = Array.from({ length: 1000 }, (_, i) => message({ offset: i, topic: `bench/${i % 10}` }));
    const page = encodeMessagePage(many);
    const text = new TextDecoder("latin1").decode(new Uint8Array(page.buffer, 0, page.length));
    expect(text.split("bench/3").length - 1).toBe(1);
    expect(text.split("sensor-7").length - 1).toBe(1);
  });

  test("payloads are views of the page, each with only its own bytes; a view into a larger buffer is written as its bytes", () => {
    const big = new Uint8Array(1000).map((_, i) => i & 0xff);
    const large = new Uint8Array(3 * 1024 * 1024).fill(0xab);
    const page = encodeMessagePage([
      message({ payload: big.subarray(100, 164) }),
      message({ offset: 43, payload: large }),
    ]);
    const [a, b] = decodeMessagePage(page);
    expect(a!.payload).toEqual(big.subarray(100, 164));
    expect(a!.payload.buffer).toBe(page.buffer);
    expect(b!.payload).toEqual(large);
  });

  test("strings whose UTF-8 is longer than their length in code units still fit", () => {
    const topics = Array.from({ length: 50 }, (_, i) => `☁`.repeat(100) + i);
    const messages = topics.map((topic, i) =>
      message({ offset: i, topic, origin: "😀".repeat(50), payload: new Uint8Array(0) })
    );
    expect(decodeMessagePage(encodeMessagePage(messages))).toEqual(messages);
  });

  test("a damaged page is refused, not misread", () => {
    const page = encodeMessagePage([message(), message({ offset: 43 })]);
    new DataView(page.buffer).setUint32(8 + 17, 9, true); // the first message's topic index
    expect(() => decodeMessagePage(page)).toThrow(/damaged/);
    const short = encodeMessagePage([message()]);
    expect(() => decodeMessagePage({ ...short, length: short.length + 1 })).toThrow();
  });
});
