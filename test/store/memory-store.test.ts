import { afterEach, describe, expect, test } from "bun:test";
import { runStoreContract } from "../../src/store/contract.ts";
import { MemoryStore } from "../../src/store/memory-store.ts";

runStoreContract(
  "memory",
  (options) => {
    // State lives in the instance, so "reopening" is opening the same one again.
    const store = new MemoryStore(options?.tightRetention ? 100 : undefined);
    return Promise.resolve({ store, reopen: () => Promise.resolve(store), cleanup: () => store.close() });
  },
  { describe, test, expect, afterEach },
);
