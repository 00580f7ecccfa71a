import {
  type DeliveryRecord,
  type Mutation,
  RETAINED_COPY_ORIGIN,
  type SessionState,
  type SubscriptionRecord,
} from "../store.ts";
import type { SqliteDatabase, SqliteStatement } from "./driver.ts";
import { MESSAGE_COLUMNS, messageParams, phaseCode } from "./message-codec.ts";

/**
 * The oldest unreferenced messages after an offset, with their approximate size: what
 * the size quota may drop. A range on the rowid plus one probe of deliveries_by_offset
 * per row (a test pins the plan).
 */
export const UNREFERENCED_SQL = `SELECT offset, received_at,
       length(topic) + length(payload) + coalesce(length(props), 0) + length(origin) AS size
  FROM messages m
 WHERE offset > ? AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.offset = m.offset)
 ORDER BY offset LIMIT ?`;

/**
 * The same in the range (after, upTo]: what age trimming may take, upTo being the
 * lowest cursor. The scan never reads past upTo, however long the log above it.
 */
export const UNREFERENCED_UP_TO_SQL = `SELECT offset, received_at
  FROM messages m
 WHERE offset > ? AND offset <= ? AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.offset = m.offset)
 ORDER BY offset LIMIT ?`;

/**
 * The statements run once or more per message. Each must be one keyed lookup (a test
 * pins their plans): a statement that searches a session's deliveries by anything less
 * than the whole key (client_id, offset) costs the length of its queue per message, and
 * draining a backlog becomes quadratic.
 */
export const PER_MESSAGE_SQL = {
  putDelivery:
    "REPLACE INTO deliveries (client_id, offset, qos, retain, sub_ids, packet_id, phase) VALUES (?, ?, ?, ?, ?, ?, ?)",
  markSent: "UPDATE deliveries SET packet_id = ?, phase = 1 WHERE client_id = ? AND offset = ?",
  markPubrel: "UPDATE deliveries SET packet_id = ?, phase = 2 WHERE client_id = ? AND offset = ?",
  deleteDeliveryByOffset: "DELETE FROM deliveries WHERE client_id = ? AND offset = ?",
  putQos2: "INSERT OR IGNORE INTO qos2_in (client_id, packet_id) VALUES (?, ?)",
  deleteQos2: "DELETE FROM qos2_in WHERE client_id = ? AND packet_id = ?",
  deleteMessage: "DELETE FROM messages WHERE offset = ?",
} as const;

/**
 * The statements a SUBSCRIBE or UNSUBSCRIBE runs: one keyed write of the subscription it
 * changes, whatever the number of the session's other subscriptions (a test pins their
 * plans, and the broker's test counts what one SUBSCRIBE hands the store).
 */
export const PER_SUBSCRIPTION_SQL = {
  putSubscription: `REPLACE INTO subscriptions
      (client_id, filter, qos, no_local, retain_as_published, retain_handling, subscription_id)
      VALUES (?, ?, ?, ?, ?, ?, ?)`,
  deleteSubscription: "DELETE FROM subscriptions WHERE client_id = ? AND filter = ?",
  /** Connect and disconnect write the session's own fields only. */
  putSession: "REPLACE INTO sessions (client_id, record) VALUES (?, ?)",
} as const;

/**
 * The bodies the broker reads back (queued messages as a session drains, retained ones as
 * a subscription matches them): one lookup by key per value of a JSON array bound as the
 * only parameter, so one prepared statement serves any number of keys.
 */
export const BODY_READ_SQL = {
  messagesAt: `SELECT ${MESSAGE_COLUMNS} FROM json_each(?) j JOIN messages m ON m.offset = j.value ORDER BY j.key`,
  retainedOf: `SELECT ${MESSAGE_COLUMNS} FROM json_each(?) j JOIN retained r ON r.topic = j.value ORDER BY j.key`,
} as const;

/** What applying mutations changed that the store mirrors in memory. */
export interface MutationEffect {
  /** Messages added to the log (a re-append of an existing offset adds none). */
  added: number;
  /** Highest offset appended, 0 if none. */
  maxOffset: number;
}

/**
 * Every statement the store runs on its hot paths, prepared once at open: SQLite
 * then parses no SQL while committing.
 */
