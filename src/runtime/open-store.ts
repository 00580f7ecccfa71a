import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { FerryConfig } from "../config/schema.ts";
import type { Logger } from "../core/logger.ts";
import { MemoryStore } from "../store/memory-store.ts";
import { SqliteStore } from "../store/sqlite/sqlite-store.ts";
import type { SqliteDriver } from "../store/sqlite/driver.ts";
import type { Store } from "../store/store.ts";

/** The database file under `data_dir`. */
export function databasePath(config: FerryConfig): string {
  return join(config.data_dir, "ferry.db");
}

/**
 * The durable store for `commit` and `periodic` durability under `data_dir`, over the
 * runtime's SQLite driver. (node:fs and node:path: Bun and Deno both provide them.)
 */
export function openSqliteStoreWith(
  driver: SqliteDriver,
  config: FerryConfig,
  logger: Logger,
): Store {
  mkdirSync(config.data_dir, { recursive: true });
  const s = config.storage;
  return new SqliteStore(driver, {
    path: databasePath(config),
    durability: s.durability === "periodic" ? "periodic" : "commit",
    flushIntervalMs: s.flush_interval_ms,
    ...(s.max_bytes > 0 ? { maxBytes: s.max_bytes } : {}),
    ...(s.message_ttl_seconds > 0 ? { messageTtlMs: s.message_ttl_seconds * 1000 } : {}),
    onError: (err) => logger.error(`storage flush failed: ${err.message}`),
  });
}

/** `storage.durability` decides: memory, or SQLite through `driver`. */
export function openStoreWith(driver: SqliteDriver, config: FerryConfig, logger: Logger): Store {
  return config.storage.durability === "memory" ? new MemoryStore() : openSqliteStoreWith(driver, config, logger);
}
