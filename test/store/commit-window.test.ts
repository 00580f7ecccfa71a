/**
 * The commit window's decisions on Bun's fake timers (setTimeout, Date.now and
 * performance.now move only when told): what waits, for how long, and when waiting stops
 * because it gathers nothing.
 */
import { afterEach, beforeEach, describe, expect, jest, test } from "bun:test";
import { CommitWindow, EARLY_COMMIT_LISTS } from "../../src/store/sqlite/commit-window.ts";

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
    expect(w.admit(1)).toBe(false); // no commit yet, so no window: it goes on the next turn
    w.sent(1);
    expect(w.admit(1)).toBe(true);
    jest.advanceTimersByTime(49);
    expect(ended).toBe(0);
    jest.advanceTimersByTime(1);
    expect(ended).toBe(1);
    expect(w.admit(2)).toBe(false); // the window is over: the next commit goes at once
  });

  test(`${EARLY_COMMIT_LISTS} lists waiting go without waiting out the window`, () => {
    const w = new CommitWindow(50, () => {});
    w.sent(1);
    for (let n = 1; n < EARLY_COMMIT_LISTS; n++) expect(w.admit(n)).toBe(true);
    expect(w.admit(EARLY_COMMIT_LISTS)).toBe(false);
    expect(w.holds(EARLY_COMMIT_LISTS)).toBe(false);
  });

  test("a client that waits for each ack gets one list per window: the window stops being used, and is tried again a second later", () => {
    let ended = 0;
    const w = new CommitWindow(50, () => ended++);
    w.sent(1);
    let held = 0;
    // Each round: its one list waits for the window (or not), then commits alone.
    for (let round = 0; round < 10; round++) {
      if (w.admit(1)) {
        held++;
        jest.advanceTimersByTime(50);
      }
      w.sent(1);
    }
    expect(held).toBeLessThanOrEqual(3);
    expect(w.admit(1)).toBe(false);
    jest.advanceTimersByTime(1000);
    w.sent(1);
    expect(w.admit(1)).toBe(true); // the probe
  });

  test("a window that gathers company stays in use", () => {
    const w = new CommitWindow(50, () => {});
    w.sent(1);
    for (let round = 0; round < 20; round++) {
      // Ten lists spread over the window, as from many devices at a steady rate.
      for (let i = 1; i <= 10; i++) {
        expect(w.admit(i)).toBe(true);
        jest.advanceTimersByTime(4);
      }
      jest.advanceTimersByTime(10);
      w.sent(10);
    }
  });

  test("a burst that stops ends the window early; steady arrivals keep it open", () => {
    let ended = 0;
    const w = new CommitWindow(50, () => ended++);
    w.sent(1);
    // Ten lists at once (a client refilling its window of 10 as its acks come), then nothing.
    for (let i = 1; i <= 10; i++) w.admit(i);
    jest.advanceTimersByTime(1);
    expect(ended).toBe(1);

    w.sent(10);
    // One list every 5 ms (one device at 200 msg/s): quiet for less than four gaps at a time.
    for (let i = 1; i <= 9; i++) {
      expect(w.admit(i)).toBe(true);
      jest.advanceTimersByTime(5);
    }
    expect(ended).toBe(1);
    jest.advanceTimersByTime(5);
    expect(ended).toBe(2); // the window's own end, at 50 ms
  });
});
