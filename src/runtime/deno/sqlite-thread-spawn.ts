import type { StoreThread } from "../../store/sqlite/threaded-store.ts";

/** Starts the storage thread: a module Worker running `sqlite-thread.ts`, with Ferry's own permissions. */
export function spawnSqliteThread(): StoreThread {
  const url = new URL("./sqlite-thread.ts", import.meta.url).href;
  return new Worker(url, { type: "module" }) as unknown as StoreThread;
}
