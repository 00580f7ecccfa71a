/** The uplink's cursor rules, on the pure send window (src/sync/send-window.ts). */
import { describe, expect, test } from "bun:test";
import { DONE, INFLIGHT, QUEUED, SendWindow } from "../../src/sync/send-window.ts";
import type { Message } from "../../src/store/store.ts";

const msg = (offset: number, topic = "t"): Message => ({
  offset,
  topic,
  payload: new Uint8Array(0),
  qos: 1,
  retain: false,
  receivedAt: offset,
  origin: "c",
});

const RULE = "rule";
const every = () => RULE;

/** Send everything `peek` offers, returning the entries in send order. */
function sendAll(w: SendWindow<string>, now = 0) {
  const sent = [];
  for (let p = w.peek(); p; p = w.peek()) {
    w.markSent(p, now);
    sent.push(p);
  }
  return sent;
}

describe("send window cursor", () => {
  test("the cursor never passes a message that is not acknowledged, whatever is acknowledged after it", () => {
    const w = new SendWindow<string>(10);
    w.takeBatch([11, 12, 13, 14].map((o) => msg(o)), every);
    const [a, b, c, d] = sendAll(w);
    expect(w.inflight).toBe(4);
    expect(w.settle(b!)).toBe(false);
    expect(w.settle(d!)).toBe(false);
    expect(w.cursor).toBe(10); // 11 is still unacknowledged
    expect(w.settle(a!)).toBe(true);
    expect(w.cursor).toBe(12); // 13 holds it now
    w.settle(c!);
    expect(w.cursor).toBe(14);
    expect(w.inflight).toBe(0);
  });

  test("offsets that do not match any rule and gaps in the log move the cursor", () => {
    const w = new SendWindow<string>(0);
    w.noteLogged(9);
    w.takeBatch([msg(1), msg(2), msg(5)], (m) => (m.offset === 2 ? RULE : undefined));
    w.readThrough(9); // a short read: 6..9 were gaps when the read started
    expect(w.advance()).toBe(true);
    expect(w.cursor).toBe(1); // 2 is queued
    const [p] = sendAll(w);
    w.settle(p!);
    expect(w.cursor).toBe(9);
    expect(w.nextRead).toBe(10);
  });

  test("after a cut, what was in flight is sent again in the same order, before anything queued behind it", () => {
    const w = new SendWindow<string>(0);
    w.takeBatch([1, 2, 3, 4, 5].map((o) => msg(o)), every);
    const first = [w.peek()!, undefined, undefined];
    w.markSent(first[0]!, 0);
    const second = w.peek()!;
    w.markSent(second, 0);
    const third = w.peek()!;
    w.markSent(third, 0);
    w.settle(second); // 2 acknowledged, 1 and 3 were lost with the connection
    w.requeue();
    expect(w.inflight).toBe(0);
    expect(w.queued).toBe(4);
    const again = sendAll(w, 1);
    expect(again.map((p) => p.m.offset)).toEqual([1, 3, 4, 5]);
    expect(again.map((p) => p.sends)).toEqual([2, 2, 1, 1]);
    for (const p of again) w.settle(p);
    expect(w.cursor).toBe(5);
  });

  test("live-first: an entry taken ahead of the reader is sent first and counted once, acknowledged or not when the reader reaches it", () => {
    const w = new SendWindow<string>(0);
    w.noteLogged(2);
    w.takeBatch([msg(1)], every); // backlog
    w.noteLogged(3);
    w.noteLogged(4);
    expect(w.takeLive(msg(3), RULE)).toBe(true);
    expect(w.takeLive(msg(4), RULE)).toBe(true);
    expect(w.takeLive(msg(3), RULE)).toBe(false); // already taken
    expect(w.peek()!.m.offset).toBe(3); // live before backlog
    const live3 = w.peek()!;
    w.markSent(live3, 0);
    const live4 = w.peek()!;
    w.markSent(live4, 0);
    w.settle(live3); // acknowledged before the reader reaches it
    expect(w.cursor).toBe(0); // the backlog below it is not done
    const b1 = w.peek()!;
    expect(b1.m.offset).toBe(1);
    w.markSent(b1, 0);
    w.settle(b1);
    expect(w.cursor).toBe(1);
    // The reader reaches 2..4: 3 is done (skipped, not queued again), 4 is in flight.
    w.takeBatch([msg(2, "other"), msg(3), msg(4)], (m) => (m.topic === "other" ? undefined : RULE));
    expect(w.queued).toBe(0);
    expect(w.inflight).toBe(1);
    w.advance();
    expect(w.cursor).toBe(3); // 4 in flight holds it
    expect(w.peek()).toBeUndefined(); // nothing to send twice
    w.settle(live4);
    expect(w.cursor).toBe(4);
    expect(w.inflight).toBe(0);
  });

  test("live-first entries are forgotten at a cut: the reader finds them in the log, so they are sent once more at most", () => {
    const w = new SendWindow<string>(0);
    w.noteLogged(1);
    w.takeLive(msg(1), RULE);
    const p = w.peek()!;
    w.markSent(p, 0);
    w.requeue();
    expect(w.inflight).toBe(0);
    expect(w.peek()).toBeUndefined();
    w.takeBatch([msg(1)], every);
    const again = w.peek()!;
    expect(again.m.offset).toBe(1);
    w.markSent(again, 0);
    w.settle(again);
    expect(w.cursor).toBe(1);
  });

  test("buffer bound: unread and queued entries below the floor are skipped and reported as one range; in-flight ones are not", () => {
    const w = new SendWindow<string>(0);
    w.takeBatch([1, 2, 3].map((o) => msg(o)), every);
    const p1 = w.peek()!;
    w.markSent(p1, 0);
    for (let o = 4; o <= 10; o++) w.noteLogged(o);
    const skipped = w.enforceBound(4); // keep 7..10
    expect(skipped).toEqual({ from: 2, to: 6, count: 5 });
    expect(p1.state).toBe(INFLIGHT);
    expect(w.nextRead).toBe(7);
    expect(w.cursor).toBe(0); // 1 is still in flight
    w.settle(p1);
    expect(w.cursor).toBe(6);
    expect(w.enforceBound(4)).toBeUndefined();
  });

  test("retry (a quota reply) puts an in-flight entry back before later queued ones", () => {
    const w = new SendWindow<string>(0);
    w.takeBatch([1, 2, 3].map((o) => msg(o)), every);
    const p1 = w.peek()!;
    w.markSent(p1, 0);
    w.retry(p1);
    expect(p1.state).toBe(QUEUED);
    expect(w.inflight).toBe(0);
    expect(w.peek()).toBe(p1);
    const all = sendAll(w);
    expect(all.map((p) => p.m.offset)).toEqual([1, 2, 3]);
    for (const p of all) w.settle(p);
    expect(all.every((p) => p.state === DONE)).toBe(true);
    expect(w.cursor).toBe(3);
  });

  test("an entry settled without being sent (expired at its turn) leaves the counts right", () => {
    const w = new SendWindow<string>(0);
    w.takeBatch([msg(1), msg(2)], every);
    const p = w.peek()!;
    w.settle(p);
    expect(w.queued).toBe(1);
    expect(w.cursor).toBe(1);
    expect(w.peek()!.m.offset).toBe(2);
  });
});
