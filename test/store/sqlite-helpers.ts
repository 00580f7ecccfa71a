import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bunSqliteDriver } from "../../src/runtime/bun/sqlite-driver.ts";
import type { MakeStore, MakeStoreOptions } from "../../src/store/contract.ts";
import { SqliteStore, type SqliteStoreOptions } from "../../src/store/sqlite/sqlite-store.ts";
import type { Store } from "../../src/store/store.ts";

/** A temporary directory removed by the returned function. */
export function tempDir(prefix = "ferry-store-"): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export function sqliteStore(path: string, options: Partial<SqliteStoreOptions> = {}): SqliteStore {
  return new SqliteStore(bunSqliteDriver, { path, durability: "commit", ...options });
}

/** What the contract suite asks of a file-backed store: a quota, and maybe age trimming. */
export type FileStoreOptions = { maxBytes?: number } & Partial<NonNullable<MakeStoreOptions["ageTrimming"]>>;

/**
 * The contract suite's store factory for a file-backed store: `open(path, options)` makes
 * one on a fresh temporary file; reopen closes it and makes another on the same file.
 * A tight retention is a 256 KiB quota.
 */
export function fileStoreFactory(
  open: (path: string, options: FileStoreOptions) => Store,
): MakeStore {
  return (options) => {
    const { dir, remove } = tempDir();
    const path = join(dir, "ferry.db");
    const maxBytes = options?.tightRetention ? 256 * 1024 : undefined;
    const make = () => open(path, { maxBytes, ...options?.ageTrimming });
    let current = make();
    return Promise.resolve({
      store: current,
      reopen: async () => {
        await current.close();
        current = make();
        return current;
      },
      cleanup: async () => {
        await current.close();
        remove();
      },
    });
  };
}
