/**
 * The commit window's decisions on Bun's fake timers (setTimeout, Date.now and
 * performance.now move only when told): what waits, for how long, and when waiting stops
 * because it gathers nothing.
 */
import { afterEach, beforeEach, describe, expect, jest, test } from "bun:test";
import { CommitWindow, EARLY_COMMIT_LISTS, isBookkeeping } from "../../src/store/sqlite/commit-window.ts";

beforeEach(() => {
  jest.useFakeTimers();
});
afterEach(() => {
  jest.useRealTimers();
});

describe("commit window", () => {
  test("lists arriving within the window after a commit wait for its end; a commit arriving later does not wait", () => {
    let ended = 0;
    const w = new CommitWindow(50, () => ended++);
    expect(w.admit()).toBe(false); // no commit yet, so no window: it goes on the next turn
    w.sent();
    expect(w.admit()).toBe(true);
    jest.advanceTimersByTime(49);
    expect(ended).toBe(0);
    jest.advanceTimersByTime(1);
    expect(ended).toBe(1);
    expect(w.admit()).toBe(false); // the window is over: the next commit goes at once
  });

  test(`${EARLY_COMMIT_LISTS} lists waiting go without waiting out the window`, () => {
    const w = new CommitWindow(50, () => {});
    w.sent();
    for (let n = 1; n < EARLY_COMMIT_LISTS; n++) expect(w.admit()).toBe(true);
    expect(w.admit()).toBe(false);
    expect(w.holds()).toBe(false);
  });

  test("a client that waits for each ack gets one list per window: the window stops being used, and is tried again a second later", () => {
    let ended = 0;
    const w = new CommitWindow(50, () => ended++);
    w.sent();
    let held = 0;
    // Each round: its one list waits for the window (or not), then commits alone.
    for (let round = 0; round < 10; round++) {
      if (w.admit()) {
        held++;
        jest.advanceTimersByTime(50);
      }
      w.sent();
    }
    expect(held).toBeLessThanOrEqual(3);
    expect(w.admit()).toBe(false);
    jest.advanceTimersByTime(1000);
    w.sent();
    expect(w.admit()).toBe(true); // the probe
  });

  test("a window that gathers company stays in use", () => {
    const w = new CommitWindow(50, () => {});
    w.sent();
    for (let round = 0; round < 20; round++) {
      // Ten lists spread over the window, as from many devices at a steady rate.
      for (let i = 1; i <= 10; i++) {
        expect(w.admit()).toBe(true);
        jest.advanceTimersByTime(4);
      }
      jest.advanceTimersByTime(10);
      w.sent();
    }
  });

  test("a burst that stops ends the window early; steady arrivals keep it open", () => {
    let ended = 0;
    const w = new CommitWindow(50, () => ended++);
    w.sent();
    // Ten lists at once (a client refilling its window of 10 as its acks come), then nothing.
    for (let i = 1; i <= 10; i++) w.admit();
    jest.advanceTimersByTime(1);
    expect(ended).toBe(1);

    w.sent();
    // One list every 5 ms (one device at 200 msg/s): never quiet for long against its gaps.
    for (let i = 1; i <= 9; i++) {
      expect(w.admit()).toBe(true);
      jest.advanceTimersByTime(5);
    }
    expect(ended).toBe(1);
    jest.advanceTimersByTime(5);
    expect(ended).toBe(2); // the window's own end, at 50 ms
  });

  test("independent devices (random gaps) rarely end a window early; a burst with gaps of tens of µs still ends it within 2 ms", () => {
    // 200 devices at 1 msg/s each at random phases: the gaps between their lists are about
    // exponential with a mean of 5 ms. A quiet of a few mean gaps comes by chance; ending the
    // window on it made 17 commits a second where a 100 ms window allows 10.
    let seed = 12345;
    const random = (): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return (seed + 0.5) / 2147483648;
    };
    let ended = 0;
    let early = 0;
    const w = new CommitWindow(100, () => ended++);
    const windows = 200;
    for (let round = 0; round < windows; round++) {
      w.sent();
      let elapsed = 0;
      while (ended === round) {
        const gap = -5 * Math.log(random());
        if (elapsed + gap >= 100) {
          jest.advanceTimersByTime(100 - elapsed + 0.01);
          break;
        }
        jest.advanceTimersByTime(gap);
        elapsed += gap;
        if (ended === round) w.admit();
        else early++;
      }
      expect(ended).toBe(round + 1);
    }
    // At 4 gaps (the rule before) 53 % of these windows ended early; at 10, 14 %.
    expect(early / windows).toBeLessThan(0.2);

    // Ten lists 0.05 ms apart, then nothing: a client refilling its window as its acks come.
    w.sent();
    for (let i = 1; i <= 10; i++) {
      w.admit();
      jest.advanceTimersByTime(0.05);
    }
    jest.advanceTimersByTime(1.6);
    expect(ended).toBe(windows + 1);
  });

  test("a few clients that each wait for their ack, answering a commit 0.3 ms apart, wait at most about 3 ms more", () => {
    // Each such client waits out the idle rule's k gaps every cycle: at k = 20 two of them lost
    // a fifth of their rate (BENCHMARKS.md, the idle rule's k).
    let ended = 0;
    const w = new CommitWindow(100, () => ended++);
    w.sent();
    w.admit();
    jest.advanceTimersByTime(0.3);
    w.admit();
    jest.advanceTimersByTime(2.9);
    expect(ended).toBe(0);
    jest.advanceTimersByTime(0.2);
    expect(ended).toBe(1);
  });

  test("bookkeeping lists wait for a running window but are not company: a publish and its bookkeeping in one turn keep the window open", () => {
    let ended = 0;
    const w = new CommitWindow(50, () => ended++);
    expect(w.admit(true)).toBe(false); // no window yet
    w.sent();
    // One device at 200 msg/s to a persistent subscriber: each publish's list comes in the same
    // turn as the bookkeeping of the one before (its "sent" mark and its deletion).
    for (let round = 0; round < 20; round++) {
      for (let i = 0; i < 9; i++) {
        expect(w.admit(true)).toBe(true);
        expect(w.admit()).toBe(true);
        jest.advanceTimersByTime(5);
      }
      expect(ended).toBe(round);
      jest.advanceTimersByTime(5);
      expect(ended).toBe(round + 1); // the window's own end, at 50 ms, not the idle rule's
      w.sent();
    }
    // Many bookkeeping lists do not end the window early.
    for (let i = 0; i < 2 * EARLY_COMMIT_LISTS; i++) expect(w.admit(true)).toBe(true);
    expect(w.holds()).toBe(true);
  });

  test("a client that waits for each ack gets no window even with a bookkeeping list beside each publish", () => {
    const w = new CommitWindow(50, () => {});
    w.sent();
    let held = 0;
    for (let round = 0; round < 10; round++) {
      w.admit(true);
      if (w.admit()) {
        held++;
        jest.advanceTimersByTime(50);
      }
      w.sent();
    }
    expect(held).toBeLessThanOrEqual(3);
  });

  test("only lists of delivery-sent and delivery-delete-offset mutations are bookkeeping", () => {
    const sent = { op: "delivery-sent", clientId: "c", offset: 1, packetId: 1 } as const;
    const del = { op: "delivery-delete-offset", clientId: "c", offset: 1 } as const;
    expect(isBookkeeping([sent, del])).toBe(true);
    expect(isBookkeeping([del])).toBe(true);
    expect(isBookkeeping([])).toBe(false);
    expect(isBookkeeping([del, { op: "delivery-pubrel", clientId: "c", offset: 1, packetId: 1 }])).toBe(false);
    expect(isBookkeeping([{ op: "qos2-in-delete", clientId: "c", packetId: 1 }])).toBe(false);
  });
});
