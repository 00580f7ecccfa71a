import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { FerryConfig } from "../config/schema.ts";
import type { Logger } from "../core/logger.ts";
import { MemoryStore } from "../store/memory-store.ts";
import { SqliteStore, type SqliteStoreOptions } from "../store/sqlite/sqlite-store.ts";
import type { SqliteDriver } from "../store/sqlite/driver.ts";
import { type StoreThread, ThreadedSqliteStore } from "../store/sqlite/threaded-store.ts";
import type { Store } from "../store/store.ts";

/** What a runtime offers for SQLite: a driver, and maybe a thread to run it on. */
export interface SqliteAdapters {
  readonly sqlite: SqliteDriver;
  readonly spawnSqliteThread?: () => StoreThread;
}

/** The database file under `data_dir`. */
export function databasePath(config: FerryConfig): string {
  return join(config.data_dir, "ferry.db");
}

/**
 * The durable store for `commit` and `periodic` durability under `data_dir`: on the
 * runtime's storage thread when it has one and `storage.writer_thread` is on, else on
 * the event loop. (node:fs and node:path: Bun and Deno both provide them.)
 */
export function openSqliteStoreWith(adapters: SqliteAdapters, config: FerryConfig, logger: Logger): Store {
  mkdirSync(config.data_dir, { recursive: true });
  const s = config.storage;
  const options: SqliteStoreOptions = {
    path: databasePath(config),
    durability: s.durability === "periodic" ? "periodic" : "commit",
    flushIntervalMs: s.flush_interval_ms,
    ...(s.max_bytes > 0 ? { maxBytes: s.max_bytes } : {}),
    ...(s.message_ttl_seconds > 0 ? { messageTtlMs: s.message_ttl_seconds * 1000 } : {}),
    onError: (err) => logger.error(`storage flush failed: ${err.message}`),
  };
  if (s.writer_thread && adapters.spawnSqliteThread) {
    return new ThreadedSqliteStore(adapters.spawnSqliteThread(), {
      ...options,
      onFatal: (err) => logger.error(`${err.message}; nothing can be stored until Ferry restarts`),
    });
  }
  return new SqliteStore(adapters.sqlite, options);
}

/** `storage.durability` decides: memory, or SQLite through the runtime's adapters. */
export function openStoreWith(adapters: SqliteAdapters, config: FerryConfig, logger: Logger): Store {
  return config.storage.durability === "memory" ? new MemoryStore() : openSqliteStoreWith(adapters, config, logger);
}
