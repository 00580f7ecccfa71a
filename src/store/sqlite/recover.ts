import type { RecoveredTail, RecoverySink } from "../recovery-builder.ts";
import type { QoS, SessionRecord, SessionState, SubscriptionRecord } from "../store.ts";
import type { SqliteDatabase, SqlRow } from "./driver.ts";
import { MESSAGE_COLUMNS, rowToDelivery, rowToMessage } from "./message-codec.ts";

/** Everything `open()` hands back besides what went to the sink, plus the log size the store tracks. */
export interface RecoveredScalars extends RecoveredTail {
  messageCount: number;
}

/** Rows per query: recovery holds one page of rows at a time, never a whole table. */
const PAGE = 1000;

/**
 * Reads the durable state into `sink` page by page: the retained index (topics and sizes,
 * no bodies), then every session with its subscriptions, QoS 2 state and owed deliveries
 * in delivery order. Only deliveries in flight (bounded by the window) come with their
 * message; queued ones carry their size, and the broker reads their bodies when the
 * session drains (issue 13: loading every body made a start with 100,000 retained and
 * 100,000 queued take 476 MB).
 */
export function recover(db: SqliteDatabase, sink: RecoverySink): RecoveredScalars {
  let highest = Number(db.prepare("SELECT value FROM meta WHERE key = 'next_offset'").get()?.value ?? 1) - 1;
  const maxLogged = db.prepare("SELECT max(offset) AS max, count(*) AS count FROM messages").get();
  highest = Math.max(highest, Number(maxLogged?.max ?? 0));
  const messageCount = Number(maxLogged?.count ?? 0);

  // In topic order (the primary key's index), which is the order the broker's index keeps
  // them in; length(payload) reads a BLOB's size from the record header, not its pages.
  const retainedPage = db.prepare(
    `SELECT topic, offset, qos, expires_at, length(payload) AS bytes
       FROM retained WHERE topic > ? ORDER BY topic LIMIT ${PAGE}`,
  );
  for (let after = "";;) {
    const rows = retainedPage.all(after);
    for (const row of rows) {
      const expiresAt = row.expires_at === null || row.expires_at === undefined ? undefined : Number(row.expires_at);
      highest = Math.max(highest, Number(row.offset));
      sink.retained(String(row.topic), Number(row.qos) as QoS, Number(row.bytes), expiresAt);
    }
    if (rows.length < PAGE) break;
    after = String(rows.at(-1)!.topic);
  }

  const sessionPage = db.prepare(
    `SELECT rowid, client_id, record FROM sessions WHERE rowid > ? ORDER BY rowid LIMIT ${PAGE}`,
  );
  const subscriptionsOf = db.prepare(
    `SELECT filter, qos, no_local, retain_as_published, retain_handling, subscription_id
       FROM subscriptions WHERE client_id = ?`,
  );
  const qos2Of = db.prepare("SELECT packet_id FROM qos2_in WHERE client_id = ? ORDER BY packet_id");
  // Only what a queue entry needs; a delivery whose message is gone is unreachable and skipped.
  const deliveryPage = db.prepare(
    `SELECT d.client_id, d.offset, d.qos AS d_qos, d.retain AS d_retain, d.sub_ids, d.packet_id, d.phase,
            length(m.payload) AS bytes
       FROM deliveries d JOIN messages m ON m.offset = d.offset
      WHERE d.client_id = ? AND d.offset > ? ORDER BY d.offset LIMIT ${PAGE}`,
  );
  const messageAt = db.prepare(`SELECT ${MESSAGE_COLUMNS} FROM messages WHERE offset = ?`);

  for (let after = 0;;) {
    const rows = sessionPage.all(after);
    for (const row of rows) {
      const clientId = String(row.client_id);
      const state = JSON.parse(String(row.record)) as SessionState & { subscriptions?: unknown };
      // Records written before schema 4 carried their subscriptions; the migration moved them out.
      delete state.subscriptions;
      const record: SessionRecord = { ...state, subscriptions: subscriptionsOf.all(clientId).map(rowToSubscription) };
      sink.session(record, qos2Of.all(clientId).map((r) => Number(r.packet_id)));
      for (let from = 0;;) {
        const page = deliveryPage.all(clientId, from);
        for (const d of page) {
          const delivery = rowToDelivery(d);
          const inFlight = delivery.phase !== "queued" && delivery.packetId !== undefined;
          const body = inFlight ? messageAt.get(delivery.offset) : undefined;
          sink.delivery(delivery, Number(d.bytes), body ? rowToMessage(body) : undefined);
        }
        if (page.length < PAGE) break;
        from = Number(page.at(-1)!.offset);
      }
    }
    if (rows.length < PAGE) break;
    after = Number(rows.at(-1)!.rowid);
  }

  // fromEntries defines own properties, so a reader named "__proto__" is just a name.
  const cursors: Record<string, number> = Object.fromEntries(
    db.prepare("SELECT name, offset FROM cursors ORDER BY name").all().map((
      row,
    ) => [String(row.name), Number(row.offset)]),
  );

  const counters: Record<string, number> = Object.fromEntries(
    db.prepare("SELECT key, value FROM meta WHERE key LIKE 'counter:%' ORDER BY key").all().map((
      row,
    ) => [String(row.key).slice("counter:".length), Number(row.value)]),
  );

  return { nextOffset: highest + 1, cursors, counters, messageCount };
}

function rowToSubscription(row: SqlRow): SubscriptionRecord {
  const sub: SubscriptionRecord = {
    filter: String(row.filter),
    qos: Number(row.qos) as QoS,
    noLocal: Number(row.no_local) === 1,
    retainAsPublished: Number(row.retain_as_published) === 1,
    retainHandling: Number(row.retain_handling) as 0 | 1 | 2,
  };
  if (row.subscription_id !== null && row.subscription_id !== undefined) {
    sub.subscriptionId = Number(row.subscription_id);
  }
  return sub;
}
