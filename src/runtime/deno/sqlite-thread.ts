/** Entry point of the storage thread on Deno: `ThreadedSqliteStore` starts it as a module Worker. */
import { serveSqliteStore } from "../../store/sqlite/store-thread.ts";
import type { ThreadPort } from "../../store/sqlite/thread-protocol.ts";
import { nodeSqliteDriver } from "./sqlite-driver.ts";

// In a worker, the global scope is the port to the thread that started it.
serveSqliteStore(globalThis as unknown as ThreadPort, nodeSqliteDriver);