export class Statements {
  readonly insertMessage: SqliteStatement;
  readonly replaceMessage: SqliteStatement;
  readonly putRetained: SqliteStatement;
  readonly deleteRetained: SqliteStatement;
  readonly putSession: SqliteStatement;
  readonly deleteSession: SqliteStatement;
  readonly putSubscription: SqliteStatement;
  readonly deleteSubscription: SqliteStatement;
  readonly deleteSessionSubscriptions: SqliteStatement;
  readonly retainedCopy: SqliteStatement;
  readonly deleteSessionDeliveries: SqliteStatement;
  readonly deleteSessionQos2: SqliteStatement;
  readonly putDelivery: SqliteStatement;
  readonly markSent: SqliteStatement;
  readonly markPubrel: SqliteStatement;
  readonly deleteDeliveryByOffset: SqliteStatement;
  readonly putQos2: SqliteStatement;
  readonly deleteQos2: SqliteStatement;
  readonly putCursor: SqliteStatement;
  readonly deleteCursor: SqliteStatement;
  readonly putCounter: SqliteStatement;

  readonly savepoint: SqliteStatement;
  readonly release: SqliteStatement;
  readonly rollbackTo: SqliteStatement;

  readonly readLog: SqliteStatement;
  readonly messagesAt: SqliteStatement;
  readonly retainedOf: SqliteStatement;
  readonly maxOffset: SqliteStatement;
  readonly raiseNextOffset: SqliteStatement;
  /** Oldest unreferenced messages with their approximate size in bytes. */
  readonly unreferenced: SqliteStatement;
  /** Oldest unreferenced messages in an offset range (after, upTo]: what age trimming may take. */
  readonly unreferencedUpTo: SqliteStatement;
  /** The lowest cursor, or NULL when there is none. */
  readonly minCursor: SqliteStatement;
  readonly deleteMessage: SqliteStatement;
  readonly pageCount: SqliteStatement;
  readonly freelistCount: SqliteStatement;

  constructor(db: SqliteDatabase) {
    const p = (sql: string) => db.prepare(sql);
    this.insertMessage = p(`INSERT OR IGNORE INTO messages (${MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`);
    this.replaceMessage = p(`REPLACE INTO messages (${MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`);
    this.putRetained = p(`REPLACE INTO retained (topic, ${MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`);
    this.deleteRetained = p("DELETE FROM retained WHERE topic = ?");
    this.putSession = p(PER_SUBSCRIPTION_SQL.putSession);
    this.deleteSession = p("DELETE FROM sessions WHERE client_id = ?");
    this.putSubscription = p(PER_SUBSCRIPTION_SQL.putSubscription);
    this.deleteSubscription = p(PER_SUBSCRIPTION_SQL.deleteSubscription);
    this.deleteSessionSubscriptions = p("DELETE FROM subscriptions WHERE client_id = ?");
    this.retainedCopy = p(
      `INSERT OR IGNORE INTO messages (${MESSAGE_COLUMNS})
         SELECT ?, topic, payload, qos, retain, received_at, expires_at, props, ? FROM retained WHERE topic = ?`,
    );
    this.deleteSessionDeliveries = p("DELETE FROM deliveries WHERE client_id = ?");
    this.deleteSessionQos2 = p("DELETE FROM qos2_in WHERE client_id = ?");
    this.putDelivery = p(PER_MESSAGE_SQL.putDelivery);
    this.markSent = p(PER_MESSAGE_SQL.markSent);
    this.markPubrel = p(PER_MESSAGE_SQL.markPubrel);
    this.deleteDeliveryByOffset = p(PER_MESSAGE_SQL.deleteDeliveryByOffset);
    this.putQos2 = p(PER_MESSAGE_SQL.putQos2);
    this.deleteQos2 = p(PER_MESSAGE_SQL.deleteQos2);
    this.putCursor = p("REPLACE INTO cursors (name, offset) VALUES (?, ?)");
    this.deleteCursor = p("DELETE FROM cursors WHERE name = ?");
    // Counters share the meta table (key 'counter:<name>'): no schema migration needed.
    this.putCounter = p("REPLACE INTO meta (key, value) VALUES ('counter:' || ?, ?)");

    this.savepoint = p("SAVEPOINT list");
    this.release = p("RELEASE list");
    this.rollbackTo = p("ROLLBACK TO list");

    this.readLog = p(`SELECT ${MESSAGE_COLUMNS} FROM messages WHERE offset >= ? ORDER BY offset LIMIT ?`);
    this.messagesAt = p(BODY_READ_SQL.messagesAt);
    this.retainedOf = p(BODY_READ_SQL.retainedOf);
    this.maxOffset = p("SELECT max(offset) AS max FROM messages");
    this.raiseNextOffset = p("UPDATE meta SET value = ? WHERE key = 'next_offset' AND value < ?");
    this.unreferenced = p(UNREFERENCED_SQL);
    this.unreferencedUpTo = p(UNREFERENCED_UP_TO_SQL);
    this.minCursor = p("SELECT min(offset) AS min FROM cursors");
    this.deleteMessage = p(PER_MESSAGE_SQL.deleteMessage);
    this.pageCount = p("PRAGMA page_count");
    this.freelistCount = p("PRAGMA freelist_count");
  }

