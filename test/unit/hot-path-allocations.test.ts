/**
 * Pieces that replaced allocating code on the QoS 1 hot path: they must behave exactly as
 * what they replaced (a Map for in-flight messages, the packet-object route for
 * acknowledgements, a fresh string per decoded topic).
 */
import { describe, expect, test } from "bun:test";
import mqttPacket from "mqtt-packet";
import { encodeAck, PacketReader } from "../../src/mqtt/codec.ts";
import { encodeAckFields } from "../../src/mqtt/fast-path.ts";
import type { Packet, ProtocolVersion } from "../../src/mqtt/packets.ts";
import { InflightTable } from "../../src/core/inflight-table.ts";
import { prng as seededRng } from "../helpers/fuzz-packets.ts";

/** mulberry32 from the fuzz helpers: the same sequence for the same seed. */
const prng = (seed: number): () => number => seededRng(seed).next;

describe("InflightTable behaves as a Map of packet ids", () => {
  test("random set/get/has/delete, with the size and insertion-order iteration of a Map", () => {
    const rand = prng(0x1f11e);
    const table = new InflightTable<string>();
    const map = new Map<number, string>();
    for (let step = 0; step < 50_000; step++) {
      const r = rand();
      // Mostly a small window of ids (collisions, probe runs, wrap-around), sometimes any id.
      const id = r < 0.9 ? 1 + Math.floor(rand() * 200) : 1 + Math.floor(rand() * 65535);
      const op = rand();
      if (op < 0.45) {
        const v = `v${step}`;
        table.set(id, v);
        map.set(id, v);
      } else if (op < 0.9) {
        expect(table.delete(id)).toBe(map.delete(id));
      } else {
        expect(table.get(id)).toBe(map.get(id));
        expect(table.has(id)).toBe(map.has(id));
      }
      expect(table.size).toBe(map.size);
      if (step % 997 === 0) {
        expect([...table]).toEqual([...map]);
        expect([...table.values()]).toEqual([...map.values()]);
        expect([...table.keys()]).toEqual([...map.keys()]);
      }
    }
    expect([...table.entries()]).toEqual([...map.entries()]);
  });

  test("grows past its first size and keeps every entry; deleting while iterating is safe", () => {
    const table = new InflightTable<number>();
    for (let id = 1; id <= 5000; id++) table.set(id, id * 2);
    expect(table.size).toBe(5000);
    for (let id = 1; id <= 5000; id++) expect(table.get(id)).toBe(id * 2);
    for (const [id] of table) if (id % 2 === 0) table.delete(id);
    expect(table.size).toBe(2500);
    expect([...table.keys()].slice(0, 3)).toEqual([1, 3, 5]);
    expect(table.get(65535)).toBeUndefined();
  });

  test("packet ids outside 1..65535 are refused", () => {
    const table = new InflightTable<number>();
    expect(() => table.set(0, 1)).toThrow(RangeError);
    expect(() => table.set(65536, 1)).toThrow(RangeError);
  });
});

describe("acknowledgements encoded from their fields", () => {
  const cmds = ["puback", "pubrec", "pubrel", "pubcomp"] as const;
  test("the bytes mqtt-packet.generate makes, every version, reason codes with and without meaning", () => {
    for (const version of [3, 4, 5] as ProtocolVersion[]) {
      for (const cmd of cmds) {
        for (const id of [1, 2, 255, 256, 4660, 65535]) {
          for (const code of [0x00, 0x10, 0x80, 0x87, 0x92, 0x97]) {
            const packet =
              (version === 5 ? { cmd, messageId: id, reasonCode: code } : { cmd, messageId: id }) as Packet;
            const expected = new Uint8Array(
              mqttPacket.generate(packet as mqttPacket.Packet, { protocolVersion: version }),
            );
            expect(new Uint8Array(encodeAckFields(cmd, id, code, version)!)).toEqual(expected);
            expect(new Uint8Array(encodeAck(cmd, id, code, version))).toEqual(expected);
          }
        }
      }
    }
  });

  test("ids it cannot encode are left to the general encoder", () => {
    expect(encodeAckFields("puback", 70000, 0, 4)).toBeUndefined();
    expect(encodeAckFields("puback", 1, 300, 5)).toBeUndefined();
  });
});

describe("decoded topics", () => {
  test("a repeated topic decodes to the same text, also after other topics and when the chunk is reused", () => {
    const reader = new PacketReader(1 << 20);
    const topics = ["a/b", "a/c", "a/c", "é/ü", "é/ü", "a/b", "x".repeat(300), "x".repeat(300), "a/b"];
    const chunk = Buffer.alloc(4096);
    for (const topic of topics) {
      const bytes = mqttPacket.generate({
        cmd: "publish",
        topic,
        payload: Buffer.from("p"),
        qos: 0,
        retain: false,
        dup: false,
      });
      // The same memory for every packet, as a socket's read buffer may be.
      bytes.copy(chunk, 0);
      const [packet] = reader.push(chunk.subarray(0, bytes.byteLength));
      expect(packet).toMatchObject({ cmd: "publish", topic });
      chunk.fill(0x61);
    }
  });
});
