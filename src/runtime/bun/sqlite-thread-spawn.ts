import type { StoreThread } from "../../store/sqlite/threaded-store.ts";

/**
 * Starts the storage thread: a Worker running `sqlite-thread.ts`.
 *
 * From source the worker is a file next to this one. A compiled executable carries it
 * only because `cross-build/build.ts` passes it as a second entry point, and there it is
 * found by that entry point's path as given to the build (relative to the project
 * root): the bundle flattens this module's own location, so a URL relative to
 * `import.meta.url` would point at nothing.
 */
export function spawnSqliteThread(): StoreThread {
  const compiled = import.meta.url.includes("$bunfs");
  const entry = compiled ? "./src/runtime/bun/sqlite-thread.ts" : new URL("./sqlite-thread.ts", import.meta.url).href;
  return new Worker(entry) as unknown as StoreThread;
}
