import type { FerryConfig } from "../../config/schema.ts";
import { MemoryStore } from "../../store/memory-store.ts";
import type { Store } from "../../store/store.ts";

/** Open the durable store under `data_dir`. Until the SQLite store lands, memory. */
export function openSqliteStore(_config: FerryConfig): Promise<Store> {
  return Promise.resolve(new MemoryStore());
}
