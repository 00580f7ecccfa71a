import type { Message, Recovered, RecoveredSession, SessionRecord } from "../store.ts";
import type { SqliteDatabase } from "./driver.ts";
import { MESSAGE_COLUMNS, rowToDelivery, rowToMessage } from "./message-codec.ts";

/** Everything `open()` hands back, plus the log size the store tracks from then on. */
export interface RecoveredState extends Recovered {
  messageCount: number;
}

/**
 * Reads the durable state in a handful of ordered scans. Deliveries come back in
 * primary-key order (client_id, offset), which is delivery order, so nothing sorts;
 * a message owed to several sessions is decoded once and shared.
 */
export function recover(db: SqliteDatabase): RecoveredState {
  let highest = Number(db.prepare("SELECT value FROM meta WHERE key = 'next_offset'").get()?.value ?? 1) - 1;
  const maxLogged = db.prepare("SELECT max(offset) AS max, count(*) AS count FROM messages").get();
  highest = Math.max(highest, Number(maxLogged?.max ?? 0));
  const messageCount = Number(maxLogged?.count ?? 0);

  const retained = db
    .prepare(`SELECT ${MESSAGE_COLUMNS} FROM retained ORDER BY topic`)
    .all()
    .map(rowToMessage);
  for (const message of retained) highest = Math.max(highest, message.offset);

  const sessions = new Map<string, RecoveredSession>();
  for (const row of db.prepare("SELECT record FROM sessions ORDER BY client_id").all()) {
    const session = JSON.parse(String(row.record)) as SessionRecord;
    sessions.set(session.clientId, { session, deliveries: [], qos2Incoming: [] });
  }

  const bodies = new Map<number, Message>();
  const deliveries = db.prepare(
    `SELECT d.client_id, d.offset, d.qos AS d_qos, d.retain AS d_retain, d.sub_ids, d.packet_id, d.phase,
            m.topic, m.payload, m.qos, m.retain, m.received_at, m.expires_at, m.props, m.origin
       FROM deliveries d JOIN messages m ON m.offset = d.offset
      ORDER BY d.client_id, d.offset`,
  );
  for (const row of deliveries.all()) {
    const owner = sessions.get(String(row.client_id));
    if (!owner) continue; // a queue without a session is unreachable; session-delete removes both
    const delivery = rowToDelivery(row);
    let message = bodies.get(delivery.offset);
    if (!message) bodies.set(delivery.offset, message = rowToMessage(row));
    owner.deliveries.push({ delivery, message });
  }

  for (const row of db.prepare("SELECT client_id, packet_id FROM qos2_in ORDER BY client_id, packet_id").all()) {
    sessions.get(String(row.client_id))?.qos2Incoming.push(Number(row.packet_id));
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

  return { nextOffset: highest + 1, retained, sessions: [...sessions.values()], cursors, counters, messageCount };
}
