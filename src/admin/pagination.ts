/**
 * Keyset pagination for list endpoints: items are sorted by a stable key and a page
 * ends with `next_cursor`, an opaque token for "after this key". `offset` is offered
 * too, for tools that prefer it. Lists are built from in-memory state per request.
 */
import { fromBase64, toBase64 } from "./encoding.ts";
import { badRequest } from "./errors.ts";

export interface PageQuery {
  limit: number;
  cursor?: string | undefined;
  offset?: number | undefined;
}

export interface Page<T> {
  data: T[];
  /** Pass as `cursor` for the next page; null on the last page. */
  next_cursor: string | null;
  /** Items matching the filters, over all pages. */
  total: number;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

export function encodeCursor(key: string): string {
  return toBase64(enc.encode(key)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function decodeCursor(cursor: string): string {
  const b64 = cursor.replace(/-/g, "+").replace(/_/g, "/");
  const bytes = fromBase64(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  if (!bytes) throw badRequest("cursor: not a cursor this API returned");
  return dec.decode(bytes);
}

/** One page of `items`, ordered by `key` (unique per item). */
export function paginate<T, V>(items: T[], key: (item: T) => string, q: PageQuery, view: (item: T) => V): Page<V> {
  if (q.cursor !== undefined && q.offset !== undefined) throw badRequest("query: use cursor or offset, not both");
  const keyed = items.map((item) => ({ k: key(item), item }));
  keyed.sort((a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : 0));
  let start = q.offset ?? 0;
  if (q.cursor !== undefined) {
    const after = decodeCursor(q.cursor);
    let lo = 0;
    let hi = keyed.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (keyed[mid]!.k <= after) lo = mid + 1;
      else hi = mid;
    }
    start = lo;
  }
  const slice = keyed.slice(start, start + q.limit);
  const more = start + slice.length < keyed.length;
  return {
    data: slice.map((e) => view(e.item)),
    next_cursor: more && slice.length > 0 ? encodeCursor(slice[slice.length - 1]!.k) : null,
    total: keyed.length,
  };
}
