import { chmodSync, closeSync, existsSync, fchmodSync, fstatSync, mkdirSync, openSync } from "node:fs";
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

/** The data directory, when Ferry creates it: only the broker's user may enter it. */
export const DATA_DIR_MODE = 0o700;
/** ferry.db and its -wal and -shm files hold every message and session: the broker's user only. */
export const DATABASE_MODE = 0o600;

/**
 * Create `dir` 0700 if it does not exist, and make the database file and its -wal/-shm
 * companions 0600 whatever the umask (as Mosquitto creates its persistence file). The
 * database file is created here, before SQLite opens it, because SQLite gives the -wal
 * and -shm files it creates the database file's mode. An existing directory is left as it
 * is (systemd's StateDirectoryMode or the operator decided); existing files are tightened.
 */
export function prepareDataFiles(dir: string, dbPath: string, logger: Logger): void {
  if (!existsSync(dir)) {
    mkdirSync(dir, { recursive: true, mode: DATA_DIR_MODE });
    chmodSync(dir, DATA_DIR_MODE); // mkdir's mode is filtered by the umask
  }
  const fd = openSync(dbPath, "a", DATABASE_MODE);
  try {
    const was = fstatSync(fd).mode & 0o7777;
    if (was !== DATABASE_MODE) {
      fchmodSync(fd, DATABASE_MODE);
      if (was & 0o077 && fstatSync(fd).size > 0) {
        logger.info(`storage: ${dbPath} was mode 0${was.toString(8)}; now 0600 (only Ferry's user may read it)`);
      }
    }
  } finally {
    closeSync(fd);
  }
  for (const companion of [`${dbPath}-wal`, `${dbPath}-shm`]) {
    if (existsSync(companion)) chmodSync(companion, DATABASE_MODE);
  }
}

/**
 * The durable store for `commit` and `periodic` durability under `data_dir`: on the
 * runtime's storage thread when it has one and `storage.writer_thread` is on, else on
 * the event loop. (node:fs and node:path: Bun and Deno both provide them.)
 */
export function openSqliteStoreWith(adapters: SqliteAdapters, config: FerryConfig, logger: Logger): Store {
  prepareDataFiles(config.data_dir, databasePath(config), logger);
  const s = config.storage;
  const options: SqliteStoreOptions = {
    path: databasePath(config),
    durability: s.durability === "periodic" ? "periodic" : "commit",
    flushIntervalMs: s.flush_interval_ms,
    commitWindowMs: s.commit_window_ms,
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
  // On the event loop, the WAL's fsync goes to the runtime's thread pool, so no socket waits for the disk.
  return new SqliteStore(adapters.sqlite, { ...options, syncInBackground: true });
}

/** `storage.durability` decides: memory, or SQLite through the runtime's adapters. */
export function openStoreWith(adapters: SqliteAdapters, config: FerryConfig, logger: Logger): Store {
  return config.storage.durability === "memory" ? new MemoryStore() : openSqliteStoreWith(adapters, config, logger);
}
