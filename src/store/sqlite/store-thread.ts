import { encodeMessagePage } from "../message-page-codec.ts";
import { decodeMutationLists } from "../mutation-codec.ts";
import { RecoveryBuilder } from "../recovery-builder.ts";
import type { SqliteDriver } from "./driver.ts";
import { SqliteStore } from "./sqlite-store.ts";
import { type FromStoreThread, type ThreadPort, type ToStoreThread, toWireError } from "./thread-protocol.ts";

/**
 * The storage thread's side: a plain SqliteStore driven by messages from the event
 * loop. The event loop keeps one batch in flight and gathers what arrives meanwhile into
 * the next (ThreadedSqliteStore), so each batch here is one transaction, applied as it
 * arrives, and group commit grows with load while the event loop never waits for the disk.
 *
 * Requests are handled in arrival order, so a read posted after a commit sees what
 * that commit wrote once it has settled.
 */
export function serveSqliteStore(port: ThreadPort, driver: SqliteDriver): void {
  let store: SqliteStore | undefined;
  const post = (message: FromStoreThread) => port.postMessage(message);

  port.onmessage = (event: MessageEvent) => {
    const request = event.data as ToStoreThread;
    switch (request.t) {
      case "open": {
        const opened = new SqliteStore(driver, {
          ...request.options,
          onError: (error) => post({ t: "list-error", error: toWireError(error) }),
          // Commit mode answers every list with fresh stats; periodic flushes answer nobody,
          // and the event loop decides refusals from what they report.
          ...(request.options.durability === "periodic"
            ? {
              onFlush: (failure?: Error) =>
                post({ t: "flushed", ...(failure ? { error: toWireError(failure) } : {}), stats: opened.stats() }),
            }
            : {}),
        });
        store = opened;
        // Built in columns as it is read; their buffers are transferred, not copied.
        const builder = new RecoveryBuilder();
        opened.openInto(builder).then(
          (tail) => {
            const recovered = builder.finish(tail);
            port.postMessage(
              { t: "opened", recovered, stats: opened.stats() } satisfies FromStoreThread,
              builder.transferables(),
            );
          },
          (error: unknown) => post({ t: "open-failed", error: toWireError(error) }),
        );
        return;
      }
      case "commit": {
        const s = store!;
        const { seq, encoded } = request;
        // Commit mode keeps nothing of a batch once it is answered, so its buffer goes back
        // to the event loop for the next batch. Periodic mode keeps the lists (payloads are
        // views into the buffer) until its flush.
        const giveBack = s.durability === "commit";
        s.commitLists(decodeMutationLists(encoded), (outcomes) => {
          const reply: FromStoreThread = {
            t: "committed",
            seq,
            outcomes: outcomes ? outcomes.map((o) => (o ? toWireError(o) : null)) : null,
            stats: s.stats(),
            ...(giveBack ? { buffer: encoded.buffer } : {}),
          };
          port.postMessage(reply, giveBack ? [encoded.buffer] : undefined);
        });
        return;
      }
      case "read":
      case "read-messages":
      case "read-retained": {
        const s = store!;
        const reading = request.t === "read"
          ? s.readLog(request.from, request.limit)
          : request.t === "read-messages"
          ? s.readMessages(request.offsets)
          : s.readRetained(request.topics);
        reading.then(
          (messages) => {
            // One transferred buffer (message-page-codec.ts): a page of the log for the uplink is
            // up to a thousand messages, and decoding it is cheaper than a structured clone.
            const page = encodeMessagePage(messages);
            port.postMessage({ t: "read", id: request.id, page } satisfies FromStoreThread, [page.buffer]);
          },
          (error: unknown) => post({ t: "read-failed", id: request.id, error: toWireError(error) }),
        );
        return;
      }
      case "close": {
        // Every commit was answered when it was handled (commit mode) or queued (periodic);
        // close() flushes what periodic mode still holds.
        (store?.close() ?? Promise.resolve()).then(
          () => post({ t: "closed" }),
          (error: unknown) => post({ t: "closed", error: toWireError(error) }),
        );
        return;
      }
    }
  };
}
