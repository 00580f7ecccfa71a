import type { FerryConfig } from "../../config/schema.ts";
import type { Logger } from "../../core/logger.ts";
import type { Store } from "../../store/store.ts";
import { openSqliteStoreWith } from "../open-store.ts";
import { bunSqliteDriver } from "./sqlite-driver.ts";

export { databasePath } from "../open-store.ts";

/** The durable store for `commit` and `periodic` durability, under `data_dir`, over bun:sqlite. */
export function openSqliteStore(config: FerryConfig, logger: Logger): Store {
  return openSqliteStoreWith(bunSqliteDriver, config, logger);
}
