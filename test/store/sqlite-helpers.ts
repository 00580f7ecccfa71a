import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bunSqliteDriver } from "../../src/runtime/bun/sqlite-driver.ts";
import { SqliteStore, type SqliteStoreOptions } from "../../src/store/sqlite/sqlite-store.ts";

/** A temporary directory removed by the returned function. */
export function tempDir(prefix = "ferry-store-"): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export function sqliteStore(path: string, options: Partial<SqliteStoreOptions> = {}): SqliteStore {
  return new SqliteStore(bunSqliteDriver, { path, durability: "commit", ...options });
}
