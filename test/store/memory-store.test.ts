import { afterEach, describe, expect, test } from "bun:test";
import { runStoreContract } from "../../src/store/contract.ts";
import { MemoryStore } from "../../src/store/memory-store.ts";

runStoreContract(
  "memory",
  async (options) => {
    // State lives in the instance, so "reopening" is opening the same one again.
    const store = new MemoryStore(options?.tightRetention ? 100 : undefined);
    return { store, reopen: async () => store, cleanup: () => store.close() };
  },
  { describe, test, expect, afterEach },
);
