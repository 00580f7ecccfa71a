/**
 * Child process for the kill -9 test: appends messages in commit mode, several in
 * flight at once, and prints each offset only after its commit() resolved — i.e.
 * after the moment the broker would have sent PUBACK.
 *
 * usage: bun test/store/crash-writer.ts <db path> <messages> [background]
 * (`background`: the WAL's fsync off the event loop, as with `storage.writer_thread: false`)
 */
import { sqliteStore } from "./sqlite-helpers.ts";

const [path, countArg, mode] = process.argv.slice(2);
if (!path || !countArg) throw new Error("usage: crash-writer.ts <db path> <messages> [background]");
// In the background mode, checkpoints every 64 KiB, so that the kill also lands among them.
const store = sqliteStore(path, mode === "background" ? { syncInBackground: true, checkpointBytes: 64 * 1024 } : {});
const { nextOffset } = await store.open();
const end = nextOffset + Number(countArg);
let next = nextOffset;

async function writer(): Promise<void> {
  while (next < end) {
    const offset = next++;
    await store.commit([
      {
        op: "append",
        message: {
          offset,
          topic: `crash/${offset % 7}`,
          payload: new TextEncoder().encode(`message ${offset}`),
          qos: 1,
          retain: false,
          receivedAt: Date.now(),
          origin: "crash-writer",
        },
      },
    ]);
    process.stdout.write(`${offset}\n`);
  }
}

await Promise.all(Array.from({ length: 8 }, writer));
await store.close();
