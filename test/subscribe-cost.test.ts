/**
 * Linear persistent SUBSCRIBE (issue 13, part 6): what one SUBSCRIBE, UNSUBSCRIBE,
 * connect or disconnect of a persistent session hands the store must not grow with the
 * number of subscriptions the session has. When each SUBSCRIBE rewrote the whole session
 * record, 13,000 SUBSCRIBEs took 151 s and several GB. Counted in bytes of the encoded
 * mutation lists (the form they cross to the storage thread in), not timed.
 */
import { afterEach, describe, expect, test } from "bun:test";
import type { IConnectPacket } from "mqtt-packet";
import { MutationWriter } from "../src/store/mutation-codec.ts";
import type { Mutation } from "../src/store/store.ts";
import { type InProcessBroker, inProcessBroker } from "./helpers/in-process-broker.ts";
import type { MemoryClient } from "./helpers/memory-client.ts";
import { recordCommits } from "./helpers/recorded-commits.ts";

let running: InProcessBroker | undefined;
afterEach(async () => {
  await running?.stop();
  running = undefined;
});

/** Bytes of `lists` as the storage thread receives them: the binary part and its structured-clone side. */
function encodedSize(lists: readonly (readonly Mutation[])[]): number {
  const writer = new MutationWriter();
  for (const list of lists) writer.add(list);
  const encoded = writer.finish();
  return encoded.length + JSON.stringify(encoded.side).length;
}

/** A broker whose store records every list it is given. */
async function countingBroker() {
  running = await inProcessBroker();
  const lists = recordCommits(running.broker.store);
  /** What `action` made the broker hand the store, in bytes. */
  const cost = async (action: () => Promise<unknown>): Promise<number> => {
    lists.length = 0;
    await action();
    return encodedSize(lists);
  };
  return { b: running, cost };
}

const PERSISTENT: Partial<IConnectPacket> = {
  clientId: "many",
  clean: false,
  properties: { sessionExpiryInterval: 3600 },
};

async function subscribe(client: MemoryClient, filter: string, id: number): Promise<void> {
  client.send({ cmd: "subscribe", messageId: id, subscriptions: [{ topic: filter, qos: 1 }] });
  await client.next("suback");
}

async function unsubscribe(client: MemoryClient, filter: string, id: number): Promise<void> {
  client.send({ cmd: "unsubscribe", messageId: id, unsubscriptions: [filter] });
  await client.next("unsuback");
}

describe("a persistent session's SUBSCRIBE costs the same with 10 or 3,000 subscriptions", () => {
  test("SUBSCRIBE and UNSUBSCRIBE write one subscription; connect and disconnect write none", async () => {
    const { b, cost } = await countingBroker();
    // A session with 10 subscriptions and one with 3,000; ids and filters of equal length,
    // so that equal work writes equal bytes.
    const few = await b.connected(5, { ...PERSISTENT, clientId: "few1" });
    let many = await b.connected(5, PERSISTENT);
    const filter = (i: number) => `plant/line-${String(i).padStart(5, "0")}/+`;
    const early: number[] = [];
    let n = 0;
    for (; n < 10; n++) {
      early.push(await cost(() => subscribe(many, filter(n), n + 1)));
      await subscribe(few, filter(n), n + 1);
    }
    for (; n < 3_000; n++) await subscribe(many, filter(n), (n % 60_000) + 1);
    const late = await cost(() => subscribe(many, filter(n), 1));
    expect(early[9]).toBeGreaterThan(0);
    expect(late).toBe(early[9]!);

    expect(await cost(() => unsubscribe(many, filter(2_999), 3))).toBe(
      await cost(() => unsubscribe(few, filter(9), 3)),
    );

    // A disconnect and a resume write the session's own fields, the same for both sessions.
    const leave = (client: MemoryClient) =>
      cost(async () => {
        client.send({ cmd: "disconnect" });
        await client.waitClosed();
        await b.advance(0);
      });
    const leaveFew = await leave(few);
    expect(leaveFew).toBeGreaterThan(0);
    expect(await leave(many)).toBe(leaveFew);
    const resumeFew = await cost(() => b.connected(5, { ...PERSISTENT, clientId: "few1" }));
    expect(await cost(async () => void (many = await b.connected(5, PERSISTENT)))).toBe(resumeFew);
    expect(b.broker.sessions.get("many")!.subscriptions.size).toBe(3_000);
  });
});
