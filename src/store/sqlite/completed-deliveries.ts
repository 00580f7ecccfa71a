import type { Mutation } from "../store.ts";

/**
 * The writes of a transaction's batch that a later deletion in the same batch undoes: a
 * delivery's record, its "sent" mark and its "pubrel" phase, when the same batch also deletes
 * that delivery (it completed before the batch was written). Skipping them leaves the
 * database exactly as applying them would: the deletion still runs, so a row written by an
 * earlier transaction is still removed, and one that was only ever in this batch is never
 * written.
 *
 * Why (issue 14, flash wear): a persistent subscriber that acknowledges within the commit
 * window made every transaction insert its deliveries and delete them again, and SQLite
 * writes a page it changed even when the change cancels out: the deliveries table's leaf and
 * its index's leaf, two pages of WAL per commit, for nothing.
 *
 * Safe with the batch's per-list outcomes: a deletion cannot fail on its own (a DELETE by key
 * hits no constraint; an I/O error or a full disk fails the whole transaction, and with it
 * the skipped writes' lists too); a list refused as a whole (over quota) writes nothing of
 * its own anyway, and the deletion of a row that is not there changes nothing. Writes after
 * the deletion (the same delivery queued again) are kept.
 *
 * A "sent" mark followed in the batch by the same delivery's "pubrel" phase is skipped too:
 * the phase update records the packet id as well, so it leaves the row as both would (issue
 * 19: a QoS 2 drain hands a window's "sent" marks over with the PUBRECs' commits). An UPDATE
 * by key cannot fail on its own either.
 *
 * Returns undefined when the batch deletes or releases no delivery (most batches without
 * persistent sessions): no set is made.
 */
export function undoneInBatch(
  lists: readonly { readonly mutations: readonly Mutation[] }[],
): Set<Mutation> | undefined {
  /** Offsets deleted later in the batch, by client (no key string made per mutation). */
  let deleted: Map<string, Set<number>> | undefined;
  /** Offsets whose "pubrel" phase is written later in the batch, by client. */
  let released: Map<string, Set<number>> | undefined;
  let undone: Set<Mutation> | undefined;
  // Backwards, so that a write is checked against the deletions that follow it only.
  for (let l = lists.length - 1; l >= 0; l--) {
    const mutations = lists[l]!.mutations;
    for (let i = mutations.length - 1; i >= 0; i--) {
      const m = mutations[i]!;
      switch (m.op) {
        case "delivery-delete-offset":
          deleted = addOffset(deleted, m.clientId, m.offset);
          break;
        case "delivery-put":
          if (deleted?.get(m.delivery.clientId)?.has(m.delivery.offset)) (undone ??= new Set()).add(m);
          break;
        case "delivery-pubrel":
          if (deleted?.get(m.clientId)?.has(m.offset)) (undone ??= new Set()).add(m);
          else released = addOffset(released, m.clientId, m.offset);
          break;
        case "delivery-sent":
          if (deleted?.get(m.clientId)?.has(m.offset) || released?.get(m.clientId)?.has(m.offset)) {
            (undone ??= new Set()).add(m);
          }
          break;
      }
    }
  }
  return undone;
}

function addOffset(
  byClient: Map<string, Set<number>> | undefined,
  clientId: string,
  offset: number,
): Map<string, Set<number>> {
  const map = byClient ?? new Map<string, Set<number>>();
  const offsets = map.get(clientId);
  if (offsets) offsets.add(offset);
  else map.set(clientId, new Set([offset]));
  return map;
}
