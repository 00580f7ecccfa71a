/**
 * Which writes of a batch a later write of the same delivery makes unnecessary
 * (src/store/sqlite/completed-deliveries.ts): pure logic over mutation lists.
 */
import { describe, expect, test } from "bun:test";
import { undoneInBatch } from "../../src/store/sqlite/completed-deliveries.ts";
import type { Mutation } from "../../src/store/store.ts";

const sent = (clientId: string, offset: number): Mutation => ({ op: "delivery-sent", clientId, offset, packetId: 7 });
const pubrel = (clientId: string, offset: number): Mutation => ({
  op: "delivery-pubrel",
  clientId,
  offset,
  packetId: 7,
});
const done = (clientId: string, offset: number): Mutation => ({ op: "delivery-delete-offset", clientId, offset });
const batch = (...lists: Mutation[][]) => lists.map((mutations) => ({ mutations }));

describe("undoneInBatch", () => {
  test("a 'sent' mark followed by the same delivery's 'pubrel' phase is skipped; the phase is kept", () => {
    const s = sent("c", 5);
    const r = pubrel("c", 5);
    expect([...(undoneInBatch(batch([s, sent("c", 6)], [r])) ?? [])]).toEqual([s]);
  });

  test("a 'sent' mark after the 'pubrel' phase, or for another client or offset, is written", () => {
    expect(undoneInBatch(batch([pubrel("c", 5)], [sent("c", 5)]))).toBeUndefined();
    expect(undoneInBatch(batch([sent("d", 5), sent("c", 6)], [pubrel("c", 5)]))).toBeUndefined();
  });

  test("a deletion undoes the delivery's earlier 'sent' mark and 'pubrel' phase", () => {
    const s = sent("c", 5);
    const r = pubrel("c", 5);
    expect(new Set(undoneInBatch(batch([s], [r], [done("c", 5)])))).toEqual(new Set([s, r]));
  });
});