  /** Applies one mutation; throws on failure (the caller rolls the list back). */
  apply(m: Mutation, effect: MutationEffect): void {
    switch (m.op) {
      case "append": {
        const params = messageParams(m.message);
        // INSERT OR IGNORE then REPLACE keeps the message count exact when an offset
        // is appended twice (the newer body wins, as in the memory store).
        if (this.insertMessage.run(...params).changes > 0) effect.added++;
        else this.replaceMessage.run(...params);
        if (m.message.offset > effect.maxOffset) effect.maxOffset = m.message.offset;
        return;
      }
      case "retain":
        if (m.message) this.putRetained.run(m.topic, ...messageParams(m.message));
        else this.deleteRetained.run(m.topic);
        return;
      case "session-put":
        this.putSession.run(m.session.clientId, sessionStateJson(m.session));
        this.deleteSessionSubscriptions.run(m.session.clientId);
        for (const sub of m.session.subscriptions) this.#putSubscription(m.session.clientId, sub);
        return;
      case "session-update":
        this.putSession.run(m.session.clientId, sessionStateJson(m.session));
        return;
      case "subscription-put":
        this.#putSubscription(m.clientId, m.subscription);
        return;
      case "subscription-delete":
        this.deleteSubscription.run(m.clientId, m.filter);
        return;
      case "session-delete":
        this.deleteSession.run(m.clientId);
        this.deleteSessionSubscriptions.run(m.clientId);
        this.deleteSessionDeliveries.run(m.clientId);
        this.deleteSessionQos2.run(m.clientId);
        return;
      case "delivery-put":
        this.#putDelivery(m.delivery);
        return;
      case "retained-copy":
        if (this.retainedCopy.run(m.offset, RETAINED_COPY_ORIGIN, m.topic).changes > 0) {
          effect.added++;
          if (m.offset > effect.maxOffset) effect.maxOffset = m.offset;
          this.#putDelivery(m.delivery);
        }
        return;
      case "delivery-sent":
        this.markSent.run(m.packetId, m.clientId, m.offset);
        return;
      case "delivery-pubrel":
        this.markPubrel.run(m.packetId, m.clientId, m.offset);
        return;
      case "delivery-delete-offset":
        this.deleteDeliveryByOffset.run(m.clientId, m.offset);
        return;
      case "qos2-in-put":
        this.putQos2.run(m.clientId, m.packetId);
        return;
      case "qos2-in-delete":
        this.deleteQos2.run(m.clientId, m.packetId);
        return;
      case "cursor-put":
        this.putCursor.run(m.name, m.offset);
        return;
      case "cursor-delete":
        this.deleteCursor.run(m.name);
        return;
      case "counter-put":
        this.putCounter.run(m.name, m.value);
        return;
    }
  }

  #putDelivery(d: DeliveryRecord): void {
    this.putDelivery.run(
      d.clientId,
      d.offset,
      d.qos,
      d.retain ? 1 : 0,
      d.subscriptionIds === undefined ? null : JSON.stringify(d.subscriptionIds),
      d.packetId ?? null,
      phaseCode(d.phase),
    );
  }

  #putSubscription(clientId: string, sub: SubscriptionRecord): void {
    this.putSubscription.run(
      clientId,
      sub.filter,
      sub.qos,
      sub.noLocal ? 1 : 0,
      sub.retainAsPublished ? 1 : 0,
      sub.retainHandling,
      sub.subscriptionId ?? null,
    );
  }
}

/** Mutations that run more than one statement, so a list of one still needs a savepoint. */
export function runsSeveralStatements(m: Mutation): boolean {
  return m.op === "session-delete" || m.op === "session-put" || m.op === "retained-copy";
}

/** The sessions row's record: the session's own fields; its subscriptions have their own rows. */
function sessionStateJson(session: SessionState): string {
  return JSON.stringify(session, (key, value: unknown) => (key === "subscriptions" ? undefined : value));
}
