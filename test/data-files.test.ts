/**
 * The data directory and the database files are private to Ferry's user whatever the
 * umask, as Mosquitto's persistence file is: messages, sessions and client ids are in them.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startBroker } from "./helpers/broker.ts";
import { connect } from "./helpers/clients.ts";

const root = mkdtempSync(join(tmpdir(), "ferry-data-files-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const modeOf = (path: string) => statSync(path).mode & 0o7777;

/** Start a SQLite-backed broker under the given umask, store a retained message, stop it. */
async function runOnce(dataDir: string, writerThread: boolean, umask = 0o022): Promise<void> {
  const before = process.umask(umask);
  try {
    const b = await startBroker({ data_dir: dataDir, storage: { durability: "commit", writer_thread: writerThread } });
    try {
      const c = await connect(b.url);
      await c.client.publishAsync("files/retained", "kept", { qos: 1, retain: true });
      // The WAL exists while the broker runs. (-shm only without locking_mode EXCLUSIVE.)
      expect(existsSync(join(dataDir, "ferry.db-wal"))).toBe(true);
      expect(modeOf(join(dataDir, "ferry.db-wal"))).toBe(0o600);
      if (existsSync(join(dataDir, "ferry.db-shm"))) expect(modeOf(join(dataDir, "ferry.db-shm"))).toBe(0o600);
      await c.end();
    } finally {
      await b.stop();
    }
  } finally {
    process.umask(before);
  }
}

describe("data directory and database files", () => {
  for (const writerThread of [true, false]) {
    test(`under umask 022 the directory is created 0700 and ferry.db, -wal, -shm 0600 (writer_thread ${writerThread})`, async () => {
      const dataDir = join(root, `fresh-${writerThread}`, "data");
      await runOnce(dataDir, writerThread);
      expect(modeOf(dataDir)).toBe(0o700);
      expect(modeOf(join(dataDir, "ferry.db"))).toBe(0o600);
    });
  }

  test("an existing directory keeps its mode; database files left 0644 by an older version are tightened", async () => {
    const dataDir = join(root, "existing");
    mkdirSync(dataDir, { mode: 0o750 });
    chmodSync(dataDir, 0o750); // as systemd's StateDirectoryMode=0750 makes it
    await runOnce(dataDir, false);
    for (const f of ["ferry.db", "ferry.db-wal", "ferry.db-shm"]) {
      const p = join(dataDir, f);
      if (!existsSync(p)) writeFileSync(p, "");
      chmodSync(p, 0o644);
    }
    await runOnce(dataDir, true, 0o000);
    expect(modeOf(dataDir)).toBe(0o750);
    for (const f of ["ferry.db", "ferry.db-wal", "ferry.db-shm"]) {
      if (existsSync(join(dataDir, f))) expect(modeOf(join(dataDir, f))).toBe(0o600);
    }
  });
});
