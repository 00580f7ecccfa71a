/**
 * Entry point of the storage thread on Bun: `ThreadedSqliteStore` starts it as a Worker.
 * `cross-build/build.ts` lists it as a second entry point, which is how a compiled
 * executable carries a worker.
 */
import { serveSqliteStore } from "../../store/sqlite/store-thread.ts";
import type { ThreadPort } from "../../store/sqlite/thread-protocol.ts";
import { bunSqliteDriver } from "./sqlite-driver.ts";

// A compiled executable may start this thread, as the main one, with the JIT reluctant
// (`--compile-jit-policy`): the storage thread's statements run hot from the start.
Bun.unsafe.setJITPolicy(1);

// In a worker, the global scope is the port to the thread that started it.
serveSqliteStore(globalThis as unknown as ThreadPort, bunSqliteDriver);
