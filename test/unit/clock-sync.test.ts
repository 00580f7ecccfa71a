/** ferry-clock: how Ferry learns whether the clock is synchronised, and which messages it applies to. */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ClockMarks, SYNCED_SINCE, UNKNOWN_SINCE, UNSYNCED_SINCE } from "../../src/sync/clock-marks.ts";
import { FLOOR_MS, probeClock } from "../../src/sync/clock-probe.ts";

const read = (p: string) => readFile(p).then((b) => new Uint8Array(b));

describe("clock probe", () => {
  test("timesyncd's synchronized file means synced; timesyncd without it unsynced; neither unknown; a 1970 clock unsynced", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ferry-clock-"));
    try {
      const files = { synced: join(dir, "synchronized"), timesyncd: join(dir, "clock") };
      const now = FLOOR_MS + 1000;
      expect(await probeClock(now, read, files)).toBe("unknown");
      writeFileSync(files.timesyncd, "");
      expect(await probeClock(now, read, files)).toBe("unsynced");
      writeFileSync(files.synced, "");
      expect(await probeClock(now, read, files)).toBe("synced");
      expect(await probeClock(0, read, files)).toBe("unsynced"); // the clock says 1970
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("clock marks by log offset", () => {
  test("each message gets the state seen when it arrived; before any change, unknown", () => {
    const m = new ClockMarks({});
    expect(m.at(5)).toBe("unknown");
    expect(m.observe("unsynced", 10)).toEqual({ [UNSYNCED_SINCE]: 10 });
    expect(m.observe("unsynced", 12)).toBeUndefined();
    expect(m.observe("synced", 20)).toEqual({ [SYNCED_SINCE]: 20 });
    expect([m.at(9), m.at(10), m.at(19), m.at(20), m.at(1000)]).toEqual([
      "unknown",
      "unsynced",
      "unsynced",
      "synced",
      "synced",
    ]);
    expect(m.observe("unknown", 30)).toEqual({ [UNKNOWN_SINCE]: 30 });
    expect([m.at(25), m.at(30)]).toEqual(["synced", "unknown"]);
  });

  test("saved marks judge a backlog from an earlier run; a new run's change never makes an old message 'synced'", () => {
    const m = new ClockMarks({ [SYNCED_SINCE]: 100 });
    expect(m.at(150)).toBe("synced");
    m.observe("unsynced", 500); // rebooted without NTP
    expect([m.at(150), m.at(600)]).toEqual(["synced", "unsynced"]);
    m.observe("synced", 700);
    // The earlier synced range is forgotten (only the latest of each kind is kept): unknown, not a guess.
    expect([m.at(150), m.at(600), m.at(800)]).toEqual(["unknown", "unsynced", "synced"]);
  });

  test("a start that finds the state the saved marks already give records nothing; a different one is recorded", () => {
    expect(new ClockMarks({}).observe("unknown", 0)).toBeUndefined(); // a new log: unknown is the default
    const kept = new ClockMarks({ [SYNCED_SINCE]: 100, [UNSYNCED_SINCE]: 40 });
    expect(kept.observe("synced", 500)).toBeUndefined();
    expect(kept.at(150)).toBe("synced"); // the earlier start of the synced range is kept
    expect(kept.observe("unsynced", 600)).toEqual({ [UNSYNCED_SINCE]: 600 }); // later changes are recorded
    const changed = new ClockMarks({ [SYNCED_SINCE]: 100, [UNSYNCED_SINCE]: 200 });
    expect(changed.observe("synced", 500)).toEqual({ [SYNCED_SINCE]: 500 });
    expect([changed.at(150), changed.at(300), changed.at(500)]).toEqual(["unknown", "unsynced", "synced"]);
  });
});
